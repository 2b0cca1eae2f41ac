"""The Python API: the command line's checks as functions on the same pipeline, giving the same documents.

Held here: check() and sweep() give byte-identical JSON to `gradcheck check|sweep -f json` for a matrix of inputs
and options; every option of the commands is a keyword of the same name and default, refused with the command
line's own message; arrays of every kind (lists, numpy, torch float32 and bfloat16, JAX) are read exactly or
refused by name; Report.assert_ok() says what a test log needs; `import gradcheck_cli` stays cheap.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradcheck_cli
from gradcheck_cli import InputError, Report, check, sweep
from gradcheck_cli.api import keywords
from gradcheck_cli.checks.compare import compare
from gradcheck_cli.numerics import differences
from gradcheck_cli.report import CheckResult, Element
from gradcheck_cli.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ROW_1, ROW_2, ROW_3 = [1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.5], [1000.0, 0.0, -1000.0, 3.0]
ARGS_2 = ["--logits", "1.1 2.2 0.2 -1.7", "--logits", "1,2,3,0.5"]
# Whether checks count their mismatching elements (checks/compare.py fills CheckResult.mismatches).
COUNTED = compare("x", np.array([1.0]), np.array([0.0]), 0.0, 0.0).mismatches is not None


def load_example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


my_softmax = load_example("my_softmax")


def cli_json(gradcheck, *args: str) -> str:
    run = gradcheck(*args, "-f", "json")
    assert run.exit_code in (0, 1), run
    assert run.stderr == "", run
    return run.stdout.strip()


def api_json(report) -> str:
    return json.dumps(report.to_dict(), allow_nan=False)


# --- the same documents as the command line ------------------------------------------------------------------------

# (id, command-line arguments, check() keywords): each pair describes the same check.
SAME_CHECKS = [
    ("one row", ["--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"], {"logits": ROW_1, "labels": [2]}),
    ("rows", [*ARGS_2, "--labels", "2,1"], {"logits": [ROW_1, ROW_2], "labels": [2, 1]}),
    ("soft targets", [*ARGS_2, "--targets", "0.1,0.7,0.2,0", "--targets", "0.25 0.25 0.25 0.25"],
     {"logits": np.array([ROW_1, ROW_2]), "targets": [[0.1, 0.7, 0.2, 0.0], [0.25] * 4]}),
    ("five-point sum", [*ARGS_2, "--labels", "2,1", "--method", "five-point", "--reduction", "sum"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "method": "five-point", "reduction": "sum"}),
    ("float32 none hessian", [*ARGS_2, "--labels", "2,1", "--dtype", "float32", "--reduction", "none", "--order", "2"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "dtype": "float32", "reduction": "none", "order": 2}),
    ("weights ignore-index", [*ARGS_2, "--logits", "1000,0,-1000,3", "--labels", "2,1,0", "--weights", "0.5,1,2,3",
                              "--ignore-index", "1"],
     {"logits": [ROW_1, ROW_2, ROW_3], "labels": np.array([2, 1, 0]), "weights": (0.5, 1, 2, 3), "ignore_index": 1}),
    ("smoothing temperature", [*ARGS_2, "--labels", "2,1", "--label-smoothing", "0.1", "--temperature", "2.5"],
     {"logits": [ROW_1, ROW_2], "labels": [2.0, 1.0], "label_smoothing": 0.1, "temperature": 2.5}),
    ("mse", [*ARGS_2, "--targets", "0.1,0.7,0.2,0", "--targets", "0,0,1,0", "--loss", "mse"],
     {"logits": [ROW_1, ROW_2], "targets": [[0.1, 0.7, 0.2, 0], [0, 0, 1, 0]], "loss": "mse"}),
    ("steps and tolerances", [*ARGS_2, "--labels", "2,1", "--method", "forward", "--eps", "1e-4", "--atol", "1e-9",
                              "--rtol", "1e-6"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "method": "forward", "eps": 1e-4, "atol": 1e-9, "rtol": 1e-6}),
    ("complex step", [*ARGS_2, "--labels", "2,1", "--method", "complex-step"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "method": "complex-step"}),
    ("failing tolerances", [*ARGS_2, "--labels", "2,1", "--atol", "0", "--rtol", "0", "--eps", "0.1"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "atol": 0, "rtol": 0, "eps": 0.1}),
    ("loss value", [*ARGS_2, "--labels", "2,1", "--loss-value", "0.8"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "loss_value": 0.8}),
    ("row loss values", [*ARGS_2, "--labels", "2,1", "--reduction", "none", "--loss-value", "0.5,1.5"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "reduction": "none", "loss_value": np.array([0.5, 1.5])}),
    ("impl file", ["-i", "examples/batch.json", "--impl", "examples/my_softmax.py:forgot_one_over_n"],
     {"logits": [ROW_1, ROW_2, ROW_3], "labels": [2, 1, 0], "impl": "examples/my_softmax.py:forgot_one_over_n"}),
    ("impl function", ["-i", "examples/batch.json", "--impl", "examples/my_softmax.py:softmax_cross_entropy"],
     {"logits": [ROW_1, ROW_2, ROW_3], "labels": [2, 1, 0], "impl": my_softmax.softmax_cross_entropy}),
    ("impl function mse", ["-i", "examples/soft-targets.json", "--loss", "mse", "--impl", "examples/my_softmax.py:mse"],
     {"input": "examples/soft-targets.json", "loss": "mse", "impl": my_softmax.mse}),
    ("json file", ["-i", "examples/batch.json"], {"input": "examples/batch.json"}),
    ("csv labels file", ["-i", "examples/logits.csv", "--labels-file", "examples/labels.txt"],
     {"input": Path("examples/logits.csv"), "labels_file": "examples/labels.txt"}),
    ("csv targets file", ["-i", "examples/logits.csv", "--targets-file", "examples/targets.csv", "--input-format", "csv"],
     {"input": "examples/logits.csv", "targets_file": "examples/targets.csv", "input_format": "csv"}),
    ("csv labels beside", ["-i", "examples/logits.csv", "--labels", "2,1,0", "--loss-value", "1.25"],
     {"input": "examples/logits.csv", "labels": np.array([2, 1, 0]), "loss_value": 1.25}),
    ("csv targets beside", ["-i", "examples/logits.csv", "--targets", "0.1,0.7,0.2,0.0", "--targets", "0,0,1,0",
                            "--targets", "0.3,0.3,0.3,0.1"],
     {"input": "examples/logits.csv", "targets": [[0.1, 0.7, 0.2, 0.0], [0, 0, 1, 0], [0.3, 0.3, 0.3, 0.1]]}),
]


@pytest.mark.parametrize(("args", "keywords_"), [case[1:] for case in SAME_CHECKS], ids=[case[0] for case in SAME_CHECKS])
def test_check_gives_the_command_lines_json(gradcheck, monkeypatch, args, keywords_):
    """check() and `gradcheck check -f json` give byte-identical documents for the same input and options: the
    API is the pipeline's front door, not a second implementation."""
    monkeypatch.chdir(ROOT)
    assert api_json(check(**keywords_)) == cli_json(gradcheck, "check", *args)


