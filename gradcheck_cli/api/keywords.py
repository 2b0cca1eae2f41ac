"""The check's keywords, validated as the command line validates its options, with the same one-line messages.

The choices come from the same registries as the command line's; the ranges are those of options.py (a test
holds both to the same messages for the same values). A value is judged by its text, as the command line sees
it, so `eps=float("nan")` is refused in the words `--eps nan` is.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import FORMAT_NAMES, TENSOR_NAMES
from gradcheck_cli.numerics.losses import LOSS_NAMES
from gradcheck_cli.settings import DTYPES, FRAMEWORKS, METHOD_NAMES, REDUCTIONS, Settings

if TYPE_CHECKING:
    from gradcheck_cli.checks.returned import Calling

INPUT_FORMATS = ("auto", *FORMAT_NAMES)


def invalid(flag: str, message: str) -> InputError:
    return InputError(f"Invalid value for '{flag}': {message}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def convert(flag: str, value: Any) -> str:
        if _text(value) not in choices:
            raise invalid(flag, f"{_text(value)!r} is not one of {', '.join(map(repr, choices))}.")
        return _text(value)

    return convert


def finite_float(minimum: float, inclusive: bool, maximum: float = math.inf) -> Callable[[str, Any], float]:
    """A finite number above (or at) `minimum` and at most `maximum`, as options.FiniteFloat."""

    def convert(flag: str, value: Any) -> float:
        text = _text(value)
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise invalid(flag, f"{text!r} is not a number") from None
        if not math.isfinite(number):
            raise invalid(flag, f"{text!r} is not a finite number")
        if number < minimum or (number == minimum and not inclusive):
            raise invalid(flag, f"{text} is out of range; it must be {'>=' if inclusive else '>'} {minimum:g}")
        if number > maximum:
            raise invalid(flag, f"{text} is out of range; it must be <= {maximum:g}")
        return number

    return convert


def integer(low: int | None = None, high: int | None = None) -> Callable[[str, Any], int]:
    """An integer (click's INT), or one in [low, high] (click's IntRange), refused in click's words."""
    kind = "integer" if low is None else "integer range"

    def convert(flag: str, value: Any) -> int:
        try:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral | str):
                raise ValueError
            number = int(value)
        except ValueError:
            raise invalid(flag, f"{_text(value)!r} is not a valid {kind}.") from None
        if low is not None and high is not None and not low <= number <= high:
            raise invalid(flag, f"{number} is not in the range {low}<=x<={high}.")
        return number

    return convert


POSITIVE = finite_float(0.0, inclusive=False)
NON_NEGATIVE = finite_float(0.0, inclusive=True)


def weights(flag: str, value: Any) -> tuple[float, ...]:
    """Class weights: a string as --weights takes it, or a sequence (or array) of non-negative numbers."""
    if isinstance(value, str):
        tokens: list[Any] = value.replace(",", " ").split()
    else:
        from gradcheck_cli.api.arrays import as_float64  # numpy only when weights are given as numbers

        tokens = [repr(number) for number in as_float64(value, flag.lstrip("-")).ravel().tolist()]
    if not tokens:
        raise invalid(flag, "no weights given")
    return tuple(NON_NEGATIVE(flag, token) for token in tokens)


def flag(name: str, value: Any) -> bool:
    """An on/off option (--t2-scaling): True or False only."""
    if not isinstance(value, bool):
        raise invalid(name, f"{_text(value)!r} is not a valid boolean (True or False).")
    return value


def grad_output(name: str, value: Any) -> str | tuple[float, ...]:
    """--grad-output: "ones", "random", or the upstream gradient's values (one, or one per row), finite."""
    if isinstance(value, str):
        if value not in ("ones", "random"):
            raise invalid(name, f"{value!r}: give 'ones', 'random' or the values (a file on the command line)")
        return value
    from gradcheck_cli.api.arrays import as_float64

    values = as_float64(value, name.lstrip("-")).ravel()
    if not values.size or not all(math.isfinite(number) for number in values.tolist()):
        raise invalid(name, "expected finite numbers, one per row for --reduction none")
    return tuple(values.tolist())


# Settings field -> (the option the command line sets it with, its conversion); None is always "not given".
SETTINGS_KEYWORDS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "method": ("--method", choice(METHOD_NAMES)),
    "eps": ("--eps", POSITIVE),
    "atol": ("--atol", NON_NEGATIVE),
    "rtol": ("--rtol", NON_NEGATIVE),
    "dtype": ("--dtype", choice(DTYPES)),
    "order": ("--order", integer(1, 2)),
    "reduction": ("--reduction", choice(REDUCTIONS)),
    "loss": ("--loss", choice(LOSS_NAMES)),
    "weights": ("--weights", weights),
    "label_smoothing": ("--label-smoothing", finite_float(0.0, inclusive=True, maximum=1.0)),
    "ignore_index": ("--ignore-index", integer()),
    "temperature": ("--temperature", POSITIVE),
    "grad_output": ("--grad-output", grad_output),
    "seed": ("--seed", integer(0, 2**63 - 1)),
    "directions": ("--directions", integer(1, 1024)),
    "beta": ("--beta", finite_float(0.0, inclusive=True, maximum=1.0)),
    "t2_scaling": ("--t2-scaling", flag),
    "z_loss": ("--z-loss", NON_NEGATIVE),
    "softcap": ("--softcap", POSITIVE),
    "logit_scale": ("--logit-scale", POSITIVE),
    "pos_weight": ("--pos-weight", weights),
    "gamma": ("--gamma", NON_NEGATIVE),
    "alpha": ("--alpha", NON_NEGATIVE),
}


def calling(impl: bool, framework: Any, device: Any) -> Calling:
    """How the function is called (--framework, --device), refused without one to call, as the command line."""
    from gradcheck_cli.checks.returned import Calling

    chosen = choice(FRAMEWORKS)("--framework", framework)
    if not isinstance(device, str) or not device:
        raise invalid("--device", f"{_text(device)!r} is not a device name such as cpu or cuda:0")
    if not impl and (chosen, device) != ("numpy", "cpu"):
        raise InputError("--framework and --device say how --impl's function is called: give --impl too")
    return Calling(chosen, device)


def tensor_keys(value: Any) -> tuple[tuple[str, str], ...]:
    """--key: which array of a tensor file holds NAME, as {NAME: KEY} or "NAME=KEY" strings."""
    if value is None:
        return ()
    pairs = list(value.items()) if isinstance(value, dict) else [
        tuple(item.partition("=")[::2]) if isinstance(item, str) else item for item in
        ([value] if isinstance(value, str) else value)]
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(part, str) and part for part in pair):
            raise invalid("--key", f"{pair!r}: expected NAME=KEY, such as logits=lm_logits")
        if pair[0] not in TENSOR_NAMES:
            raise invalid("--key", f"{pair[0]!r} is not one of {', '.join(TENSOR_NAMES)}")
    return tuple((str(name), str(key)) for name, key in pairs)


def settings_from(values: dict[str, Any]) -> Settings:
    """Settings from keyword values (None: the default), each checked as its command-line option is."""
    converted = {
        field: convert(flag, values[field])
        for field, (flag, convert) in SETTINGS_KEYWORDS.items()
        if values.get(field) is not None
    }
    return Settings(**converted)


def input_format(value: Any) -> str:
    converted: str = choice(INPUT_FORMATS)("--input-format", value)
    return converted
