"""Options shared by several commands, defined once; their choices come from the registries.

Kept apart from cli.py so that every command module can use the same bundles without importing the group.
Nothing here imports numpy or rich.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from gradcheck_cli import terminal
from gradcheck_cli.inputs import FORMAT_NAMES as INPUT_FORMATS
from gradcheck_cli.inputs import TENSOR_NAMES
from gradcheck_cli.numerics.losses import LOSSES
from gradcheck_cli.render import RENDERERS
from gradcheck_cli.settings import DTYPES, FRAMEWORKS, METHOD_NAMES, REDUCTIONS

if TYPE_CHECKING:
    from gradcheck_cli.checks.returned import Calling


class FiniteFloat(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A finite float above (or at) a lower bound, and at most a maximum; 'nan', 'inf', '1e999' refused by name."""

    name = "float"

    def __init__(self, minimum: float, inclusive: bool, maximum: float = math.inf) -> None:
        self.minimum, self.inclusive, self.maximum = minimum, inclusive, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.minimum or (number == self.minimum and not self.inclusive):
            bound = ">=" if self.inclusive else ">"
            self.fail(f"{value} is out of range; it must be {bound} {self.minimum:g}", param, ctx)
        if number > self.maximum:
            self.fail(f"{value} is out of range; it must be <= {self.maximum:g}", param, ctx)
        return number


POSITIVE = FiniteFloat(0.0, inclusive=False)
NON_NEGATIVE = FiniteFloat(0.0, inclusive=True)
# A path that shells complete as a file name; inputs.py reads it and words every error itself.
INPUT_FILE = click.Path(readable=False, allow_dash=True)


def _env(name: str) -> dict[str, Any]:
    """The environment variable an option CI sets repeatedly can come from, shown in --help."""
    return {"envvar": f"GRADCHECK_{name}", "show_envvar": True}