def test_supplied_arrays_give_the_json_of_supplied_files(gradcheck, tmp_path):
    """Your gradient and probabilities as arrays are checked as --grad-file and --probabilities-file check them."""
    gradient = np.array([[0.1, 0.3, -0.45, 0.05], [0.01, 0.1, -0.3, 0.19]])
    probabilities = np.array([[0.22, 0.67, 0.09, 0.02], [0.03, 0.09, 0.245, 0.635]])
    for name, values in (("gradient", gradient), ("probabilities", probabilities)):
        np.savetxt(tmp_path / f"{name}.csv", values, delimiter=",", fmt="%.17g")
    expected = cli_json(gradcheck, "check", *ARGS_2, "--labels", "2,1", "--grad-file", str(tmp_path / "gradient.csv"),
                        "--probabilities-file", str(tmp_path / "probabilities.csv"))
    report = check([ROW_1, ROW_2], [2, 1], gradient=gradient, probabilities=probabilities.astype(np.float64))
    assert api_json(report) == expected
    assert [c.name for c in report.checks] == ["gradient", "jacobian", "supplied gradient", "supplied probabilities"]


@pytest.mark.parametrize("full", [False, True])
def test_a_big_input_is_summarised_unless_full(gradcheck, tmp_path, full):
    """Past 20,000 logits the report is a summary, as the command line's; full=True keeps every array."""
    rows = np.random.default_rng(3).normal(size=(2001, 10))
    path = tmp_path / "big.csv"
    np.savetxt(path, np.column_stack([rows, np.arange(2001) % 10]), delimiter=",", fmt="%.17g",
               header=",".join([*(f"z{k}" for k in range(10)), "label"]), comments="")
    report = check(input=str(path), full=full)
    assert report.full is full
    assert api_json(report) == cli_json(gradcheck, "check", "-i", str(path), *(["--full"] if full else []))


