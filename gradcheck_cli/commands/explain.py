"""`gradcheck explain`: the derivation of one sample's softmax, Jacobian, loss and gradient, with its numbers."""

from __future__ import annotations

import sys
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
    Time and memory are O(C): only the Jacobian entries shown are computed (a wide row lists two rows and the
    diagonal, never the C x C matrix), and each kind of line is formatted by one call for all its classes.
    """
    import numpy as np

    from gradcheck_cli.numerics.softmax import softmax_parts

    z = logits[row]
    classes = len(z)
    m = float(z.max())
    exps = np.exp(z - m)
    total = float(exps.sum())
    parts = softmax_parts(z[None, :])
    s, complement = parts.s[0], parts.complement[0]
    k = np.arange(1, classes + 1).tolist()
    lines = [
        f"Sample {row} (classes numbered 1..{classes}; class k is index k-1 of the input)",
        "z = (" + ", ".join(_shown(z)) + ")",
        "",
        "1. Softmax: s_i = e^{z_i} / Σ_l e^{z_l}",
        f"   computed as e^{{z_i − m}} / Σ_l e^{{z_l − m}} with m = max z = {_n(m)} (the same value, no overflow)",
        "   Σ_l e^{z_l − m} = " + " + ".join(_shown(exps)) + f" = {_n(total)}",
    ]
    shown_s = _shown(s)
    lines += _lines("   s_%d = %s / %s = %s", k, _shown(exps), [_n(total)] * classes, shown_s)
    lines += [f"   check: the s_i sum to {_n(float(s.sum()))}", "", "2. Jacobian: ∂s_i/∂z_j = s_i(δ_ij − s_j)"]
    full_rows = classes if classes <= FULL_JACOBIAN_CLASSES else min(2, classes)
    diagonal = _lines("   ∂s_%d/∂z_%d = s_%d(1 − s_%d) = %s×%s = %s", k, k, k, k, shown_s, _shown(1 - s),
                      _shown(s * complement))
    for i in range(full_rows):  # J_ij = -s_i s_j off the diagonal, written for every column j
        entries = _lines("   ∂s_%d/∂z_%d = −s_%d·s_%d = −%s×%s = %s", [i + 1] * classes, k, [i + 1] * classes, k,
                         [shown_s[i]] * classes, shown_s, _shown(-s[i] * s))
        entries[i] = diagonal[i]
        lines += entries
    lines += diagonal[full_rows:]
    if full_rows < classes:
        lines.append(f"   ... rows 3 to {classes} show only their diagonal; `gradcheck check -f json` has every entry")
    lines += ["   (rows and columns of J sum to 0; J is symmetric)", ""]
    return lines + explain_loss(z, s, row)


def _n(value: float) -> str:
    """A number in a derivation: three significant digits, trailing zeros kept (0.150), a real minus sign."""
    return _shown([value])[0]


def _shown(values: Any) -> list[str]:
    """_n of every value, formatted by one call: "%#.3g" is the format spec "#.3g" that the losses use."""
    numbers = [float(value) for value in values] if isinstance(values, list) else values.tolist()
    text = ("%#.3g\n" * len(numbers)) % tuple(numbers)
    return text.replace(".\n", "\n").replace("-", "\u2212").split("\n")[:-1]


def _lines(template: str, *columns: list[Any]) -> list[str]:
    """template % (the k-th value of each column) for every k, in one formatting call."""
    count, width = len(columns[0]), len(columns)
    values: list[Any] = [None] * (count * width)
    for place, column in enumerate(columns):  # one slice assignment per column, not a loop over classes
        values[place::width] = column
    return ((template + "\n") * count % tuple(values)).split("\n")[:-1]


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
    terminal.output().write(lambda: _print(lines, color))
    return 0


def _print(lines: list[str], color: str) -> None:
    """The lines, the step headings ("1. Softmax: ...") in bold when in colour.

    Written as a few blocks of plain text, not line by line through rich: a wide row has C lines per step.
    """
    text = "\n".join(lines) + "\n"
    if not terminal.wants_color(color):
        sys.stdout.write(text)
        return
    import re

    console = terminal.make_console(color)
    # re.split with a group alternates plain blocks and the headings between them.
    for place, piece in enumerate(re.split(r"(?m)^([1-4]\.[^\n]*)\n", text)):
        if place % 2:
            console.print(piece, style="bold", soft_wrap=True)
        else:
            sys.stdout.write(piece)
