"""`gradcheck explain`: the derivation of one sample's softmax, Jacobian, loss and gradient, with its numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from gradcheck_cli import options, terminal
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    import numpy as np

# Up to this many classes the derivation lists every Jacobian entry; beyond, the first rows and the diagonal.
FULL_JACOBIAN_CLASSES = 6


def derivation(
    logits: np.ndarray, row: int, explain_loss: Callable[[np.ndarray, np.ndarray, int], list[str]]
) -> list[str]:
    """The lines of the derivation for one row; classes are numbered from 1, as in the sources.

    Softmax and Jacobian are the same for every loss; `explain_loss(z, s, row)` writes the loss's own part.
    """
    import numpy as np

    from gradcheck_cli.numerics import softmax as core
    from gradcheck_cli.numerics.losses.base import shown as _n

    z = logits[row]
    classes = len(z)
    m = float(z.max())
    exps = np.exp(z - m)
    total = float(exps.sum())
    s = core.softmax(z[None, :])[0]
    jacobian = core.softmax_jacobian(s[None, :], core.softmax_complement(z[None, :]))[0]
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
    lines += ["   (rows and columns of J sum to 0; J is symmetric)", ""]
    return lines + explain_loss(z, s, row)


@click.command()
@options.input_options
@options.loss_options
@click.option("--row", type=click.IntRange(min=0), default=0, show_default=True, help="Which sample (0-based).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Colour; auto means only on a terminal.")
def explain(row: int, color: str, loss: str, weights: tuple[float, ...] | None, label_smoothing: float,
            ignore_index: int | None, temperature: float, **inputs: Any) -> int:
    """Print the derivation of one sample's softmax, Jacobian, loss and gradient with its own numbers.

    Example:

        gradcheck explain --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    import numpy as np

    from gradcheck_cli import pipeline
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.inputs.gather import InputRequest
    from gradcheck_cli.numerics.losses import loss_kind

    settings = Settings(loss=loss, weights=weights, label_smoothing=label_smoothing, ignore_index=ignore_index,
                        temperature=temperature)
    batch = pipeline.load_whole(InputRequest(**inputs), settings)
    if row >= batch.rows:
        raise InputError(f"--row {row}: the input has {batch.rows} rows (0 to {batch.rows - 1})")
    kind = loss_kind(loss)
    built = kind.build(batch, settings._replace(temperature=1.0), np.dtype(np.float64))
    scaled = batch.logits / temperature

    def explain_loss(z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
        return kind.explain(built, z, s, row)

    lines = derivation(scaled, row, explain_loss)
    if temperature != 1.0:
        lines.insert(1, f"(--temperature {temperature:g}: z below is your logits / T, and the gradient by your "
                        "logits is each ∂L/∂z_j below divided by T)")
    console = terminal.make_console(color)

    def emit() -> None:
        for line in lines:
            console.print(line, soft_wrap=True, style="bold" if line[:2] in {f"{n}." for n in range(1, 5)} else None)

    terminal.output().write(emit)
    return 0