SAME_SWEEPS = [
    ("default steps", ["--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"], {"logits": ROW_1, "labels": [2]}),
    ("steps mse", [*ARGS_2, "--targets", "0.1,0.7,0.2,0", "--targets", "0,0,1,0", "--loss", "mse",
                   "--steps", "1e-2,1e-6,1e-10"],
     {"logits": [ROW_1, ROW_2], "targets": [[0.1, 0.7, 0.2, 0], [0, 0, 1, 0]], "loss": "mse", "steps": [1e-10, 1e-2, 1e-6]}),
    ("loss options", [*ARGS_2, "--labels", "2,1", "--weights", "1,2,3,4", "--temperature", "0.5", "--steps", "0.5"],
     {"logits": [ROW_1, ROW_2], "labels": [2, 1], "weights": [1, 2, 3, 4], "temperature": 0.5, "steps": "0.5"}),
    ("file", ["-i", "examples/logits.csv", "--labels-file", "examples/labels.txt"],
     {"input": "examples/logits.csv", "labels_file": "examples/labels.txt"}),
]


@pytest.mark.parametrize(("args", "keywords_"), [case[1:] for case in SAME_SWEEPS], ids=[case[0] for case in SAME_SWEEPS])
def test_sweep_gives_the_command_lines_json(gradcheck, monkeypatch, args, keywords_):
    """sweep() and `gradcheck sweep -f json` give the same document and the same exit code."""
    monkeypatch.chdir(ROOT)
    report = sweep(**keywords_)
    run = gradcheck("sweep", *args, "-f", "json")
    assert api_json(report) == run.stdout.strip()
    assert report.exit_code == run.exit_code


def test_a_sweep_that_finds_no_v_fails_with_its_curve():
    """A sweep whose steps are all too large for the gradient's curvature reaches no V: assert_ok says so."""
    report = sweep([ROW_1], [2], steps=[0.5, 0.25])
    assert not report.passed and report.exit_code == 1
    with pytest.raises(AssertionError) as raised:
        report.assert_ok()
    lines = str(raised.value).splitlines()
    assert lines[0] == f"gradcheck sweep: {report.verdict}"
    assert lines[1:] == [f"    step {p.eps:.0e}: error {p.error_vs_largest:.2e}" for p in report.points]


# --- the command line's options, keywords of the same name ---------------------------------------------------------

OUTPUT_OPTIONS = {"format", "color", "no_color", "quiet", "verbose"}  # the Report is the API's output


def option_keywords(command) -> dict[str, object]:
    """Each option of a command by its long name with underscores (--labels-file: labels_file), and its default."""
    options = {}
    for param in command.params:
        long = max(param.opts, key=len).lstrip("-").replace("-", "_")
        options[long] = param.default
    return options


@pytest.mark.parametrize(("name", "function", "api_only"), [
    ("check", check, {"gradient", "probabilities", "jacobian", "lse"}),
    ("sweep", sweep, {"gradient", "probabilities", "jacobian"}),
])
def test_every_option_is_a_keyword_with_its_default(name, function, api_only):
    """Each option of the command is a keyword of check()/sweep() with the same default (a new option fails this
    until the API takes it); only the output options have none, and arrays of your values have no option."""
    import importlib

    command = getattr(importlib.import_module(f"gradcheck_cli.commands.{name}"), name)
    options = option_keywords(command)
    parameters = inspect.signature(function).parameters
    assert set(options) - OUTPUT_OPTIONS == set(parameters) - api_only
    for option, default in options.items():
        if option in parameters and isinstance(default, bool | int | float | str):  # not click's "unset"
            assert parameters[option].default == default, option


# (option as typed on the command line, its value, the keyword and the value given to the API)
BAD_VALUES = [
    ("--method", "foo", "method", "foo"),
    ("--method", "3", "method", 3),
    ("--eps", "nan", "eps", float("nan")),
    ("--eps", "-1.0", "eps", -1.0),
    ("--eps", "0", "eps", 0),
    ("--eps", "abc", "eps", "abc"),
    ("--atol", "-1", "atol", -1),
    ("--rtol", "inf", "rtol", float("inf")),
    ("--dtype", "float8", "dtype", "float8"),
    ("--order", "3", "order", 3),
    ("--order", "x", "order", "x"),
    ("--order", "1.5", "order", 1.5),
    ("--reduction", "avg", "reduction", "avg"),
    ("--loss", "hinge", "loss", "hinge"),
    ("--weights", "1,-2.0", "weights", [1, -2]),
    ("--weights", "1,nan", "weights", np.array([1.0, np.nan])),
    ("--weights", ",", "weights", ","),
    ("--weights", "1,x", "weights", "1,x"),
    ("--label-smoothing", "2", "label_smoothing", 2),
    ("--label-smoothing", "-0.5", "label_smoothing", -0.5),
    ("--ignore-index", "1.5", "ignore_index", 1.5),
    ("--ignore-index", "x", "ignore_index", "x"),
    ("--temperature", "0", "temperature", 0),
    ("--temperature", "1e999", "temperature", "1e999"),
    ("--input-format", "xml", "input_format", "xml"),
]


