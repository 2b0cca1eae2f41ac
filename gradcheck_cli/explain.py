"""`gradcheck explain`: the derivation of one sample's softmax, Jacobian, loss and gradient, with its numbers."""

from __future__ import annotations

from typing import Any

import click

from gradcheck_cli import options, terminal

# Up to this many classes the derivation lists every Jacobian entry; beyond, the first rows and the diagonal.
FULL_JACOBIAN_CLASSES = 6


def _n(value: float) -> str:
    """Three significant digits, trailing zeros kept (0.150, not 0.15), with a real minus sign."""
    return f"{value:#.3g}".rstrip(".").replace("-", "\u2212")


def derivation(logits: Any, targets: Any, row: int) -> list[str]:
    """The lines of the derivation for one row; classes are numbered from 1, as in the sources."""
    import numpy as np

    from gradcheck_cli import core

    z = logits[row]
    y = targets[row]
    classes = len(z)
    m = float(z.max())
    exps = np.exp(z - m)
    total = float(exps.sum())
    s = core.softmax(z[None, :])[0]
    jacobian = core.softmax_jacobian(s[None, :], core.softmax_complement(z[None, :]))[0]
    gradient = s * y.sum() - y
    k = range(classes)
    lines = [
        f"Sample {row} (classes numbered 1..{classes}; class k is index k-1 of the input)",
        "z = (" + ", ".join(_n(v) for v in z) + ")",
        "",
        "1. Softmax: s_i = e^{z_i} / Σ_l e^{z_l}",
        f"   computed as e^{{z_i − m}} / Σ_l e^{{z_l − m}} with m = max z = {_n(m)} (the same value, no overflow)",
        "   Σ_l e^{z_l − m} = " + " + ".join(_n(v) for v in exps) + f" = {_n(total)}",
    ]
    lines += [f"   s_{i + 1} = {_n(exps[i])} / {_n(total)} = {_n(s[i])}" for i in k]
    lines += [f"   check: the s_i sum to {_n(float(s.sum()))}", "", "2. Jacobian: ∂s_i/∂z_j = s_i(δ_ij − s_j)"]
    shown = [(i, j) for i in k for j in k if classes <= FULL_JACOBIAN_CLASSES or i < 2 or i == j]
    for i, j in shown:
        if i == j:
            lines.append(f"   ∂s_{i + 1}/∂z_{j + 1} = s_{i + 1}(1 − s_{i + 1}) = {_n(s[i])}×{_n(1 - s[i])}"
                         f" = {_n(jacobian[i, j])}")
        else:
            lines.append(f"   ∂s_{i + 1}/∂z_{j + 1} = −s_{i + 1}·s_{j + 1} = −{_n(s[i])}×{_n(s[j])}"
                         f" = {_n(jacobian[i, j])}")
    if len(shown) < classes * classes:
        lines.append(f"   ... rows 3 to {classes} show only their diagonal; `gradcheck check -f json` has every entry")
    lines += ["   (rows and columns of J sum to 0; J is symmetric)", "", "3. Cross-entropy: L = −Σ_i y_i log s_i"]
    lines.append("   y = (" + ", ".join(_n(v) for v in y) + ")")
    terms = [f"{_n(y[i])}·log {_n(s[i])}" for i in k if y[i] != 0]
    loss = float(-(y * core.log_softmax(z[None, :])[0]).sum())
    lines += [f"   L = −({' + '.join(terms)}) = {_n(loss)}", ""]
    if np.isclose(y.sum(), 1.0):
        lines.append("4. Gradient: ∂L/∂z_j = s_j·Σ_i y_i − y_j = s_j − y_j (the y_i sum to 1)")
    else:
        lines.append(f"4. Gradient: ∂L/∂z_j = s_j·Σ_i y_i − y_j (here Σ_i y_i = {_n(float(y.sum()))})")
    lines += [f"   ∂L/∂z_{j + 1} = {_n(s[j])} − {_n(y[j])} = {_n(gradient[j])}" for j in k]
    lines.append("   (for a batch with reduction mean, each row's gradient is divided by N)")
    return lines


@click.command()
@options.input_options
@click.option("--row", type=click.IntRange(min=0), default=0, show_default=True, help="Which sample (0-based).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Colour; auto means only on a terminal.")
def explain(row: int, color: str, **inputs: Any) -> int:
    """Print the derivation of one sample's softmax, Jacobian, loss and gradient with its own numbers.

    Example:

        gradcheck explain --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.inputs import load_batch

    batch = load_batch(**inputs)
    if row >= batch.logits.shape[0]:
        raise InputError(f"--row {row}: the input has {batch.logits.shape[0]} rows (0 to {batch.logits.shape[0] - 1})")
    console = terminal.make_console(color)
    lines = derivation(batch.logits, batch.targets, row)

    def emit() -> None:
        for line in lines:
            console.print(line, soft_wrap=True, style="bold" if line[:2] in {f"{n}." for n in range(1, 5)} else None)

    options.write_stdout(emit)
    return 0