def _compose(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(function: Any) -> Any:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


_data_options = _compose(
    click.option("--logits", "logits_args", multiple=True, metavar="ROW",
                 help="One sample's logits, numbers separated by commas and/or spaces. Repeat for more samples."),
    click.option("--labels", "labels_arg", metavar="LIST",
                 help="One class index per sample, comma-separated (0-based)."),
    click.option("--targets", "targets_args", multiple=True, metavar="ROW",
                 help="One sample's target distribution (one-hot or soft), instead of --labels. Repeatable."),
    click.option("-i", "--input", "input_path", type=INPUT_FILE, metavar="PATH",
                 help="Read logits (and labels or targets) from a CSV or JSON file; '-' reads stdin."),
    click.option("--input-format", type=click.Choice(["auto", *INPUT_FORMATS]), default="auto",
                 show_default=True,
                 help="Format of --input; auto goes by the extension, then by the first character."),
    click.option("--labels-file", "labels_path", type=INPUT_FILE, metavar="PATH",
                 help="A file of class indices, one per line, for the rows of --input."),
    click.option("--targets-file", "targets_path", type=INPUT_FILE, metavar="PATH",
                 help="A CSV of target distributions, one row per sample, for the rows of --input."),
)

def _parse_tensor_keys(ctx: click.Context, param: click.Parameter,
                       values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """--key NAME=KEY pairs: NAME one of the tensors gradcheck reads, KEY the array's key in the file."""
    pairs = []
    for value in values:
        name, equals, key = value.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"{value!r}: expected NAME=KEY, such as logits=lm_logits", ctx, param)
        if name not in TENSOR_NAMES:
            raise click.BadParameter(f"{value!r}: {name!r} is not one of {', '.join(TENSOR_NAMES)}", ctx, param)
        pairs.append((name, key))
    return tuple(pairs)


# Its value is InputRequest.key_names.
tensor_key_option = click.option(
    "--key", "key_names", multiple=True, callback=_parse_tensor_keys, metavar="NAME=KEY",
    help="Which array of a .npz, .safetensors or .pt input holds NAME (logits, labels, targets, gradient...), "
         "when its key is not NAME itself. Repeatable.")

check_options = _compose(
    click.option("--method", type=click.Choice(METHOD_NAMES), default="central", show_default=True,
                 **_env("METHOD"), help="Finite-difference formula (see the README for each one's accuracy)."),
    click.option("--eps", type=POSITIVE, default=None, **_env("EPS"),
                 help="Step h in z, rounded down to a power of two. [default: per method, times --temperature: "
                      "6.1e-6*T central]"),
    click.option("--atol", type=NON_NEGATIVE, default=None, **_env("ATOL"),
                 help="Absolute tolerance, added to --dtype's rounding allowance. [default: 0]"),
    click.option("--rtol", type=NON_NEGATIVE, default=None, **_env("RTOL"),
                 help="Relative tolerance, of each element's scale (see the README). [default: per method, 1e-10 "
                      "central]"),
    click.option("--dtype", type=click.Choice(DTYPES), default="float64", show_default=True,
                 **_env("DTYPE"), help="Precision of the analytic quantities; the reference is always float64."),
    click.option("--order", type=click.IntRange(1, 2), default=1, show_default=True,
                 help="2 also checks the Hessian of the loss against differences of the gradient."),
    click.option("--reduction", type=click.Choice(REDUCTIONS), default="mean", show_default=True,
                 help="How row losses combine; 'none' reports each row's loss and gradient."),
)

def _parse_weights(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """Class weights: finite non-negative numbers separated by commas and/or spaces."""
    if value is None:
        return None
    tokens = value.replace(",", " ").split()
    if not tokens:
        raise click.BadParameter("no weights given", ctx, param)
    return tuple(NON_NEGATIVE.convert(token, param, ctx) for token in tokens)


loss_options = _compose(
    click.option("--loss", type=click.Choice(tuple(LOSSES)), default="cross_entropy", show_default=True,
                 help="; ".join(f"{name}: {text}" for name, (_, text) in LOSSES.items()) + "."),
    click.option("--weights", callback=_parse_weights, metavar="LIST",
                 help="Per-class weights, as torch's weight= (cross_entropy only)."),
    click.option("--label-smoothing", type=FiniteFloat(0.0, inclusive=True, maximum=1.0), default=0.0,
                 show_default=True, help="Label smoothing in [0, 1], as torch's label_smoothing=."),
    click.option("--ignore-index", type=int, default=None, metavar="K",
                 help="Rows whose label is K contribute nothing, as torch's ignore_index= (labels only). "
                      "[default: -100, as torch's, for class labels read whole]"),
    click.option("--temperature", type=POSITIVE, default=1.0, show_default=True,
                 help="Softmax of z / T; gradients stay with respect to z."),
    click.option("--beta", type=FiniteFloat(0.0, inclusive=True, maximum=1.0), default=None,
                 help="jsd only: M = beta p + (1 - beta) q, as Liger-Kernel's; 0 is kl, 1 is reverse-kl. "
                      "[default: 0.5]"),
    click.option("--t2-scaling", is_flag=True,
                 help="kl, reverse-kl, jsd: multiply the loss and gradient by T^2 (Hinton). Off by default, as "
                      "torch's kl_div, so a plain kl_div checks as it is; turn it on if your loss has the T^2."),
    click.option("--z-loss", type=NON_NEGATIVE, default=0.0, show_default=True, metavar="S",
                 help="cross_entropy: add S lse^2 per row not ignored (PaLM), with the same divisor."),
    click.option("--softcap", type=POSITIVE, default=None, metavar="C",
                 help="Soft-capping, z -> C tanh(z / C) before the softmax (Gemma 2); cross_entropy, focal."),
    click.option("--logit-scale", type=POSITIVE, default=1.0, show_default=True, metavar="A",
                 help="z -> A z first, before --softcap and / T; cross_entropy, focal."),
    click.option("--pos-weight", callback=_parse_weights, metavar="LIST",
                 help="bce: per-class weight of the positive term, as torch's pos_weight=."),
    click.option("--gamma", type=NON_NEGATIVE, default=None, metavar="G",
                 help="focal: the focusing exponent of (1 - s_y)^gamma. [default: 2]"),
    click.option("--alpha", type=NON_NEGATIVE, default=None, metavar="A",
                 help="focal: a factor alpha on every row; none unless given."),
)

# InputRequest's teacher fields: the distillation losses' teacher.
teacher_options = _compose(
    click.option("--teacher-logits", "teacher_logits_args", multiple=True, metavar="ROW",
                 help="One sample's teacher logits, for kl, reverse-kl and jsd. Repeat for more samples."),
    click.option("--teacher-file", "teacher_path", type=INPUT_FILE, metavar="PATH",
                 help="A CSV of teacher logits, one row per sample, for the rows of --input."),
)

# Where the data is: every InputRequest field but the user's values (supplied_options).
input_options = _compose(_data_options, tensor_key_option, teacher_options)

supplied_options = _compose(
    click.option("--grad-file", "gradient_path", type=INPUT_FILE, metavar="PATH",
                 help="A CSV of your gradient (N x C) to check against the reference."),
    click.option("--probabilities-file", "probabilities_path", type=INPUT_FILE, metavar="PATH",
                 help="A CSV of your softmax probabilities (N x C) to check against the reference."),
    click.option("--loss-value", metavar="NUMBER|LIST",
                 help="Your loss to check: one number, or one per row (comma-separated) for --reduction none."),
    click.option("--impl", metavar="MODULE:FUNCTION",
                 help="Import FUNCTION(logits, targets) -> (loss, gradient) and check it. Runs that code, in a "
                      "process of its own."),
    # The default is checks.worker.DEFAULT_TIMEOUT (not imported here: start-up); a test holds them equal.
    click.option("--impl-timeout", type=POSITIVE, default=60.0, show_default=True, metavar="SECONDS",
                 help="Longest the import of --impl's module, or one call of its function, may take; past it "
                      "the check stops with exit 2."),
)


def _parse_grad_output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | tuple[float, ...] | None:
    """ones, random, or a file of numbers (text separated by commas and/or whitespace, or .npy), all finite."""
    if value is None or value in ("ones", "random"):
        return value
    try:
        if value.endswith(".npy"):
            import numpy as np

            numbers = [float(x) for x in np.load(value, allow_pickle=False).reshape(-1).tolist()]
        else:
            with open(value, encoding="utf-8") as handle:
                numbers = [FiniteFloat(-math.inf, True).convert(token, param, ctx)
                           for token in handle.read().replace(",", " ").split()]
    except OSError as error:
        raise click.BadParameter(f"{value}: {error.strerror or error}; give ones, random or a file of numbers",
                                 ctx, param) from None
    except ValueError as error:
        raise click.BadParameter(f"{value}: {error}", ctx, param) from None
    if not numbers or not all(math.isfinite(x) for x in numbers):
        raise click.BadParameter(f"{value}: expected finite numbers, one per row for --reduction none", ctx, param)
    return tuple(numbers)


# The upstream gradient and the own-loss check of --impl (Settings fields); check only.
upstream_options = _compose(
    click.option("--grad-output", callback=_parse_grad_output, metavar="ones|random|FILE",
                 help="The gradient flowing into the loss, g: the reference gradient is sum_n g_n dl_n/dz. One "
                      "number per row for --reduction none, one otherwise. [default: random (seeded) for "
                      "--reduction none with --impl, else ones]"),
    click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
                 help="Seed of --grad-output random and of the --impl directions; the report gives the one used. "
                      "[default: 0, so the same command gives the same report]"),
    click.option("--directions", type=click.IntRange(1, 1024), default=16, show_default=True,
                 help="Random directions along which --impl's gradient is checked against its own loss, over "
                      "every element (2 calls of the function each)."),
)

# How --impl's function is called (checks/returned.Calling); check only.
framework_options = _compose(
    click.option("--framework", type=click.Choice(FRAMEWORKS), default="numpy", show_default=True,
                 help="Call --impl's function with numpy arrays (float64), or torch or JAX tensors in --dtype; "
                      "a torch or JAX function may return only its loss (autograd gives the gradient)."),
    click.option("--device", default="cpu", show_default=True, metavar="DEVICE",
                 help="Where --framework torch or jax puts the tensors: cpu, cuda:0, ..."),
)

# Everything a check of your values takes: where the data and your values are, how your function is called,
# how to check and which loss (check and diagnose).
check_run_options = _compose(input_options, supplied_options, framework_options, check_options, loss_options,
                             upstream_options)


def impl_calling(impl: str | None, framework: str, device: str) -> Calling | None:
    """How --impl's function is called (framework_options); None without --impl (refused if they were given)."""
    if impl is None:
        if (framework, device) != ("numpy", "cpu"):
            raise click.UsageError("--framework and --device say how --impl's function is called: give --impl too")
        return None
    from gradcheck_cli.checks.returned import Calling  # the worker's modules only when there is a function

    return Calling(framework, device)


def output_options(formats: tuple[str, ...] = tuple(RENDERERS)) -> Callable[[Any], Any]:
    """-f and the terminal options; `formats` are the output formats the command can write."""
    return _compose(
        click.option("-f", "--format", "output_format", type=click.Choice(formats), default="table",
                     show_default=True, **_env("FORMAT"),
                     help=", ".join(f"{name}: {RENDERERS[name].help}" for name in formats) + "."),
        click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
                     **_env("COLOR"),
                     help="Colour in table mode; auto means a terminal, NO_COLOR unset and TERM not dumb."),
        click.option("--no-color", is_flag=True, help="Same as --color never."),
        terminal.quiet_option,
        terminal.verbose_option,
    )