def cli_message(stderr: str) -> str:
    """The command line's one error line without its prefix, the env var it names, and the --help hint."""
    import re

    line = stderr.strip().removeprefix("gradcheck: error: ")
    line = re.sub(r" \(env var: '[A-Z_]+'\)", "", line)
    return re.sub(r" \(see '[a-z ]+ --help'\)$", "", line)


@pytest.mark.parametrize(("option", "text", "keyword", "value"), BAD_VALUES, ids=[f"{b[0]} {b[1]}" for b in BAD_VALUES])
def test_a_bad_value_is_refused_with_the_command_lines_message(gradcheck, option, text, keyword, value):
    """A bad keyword raises InputError, a ValueError, with the message `gradcheck check` exits 2 with."""
    run = gradcheck("check", "--logits", "1,2,3,4", "--labels", "1", f"{option}={text}")
    assert run.exit_code == 2, run
    with pytest.raises(ValueError) as raised:
        check([[1, 2, 3, 4]], [1], **{keyword: value})
    assert isinstance(raised.value, InputError)
    assert str(raised.value) == cli_message(run.stderr)


def test_a_loss_option_its_loss_does_not_take_is_refused_as_on_the_command_line(gradcheck):
    """A loss option the chosen loss does not take is refused in the words of the command line, before any check."""
    run = gradcheck("check", "--logits", "1,2", "--targets", "0.5,0.5", "--loss", "mse", "--weights", "1,2")
    with pytest.raises(InputError) as raised:
        check([1, 2], targets=[0.5, 0.5], loss="mse", weights=[1, 2])
    assert str(raised.value) == cli_message(run.stderr)


def test_a_bad_sweep_step_is_refused_with_the_command_lines_message(gradcheck):
    """sweep(steps=...) refuses what --steps refuses, with the same message (text or numbers)."""
    for text, value in (("0.0", [0.0]), ("x", "x"), ("-0.001", (-1e-3,)), (",", ",")):
        run = gradcheck("sweep", "--logits", "1,2", "--labels", "1", "--steps", text)
        assert run.exit_code == 2, run
        with pytest.raises(InputError) as raised:
            sweep([1, 2], [1], steps=value)
        assert str(raised.value) == cli_message(run.stderr)


# --- arrays of every kind -------------------------------------------------------------------------------------------


def test_lists_numpy_and_one_row_give_the_same_report():
    """A row of C logits is a batch of one; lists, float32 and float64 arrays of the same values are the same check."""
    values = np.array([ROW_1, ROW_2])
    one = api_json(check(values, [2, 1]))
    assert api_json(check(values.tolist(), np.array([2, 1], dtype=np.uint8))) == one
    assert api_json(check(values.astype(np.float32), [2, 1], dtype="float32")) == api_json(
        check(values.astype(np.float32).astype(np.float64), [2, 1], dtype="float32"))
    assert api_json(check(ROW_1, 2)) == api_json(check([ROW_1], [2]))


def test_gradient_and_jacobian_of_one_row_may_be_given_as_one_row():
    """With one row of logits, a gradient of C values and a C x C Jacobian are that row's, as the JSON reader takes them."""
    report = check(ROW_1, [2], gradient=[0.1, 0.2, -0.3, 0.0], jacobian=np.eye(4))
    assert [c.name for c in report.checks][2:] == ["supplied gradient", "supplied jacobian"]
    assert not report.passed


class OnlyDLPack:
    """An array that offers DLPack only (as some frameworks' do)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_an_array_offering_only_dlpack_is_read():
    """An array type with neither __array__ nor a torch type is read through DLPack, exactly."""
    values = np.array([ROW_1, ROW_2], dtype=np.float32)
    assert api_json(check(OnlyDLPack(values), [2, 1])) == api_json(check(values, [2, 1]))


def torch_or_skip():
    return pytest.importorskip("torch", reason="torch tensors are tested where torch is installed (CI installs it)")


def test_torch_float32_and_bfloat16_tensors_are_read_exactly():
    """A torch tensor of any float type (bfloat16 too, which numpy lacks) is read as its exact float64 values,
    requires_grad or not; labels may be a LongTensor."""
    torch = torch_or_skip()
    logits = torch.tensor([ROW_1, ROW_2], dtype=torch.float32)
    exact = logits.double().numpy()
    assert api_json(check(logits, torch.tensor([2, 1]))) == api_json(check(exact, [2, 1]))
    low = logits.bfloat16().requires_grad_()
    rounded = low.detach().float().double().numpy()  # bfloat16 -> float32 -> float64 is exact
    assert rounded[0, 0] == 1.1015625  # 1.1 rounded to bfloat16's 8 bits
    assert api_json(check(low, torch.tensor([2, 1]))) == api_json(check(rounded, [2, 1]))
    assert api_json(check(logits, targets=torch.eye(4)[[2, 1]].bfloat16())) == api_json(check(exact, [2, 1]))


def test_jax_arrays_are_read_exactly():
    """JAX arrays, bfloat16 included, are read as their exact float64 values."""
    jnp = pytest.importorskip("jax.numpy", reason="JAX arrays are tested where JAX is installed")
    values = np.array([ROW_1, ROW_2], dtype=np.float32)
    assert api_json(check(jnp.asarray(values), jnp.asarray([2, 1]))) == api_json(check(values, [2, 1]))
    low = jnp.asarray(values, dtype=jnp.bfloat16)
    assert api_json(check(low, [2, 1])) == api_json(check(np.asarray(low.astype(jnp.float32), np.float64), [2, 1]))


# (what is given, the error it gives): arrays are refused as files are, naming the keyword and the element.
BAD_ARRAYS = [
    ({"logits": [[1, 2], [3]], "labels": [0, 0]}, "logits: ragged: its rows have different lengths"),
    ({"logits": [[1, np.nan]], "labels": [0]},
     ("logits[0, 1]: nan is not finite; logits and targets must be finite numbers (mask a class with a very "
     "negative logit)")),
    ({"logits": [[1, 2]], "targets": [[0.5, np.inf]]},
     ("targets[0, 1]: inf is not finite; logits and targets must be finite numbers (mask a class with a very "
     "negative logit)")),
    ({"logits": [[True, False]], "labels": [0]}, "logits: expected real numbers, got booleans"),
    ({"logits": [[1 + 2j, 0]], "labels": [0]}, "logits: expected real numbers, got complex numbers"),
    ({"logits": [["1", "2"]], "labels": [0]}, "logits: expected real numbers, got text"),
    ({"logits": np.zeros((2, 2, 2)), "labels": [0, 0]},
     "logits: expected N x C numbers (or one row of C), got an array of shape (2, 2, 2)"),
    ({"logits": np.zeros((0, 3)), "labels": []}, "logits: expected N x C numbers (or one row of C), got an array of shape (0, 3)"),
    ({"logits": [[1e10, 0]], "labels": [0]},
     ("row 0: logit 10000000000.0 of class 0 is beyond ±1e+09; finite differences cannot resolve it in float64: "
     "shift or scale the logits (softmax ignores a shift)")),
    ({"logits": [[1, 2], [3, 4]], "labels": [0, 2]}, "labels[1]: label 2 is out of range; with 2 classes a label is 0 to 1"),
    ({"logits": [[1, 2]], "labels": [0.5]}, "labels[0]: 0.5 is not an integer class index"),
    ({"logits": [[1, 2]], "labels": [1e30]}, "labels[0]: 1e+30 is far too large for a class index"),
    ({"logits": [[1, 2]], "labels": [[0]]}, "labels: expected N class indices, got an array of shape (1, 1)"),
    ({"logits": [[1, 2], [3, 4]], "labels": [0]}, "labels: 1 labels for 2 rows of logits"),
    ({"logits": [[1, 2]], "targets": [[0.5, -0.5]]}, "targets[0]: target -0.5 for class 1 is negative"),
    ({"logits": [[1, 2]], "targets": [[1, 0, 0]]}, "targets: targets have 3 classes, the logits have 2"),
    ({"logits": [[1, 2]], "labels": [0], "targets": [[1, 0]]},
     "both labels and targets give the answers; give labels or targets once"),
    ({"logits": [[1, 2]]}, ("no labels or targets: give labels= (N class indices) or targets= (N x C rows), or "
                            "teacher_logits= for kl, reverse-kl and jsd")),
    ({"labels": [0]}, "no logits: give logits= (N x C numbers, or one row of C) or input= (a file)"),
    ({"logits": [[1, 2]], "labels": [0], "gradient": [[1, 2, 3]]},
     "gradient: the supplied gradient is 1 x 3; for 1 x 2 logits it must be 1 x 2"),
    ({"logits": [[1, 2]], "labels": [0], "loss_value": [1, 2, 3]},
     "loss_value: 3 loss values; give one number, or one per row (1)"),
    ({"logits": [[1, 2]], "labels": [0], "labels_file": "labels.txt"},
     ("labels_file= goes with input=, and the logits are given as logits=; give everything as arrays, or "
     "everything in files")),
    ({"input": "examples/batch.json", "gradient": [[1, 2]]},
     ("gradient= goes with logits=, and the logits are given as input=; give everything as arrays, or everything "
     "in files")),
    ({"input": "examples/batch.json", "logits": [[1, 2]]},
     "give the logits either as logits= or in the file input= names, not both"),
    ({"logits": [[1, 2]], "labels": [0], "impl": 3},
     "impl: expected a function f(logits, targets) -> (loss, gradient) or 'MODULE:FUNCTION', got int"),
]


@pytest.mark.parametrize(("given", "message"), BAD_ARRAYS, ids=[message[:40] for _, message in BAD_ARRAYS])
def test_bad_arrays_are_refused_by_name(monkeypatch, given, message):
    """Every bad array raises InputError (a ValueError) with one line saying what and where, never a traceback
    from deep inside numpy: the same rules as the files, in the API's own names."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(InputError) as raised:
        check(**given)
    assert str(raised.value) == message


def test_an_implementation_that_raises_is_named_as_with_impl():
    """A function given itself is named in messages as --impl names a MODULE:FUNCTION: module and qualified name."""

    def broken(logits, targets):
        raise RuntimeError("no kernel for this shape")

    with pytest.raises(InputError) as raised:
        check([ROW_1], [2], impl=broken)
    message = str(raised.value)
    assert message.startswith("--impl test_api:test_an_implementation_that_raises_is_named_as_with_impl.<locals>.broken")
    assert message.endswith("RuntimeError: no kernel for this shape")


# --- the Report's assertion --------------------------------------------------------------------------------------


def failing_report() -> Report:
    """A Report as a run builds it, with one passing check, a failing one with its worst elements, and a loss."""
    worst = (Element((1, 0), -0.9, -0.3, 6e9), Element((0, 2), 0.25, 0.125, 1.25e9))
    checks = [
        CheckResult("gradient", True, 2e-13, 3e-12, (0, 3), 0.0136, 0.0136, "dL/dz, analytic vs finite differences",
                    0.002, 8, 0, ()),
        CheckResult("supplied gradient", False, 0.6, 0.667, (1, 0), -0.9, -0.3,
                    "the gradient you supplied vs gradcheck's reference", 6e9, 8, 7, worst),
        CheckResult("supplied loss", False, 0.25, 0.2, (), 1.25, 1.0, "the loss you supplied vs gradcheck's reference",
                    2.5e9, 1, 1, (Element((), 1.25, 1.0, 2.5e9),)),
    ]
    settings = Settings(eps=2.0**-17, atol=1e-10, rtol=1e-7)
    return Report(settings=settings, rows=2, classes=4, loss=1.0, checks=checks)


def test_assert_ok_says_each_failing_check_its_mismatches_and_worst_elements():
    """The message a failing test shows: how the check ran, then per failing check its count of mismatching
    elements, the worst of them with index and every digit of both values, and how many more there are."""
    with pytest.raises(AssertionError) as raised:
        failing_report().assert_ok()
    assert str(raised.value) == (
        "gradcheck: 2 of 3 checks failed on 2 x 4 logits (cross_entropy, reduction mean, float64, central "
        "differences, atol 1e-10, rtol 1e-07)\n"
        "supplied gradient (the gradient you supplied vs gradcheck's reference): 7 of 8 elements mismatch; "
        "max abs error 0.6, max rel error 0.667\n"
        "    index   actual  expected\n"
        "    [1, 0]  -0.9    -0.3\n"
        "    [0, 2]  0.25    0.125\n"
        "    ... and 5 more\n"
        "supplied loss (the loss you supplied vs gradcheck's reference): actual 1.25, expected 1.0; "
        "max abs error 0.25, max rel error 0.2"
    )


def test_a_report_without_counts_shows_its_worst_element():
    """A check that was not counted (elements None) still names its worst element and both values."""
    report = failing_report()
    report.checks[1] = report.checks[1]._replace(elements=None, mismatches=None, worst_elements=(),
                                                 max_abs_error=None, max_rel_error=None)
    lines = report.failure_message().splitlines()
    assert lines[1:4] == [
        ("supplied gradient (the gradient you supplied vs gradcheck's reference): its worst element mismatches; "
        "a value is not finite"),
        "    index   actual  expected",
        "    [1, 0]  -0.9    -0.3",
    ]


def test_a_passing_report_asserts_quietly_and_reads_in_one_line():
    """assert_ok() is silent on a pass; repr() is one line naming the failing checks (no arrays); exit codes 0 and 1."""
    report = check([ROW_1, ROW_2], [2, 1])
    report.assert_ok()
    assert repr(report) == "<gradcheck Report of 2 x 4 logits, 2 checks: PASS>"
    assert repr(failing_report()) == "<gradcheck Report of 2 x 4 logits, 3 checks: FAIL: supplied gradient, supplied loss>"
    assert report.exit_code == 0 and failing_report().exit_code == 1


def test_a_real_failure_reads_the_same_end_to_end():
    """A planted slip in one element, caught through the assertion helper: the exact message, with its count
    from the check itself. At logits 0 every s_i is exactly 1/4, so the reference gradient (s - y) / 2 is exact:
    -0.375 at the label, 0.125 elsewhere; doubling element [1, 2] makes it 0.25, the only one of 8 that is off."""

    def planted(logits, targets):
        loss, gradient = my_softmax.softmax_cross_entropy(logits, targets)
        gradient[1, 2] *= 2
        return loss, gradient

    with pytest.raises(AssertionError) as raised:
        gradcheck_cli.assert_gradients_match(planted, np.zeros((2, 4)), labels=[0, 3])
    settings = differences.resolve(Settings())  # the default tolerances are the numerics' to choose
    assert str(raised.value).splitlines() == [
        ("gradcheck: 1 of 4 checks failed on 2 x 4 logits (cross_entropy, reduction mean, float64, central "
        f"differences, atol {settings.atol}, rtol {settings.rtol})"),
        ("supplied gradient (the gradient you supplied vs gradcheck's reference): "
        f"{'1 of 8 elements mismatch' if COUNTED else 'its worst element mismatches'}; max abs error 0.125, "
        "max rel error 0.5"),
        "    index   actual  expected",
        "    [1, 2]  0.25    0.125",
    ]


def test_counts_and_worst_elements_do_not_depend_on_how_a_file_is_read(tmp_path):
    """A failing check counts its mismatching elements and keeps its worst five the same whether the file is
    read whole or in chunks of a few rows (counts add up, the worst are merged in numpy.argmax's order); the
    Jacobian counts all N C^2 of its elements, though it decides pass or fail from 2 N C of them."""
    from gradcheck_cli import pipeline
    from gradcheck_cli.inputs.gather import InputRequest

    rows = np.random.default_rng(5).normal(size=(40, 5)) * 3
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.column_stack([rows, np.arange(40) % 5]), delimiter=",", fmt="%.17g",
               header="z0,z1,z2,z3,z4,label", comments="")
    settings = Settings(eps=0.25)  # a step far too long: the truncation error fails every element
    whole = check(input=str(path), eps=0.25)
    with pipeline.open_check(InputRequest(input_path=str(path)), settings, chunk_bytes=300) as job:
        assert job.input.whole is None
        chunked = job.run()
    assert [c.name for c in whole.checks] == ["gradient", "jacobian"]
    for one, other in zip(whole.checks, chunked.checks, strict=True):
        assert (one.elements, one.mismatches, one.worst_elements) == (other.elements, other.mismatches,
                                                                      other.worst_elements)
    if COUNTED:
        gradient, jacobian = whole.checks
        assert (gradient.elements, jacobian.elements) == (200, 1000)
        assert gradient.mismatches == 200 and jacobian.mismatches == 1000
        assert len(jacobian.worst_elements) == 5 and jacobian.worst_elements[0].position == jacobian.worst_index
        shares = [element.share for element in gradient.worst_elements]
        assert shares == sorted(shares, reverse=True) and gradient.worst_elements[0].position == gradient.worst_index


# --- the assertion helper ----------------------------------------------------------------------------------------


def test_the_helper_holds_float32_values_to_float32s_tolerances():
    """float32 logits are checked with dtype float32 and its default tolerances (those of `--dtype float32`), and
    the function gets float32 arrays, as it was written for; float64 and lists get float64's."""
    seen = []

    def recording(logits, targets):
        seen.append((logits.dtype, targets.dtype))
        return my_softmax.softmax_cross_entropy(logits.astype(np.float64), targets.astype(np.float64))

    report = gradcheck_cli.gradients_report(recording, np.float32([ROW_1, ROW_2]), labels=[2, 1])
    expected = differences.resolve(Settings(dtype="float32"))
    assert (report.settings.dtype, report.settings.atol, report.settings.rtol) == ("float32", expected.atol, expected.rtol)
    assert seen == [(np.float32, np.float32)]
    report = gradcheck_cli.gradients_report(recording, [ROW_1, ROW_2], labels=[2, 1], rtol=1e-6)
    assert (report.settings.dtype, report.settings.rtol) == ("float64", 1e-6)
    assert seen[-1] == (np.float64, np.float64)


def test_the_helper_checks_soft_targets_as_the_function_saw_them():
    """Targets are handed over in the logits' type; the reference uses them as rounded there, so a float32
    function is not blamed for the rounding of 0.1 (and a label stays a label: ignore_index keeps its meaning)."""
    seen = []

    def recording(logits, targets):
        seen.append(targets)
        return my_softmax.softmax_cross_entropy(logits, targets)

    targets = [[0.1, 0.7, 0.2, 0.0], [0.3, 0.3, 0.3, 0.1]]
    gradcheck_cli.assert_gradients_match(recording, [ROW_1, ROW_2], targets=targets)
    assert seen[0].tolist() == targets
    gradcheck_cli.gradients_report(recording, np.float32([ROW_1, ROW_2]), targets=targets)
    assert seen[1].dtype == np.float32 and seen[1][0, 0] == np.float32(0.1)


def test_the_helper_refuses_what_it_cannot_judge():
    """Half precision gets its dtype's default tolerances and baseline verdict (float16 logits: dtype float16); a
    keyword that is not a setting, or a function that does not return (loss, gradient), is refused before any
    verdict."""
    half = gradcheck_cli.assert_gradients_match(my_softmax.softmax_cross_entropy, np.float16([ROW_1]), labels=[2])
    assert half.settings.dtype == "float16"
    assert "supplied gradient vs float16 baseline" in [check.name for check in half.checks]
    with pytest.raises(AssertionError, match="supplied gradient"):  # the forgotten 1/N, in float16 too
        gradcheck_cli.assert_gradients_match(my_softmax.forgot_one_over_n, np.float16([ROW_1, ROW_1]), labels=[2, 1])
    report = gradcheck_cli.assert_gradients_match(
        lambda z, t: my_softmax.softmax_cross_entropy(z.astype(np.float64), t.astype(np.float64)),
        np.float16([ROW_1]), labels=[2], atol=1e-3, rtol=1e-2)
    assert report.passed and report.settings.dtype == "float16"  # the logits' dtype, its tolerances
    with pytest.raises(TypeError, match="unexpected keyword argument 'gradient'"):
        gradcheck_cli.assert_gradients_match(my_softmax.softmax_cross_entropy, [ROW_1], labels=[2], gradient=[0] * 4)
    with pytest.raises(InputError, match=r"^the function must return \(loss, gradient\), got float$"):
        gradcheck_cli.assert_gradients_match(lambda z, t: 1.0, [ROW_1], labels=[2])
    with pytest.raises(InputError, match=r"^Invalid value for '--reduction': 'avg' is not one of"):
        gradcheck_cli.assert_gradients_match(my_softmax.softmax_cross_entropy, [ROW_1], labels=[2], reduction="avg")


def test_the_helper_calls_a_torch_function_with_torch_tensors():
    """A torch function gets tensors of the logits' dtype (bfloat16 too) and may return tensors that require
    grad; a bug in it fails, a correct one passes with the tolerances bfloat16's rounding calls for (README)."""
    torch = torch_or_skip()

    def cross_entropy(logits, targets):
        assert isinstance(logits, torch.Tensor) and logits.dtype == targets.dtype == torch.bfloat16
        logits = logits.detach().requires_grad_()
        loss = torch.nn.functional.cross_entropy(logits, targets)
        (gradient,) = torch.autograd.grad(loss, logits, create_graph=True)
        return loss, gradient

    logits = torch.tensor([ROW_1, ROW_2], dtype=torch.bfloat16)
    u = 2.0**-8
    assert gradcheck_cli.assert_gradients_match(cross_entropy, logits, torch.tensor([2, 1]), atol=4 * u / 2,
                                                rtol=4 * u).passed
    with pytest.raises(AssertionError, match="supplied gradient"):
        gradcheck_cli.assert_gradients_match(lambda z, t: (cross_entropy(z, t)[0], 2 * cross_entropy(z, t)[1]),
                                             logits, torch.tensor([2, 1]), atol=4 * u / 2, rtol=4 * u)


# --- start-up -----------------------------------------------------------------------------------------------------


def test_importing_the_package_and_its_plugin_loads_nothing_heavy():
    """`import gradcheck_cli` (and pytest's import of the plugin) loads neither numpy, click nor rich: every
    public name is imported on first use, so the command line's start-up and a test session's pay nothing."""
    code = ("import sys, gradcheck_cli, gradcheck_cli.pytest_plugin; "
            "print(sorted(m for m in ('numpy', 'click', 'rich') if m in sys.modules)); "
            "print(sorted(gradcheck_cli.__all__) == sorted(n for n in dir(gradcheck_cli) if n in gradcheck_cli.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_every_public_name_resolves_and_unknown_names_fail():
    """Every name in __all__ loads on first use; a misspelt one is an AttributeError, as for any module."""
    for name in gradcheck_cli.__all__:
        assert getattr(gradcheck_cli, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = gradcheck_cli.nothing


def test_keyword_table_covers_every_settings_field():
    """Every Settings field is a keyword check() validates, so none can be set without its command-line checks."""
    assert set(keywords.SETTINGS_KEYWORDS) == set(Settings._fields)
