"""Tensor files as inputs (.npy, .npz, .safetensors, .pt): the same check as from JSON, their dtypes kept, read in
chunks where they can be, and every bad file refused with exit 2 and one line.

The oracle is the JSON input: each tensor file holds exactly the numbers of a JSON file (float64 written with
repr, which reads back exactly; a low-precision value is a float64 exactly), so the reports must be equal to the
byte, not merely close. Low-precision decoding has its own oracle: bfloat16 is the top half of a float32's bits.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli import pipeline
from gradcheck_cli.checks.runner import Keep
from gradcheck_cli.inputs.gather import InputRequest, open_input
from gradcheck_cli.settings import Settings

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the tensors extra (safetensors) is not installed")
ml_dtypes = pytest.importorskip("ml_dtypes", reason="the tensors extra (ml_dtypes) is not installed")

# torch is imported by the tests that write .pt files, not when this module is collected: its threads in the
# test process would keep the forked-worker tests (marked `forks`, run first) from forking.
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (.ci/run installs torch==2.13.0)")


def _batch(rows: int = 6, classes: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(rows, classes))
    labels = rng.integers(0, classes, rows)
    targets = rng.dirichlet(np.ones(classes), rows)
    return {"logits": logits, "labels": labels, "targets": targets}


def _json(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.write_text(json.dumps({key: value.tolist() for key, value in arrays.items()}))
    return path


def _write(path: Path, arrays: dict[str, np.ndarray], torch_dtype: str | None = None) -> Path:
    """The arrays in the format path's suffix names (.pt: as torch tensors, floats of torch_dtype if given)."""
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    elif path.suffix == ".safetensors":
        safetensors_numpy.save_file({key: np.ascontiguousarray(value) for key, value in arrays.items()}, str(path))
    elif path.suffix == ".pt":
        import torch

        def tensor(value: np.ndarray):
            converted = torch.from_numpy(np.ascontiguousarray(value))
            floating = torch_dtype is not None and converted.is_floating_point()
            return converted.to(getattr(torch, torch_dtype)) if floating else converted
        torch.save({key: tensor(value) for key, value in arrays.items()}, path)
    else:
        raise AssertionError(path)
    return path


def _same_reports(gradcheck, tensor_args: list[str], json_path: Path, *options: str) -> None:
    ours = gradcheck("check", *tensor_args, "-f", "json", *options)
    reference = gradcheck("check", "-i", str(json_path), "-f", "json", *options)
    differ = next((k for k, (a, b) in enumerate(zip(ours.stdout, reference.stdout, strict=False)) if a != b), None)
    shown = f"exit {ours.exit_code} vs {reference.exit_code}; first difference at {differ}: " + (
        f"{ours.stdout[differ - 80:differ + 80]!r} vs {reference.stdout[differ - 80:differ + 80]!r}" if differ else "")
    assert ours.exit_code == reference.exit_code, f"{shown}\n{ours.stderr}{reference.stderr}"
    assert ours.stdout == reference.stdout, shown
    assert ours.stderr == reference.stderr == ""


DICT_FORMATS = [".npz", ".safetensors", pytest.param(".pt", marks=needs_torch)]


@pytest.mark.parametrize("suffix", DICT_FORMATS)
@pytest.mark.parametrize("answers", ["labels", "targets"])
def test_a_tensor_file_gives_the_check_of_the_same_numbers_in_json(gradcheck, tmp_path, suffix, answers):
    """Protects: .npz, .safetensors and .pt inputs, labels or targets, read exactly as float64 and checked
    through the one pipeline: the JSON report is the JSON input's, byte for byte."""
    arrays = {key: value for key, value in _batch().items() if key in ("logits", answers)}
    tensor_file = _write(tmp_path / f"batch{suffix}", arrays)
    _same_reports(gradcheck, ["-i", str(tensor_file)], _json(tmp_path / "batch.json", arrays))


@pytest.mark.parametrize("suffix", DICT_FORMATS)
def test_the_users_values_in_a_tensor_file_are_checked_as_from_json(gradcheck, tmp_path, suffix):
    """Protects: gradient, probabilities and loss keys read as the user's values; one wrong gradient element
    fails both inputs alike (exit 1, the same worst element)."""
    arrays = _batch()
    del arrays["targets"]
    shifted = arrays["logits"] - arrays["logits"].max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    gradient = (probabilities - np.eye(5)[arrays["labels"]]) / 6
    gradient[2, 3] += 1e-3  # a slip the check must name
    loss = -np.log(probabilities[np.arange(6), arrays["labels"]]).mean()
    arrays.update(probabilities=probabilities, gradient=gradient, loss=np.array(loss))
    tensor_file = _write(tmp_path / f"batch{suffix}", arrays)
    ours = gradcheck("check", "-i", str(tensor_file), "-f", "json")
    assert ours.exit_code == 1, ours
    report = json.loads(ours.stdout)
    assert report["gradient"]["supplied"][2][3] == gradient[2, 3]
    (failed,) = [check for check in report["checks"] if not check["passed"]]
    assert failed["name"] == "supplied gradient" and failed["worst"]["index"] == [2, 3]
    _same_reports(gradcheck, ["-i", str(tensor_file)], _json(tmp_path / "batch.json", arrays))


@pytest.mark.parametrize("labels_suffix", [".npy", ".txt"])
def test_a_npy_file_holds_the_logits_and_its_labels_come_from_beside_it(gradcheck, tmp_path, labels_suffix):
    """Protects: .npy logits with --labels-file in .npy or text, and --targets-file in .npy."""
    arrays = _batch()
    np.save(tmp_path / "logits.npy", arrays["logits"])
    labels = tmp_path / f"labels{labels_suffix}"
    if labels_suffix == ".npy":
        np.save(labels, arrays["labels"])
    else:
        labels.write_text("\n".join(map(str, arrays["labels"])) + "\n")
    np.save(tmp_path / "targets.npy", arrays["targets"])
    only = {"logits": arrays["logits"], "labels": arrays["labels"]}
    _same_reports(gradcheck, ["-i", str(tmp_path / "logits.npy"), "--labels-file", str(labels)],
                  _json(tmp_path / "batch.json", only))
    soft = {"logits": arrays["logits"], "targets": arrays["targets"]}
    _same_reports(gradcheck, ["-i", str(tmp_path / "logits.npy"), "--targets-file", str(tmp_path / "targets.npy")],
                  _json(tmp_path / "soft.json", soft), "--reduction", "sum")


def _rounded(values: np.ndarray, dtype_name: str) -> np.ndarray:
    dtype = ml_dtypes.bfloat16 if dtype_name == "bfloat16" else np.dtype(dtype_name)
    return values.astype(dtype)


LOW = [(suffix, dtype) for suffix in (".npz", ".safetensors") for dtype in ("float32", "float16")]
LOW += [(".safetensors", "bfloat16"), pytest.param(".pt", "bfloat16", marks=needs_torch),
        pytest.param(".pt", "float16", marks=needs_torch), (".npy", "float32"), (".npy", "float16")]


@pytest.mark.parametrize(("suffix", "dtype_name"), LOW)
def test_low_precision_logits_are_checked_as_the_rounded_numbers_and_keep_their_dtype(gradcheck, tmp_path, suffix,
                                                                                       dtype_name):
    """Protects: float32, float16 and bfloat16 tensors read exactly (the check equals that of the rounded
    numbers written in JSON) and Batch.dtype_name naming the stored dtype, for the half-precision checks."""
    arrays = _batch()
    low = _rounded(arrays["logits"], dtype_name)
    exact = low.astype(np.float64)
    assert not np.array_equal(exact, arrays["logits"])  # the rounding is real
    if suffix == ".npy":
        np.save(tmp_path / "logits.npy", low)
        np.save(tmp_path / "labels.npy", arrays["labels"])
        request = InputRequest(input_path=str(tmp_path / "logits.npy"), labels_path=str(tmp_path / "labels.npy"))
        args = ["-i", str(tmp_path / "logits.npy"), "--labels-file", str(tmp_path / "labels.npy")]
    else:
        path = tmp_path / f"batch{suffix}"
        if suffix == ".pt":
            _write(path, {"logits": exact, "labels": arrays["labels"]}, torch_dtype=dtype_name)
        else:
            _write(path, {"logits": low, "labels": arrays["labels"]})
        request, args = InputRequest(input_path=str(path)), ["-i", str(path)]
    batch = pipeline.load_whole(request, Settings())
    assert batch.dtype_name == dtype_name and batch.logits.dtype == np.float64
    assert np.array_equal(batch.logits, exact)
    _same_reports(gradcheck, args, _json(tmp_path / "rounded.json", {"logits": exact, "labels": arrays["labels"]}))


def test_bfloat16_is_decoded_exactly(tmp_path):
    """Protects: safetensors BF16 read exactly. Oracle: a bfloat16 is the top 16 bits of a float32, so its
    value is those bits shifted up, viewed as float32 (independent of ml_dtypes and safetensors)."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 1 << 16, size=(64, 33), dtype=np.uint16)
    exponent = (bits >> 7) & 0xFF
    bits[exponent == 0xFF] &= np.uint16(0xBFFF)  # no inf or NaN: an all-ones exponent loses its top bit
    expected = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    expected_clipped = np.abs(expected) <= 1e9
    bits[~expected_clipped] = 0  # beyond the range gradcheck checks: zero instead
    expected[~expected_clipped] = 0.0
    path = tmp_path / "bits.safetensors"
    safetensors_numpy.save_file({"logits": bits.view(ml_dtypes.bfloat16), "labels": np.zeros(64, np.int64)},
                                str(path))
    batch = pipeline.load_whole(InputRequest(input_path=str(path)), Settings())
    assert batch.dtype_name == "bfloat16"
    assert np.array_equal(batch.logits, expected)


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_big_tensor_files_are_read_in_chunks_of_rows_with_the_same_verdict(tmp_path, suffix):
    """Protects: .npy and .safetensors read in chunks of rows (bounded memory for any N), everything beside
    them sliced alike, with the report of the same file read whole."""
    arrays = _batch(rows=23, classes=7, seed=5)
    arrays["logits"] = arrays["logits"].astype(np.float32)
    np.save(tmp_path / "labels.npy", arrays["labels"])
    if suffix == ".npy":
        np.save(tmp_path / "logits.npy", arrays["logits"])
        request = InputRequest(input_path=str(tmp_path / "logits.npy"), labels_path=str(tmp_path / "labels.npy"))
    else:
        _write(tmp_path / "b.safetensors", {"logits": arrays["logits"], "labels": arrays["labels"]})
        request = InputRequest(input_path=str(tmp_path / "b.safetensors"))
    whole = pipeline.check(request, Settings(reduction="sum"))
    with pipeline.open_check(request, Settings(reduction="sum"), chunk_bytes=8 * 7 * 4) as job:
        assert job.input.whole is None and job.input.count_rows() == 23
        with job.input.reading() as batches:
            sizes = [batch.rows for batch in batches]
        assert sizes == [4, 4, 4, 4, 4, 3]
        chunked = job.run(Keep(arrays=False))
    assert whole.passed and chunked.passed
    assert chunked.loss == whole.loss  # the runner sums row losses exactly (ExactSum), however they are chunked
    assert [check.name for check in chunked.checks] == [check.name for check in whole.checks]


def test_a_npy_file_on_stdin_is_known_by_its_magic_number(gradcheck, tmp_path):
    """Protects: a tensor file from a pipe (no file name) is sniffed by its first bytes, not refused as binary."""
    arrays = _batch()
    np.save(tmp_path / "logits.npy", arrays["logits"])
    np.save(tmp_path / "labels.npy", arrays["labels"])
    ours = gradcheck("check", "-i", "-", "--labels-file", str(tmp_path / "labels.npy"), "-f", "json",
                     input=(tmp_path / "logits.npy").read_bytes())
    reference = gradcheck("check", "-i", str(_json(tmp_path / "b.json", {k: arrays[k] for k in ("logits", "labels")})),
                          "-f", "json")
    assert ours.exit_code == 0 and ours.stdout == reference.stdout, ours
    renamed = tmp_path / "logits.bin"
    renamed.write_bytes((tmp_path / "logits.npy").read_bytes())
    assert gradcheck("check", "-i", str(renamed), "--labels-file", str(tmp_path / "labels.npy"), "-q").exit_code == 0


def test_key_maps_other_names(tmp_path):
    """Protects: --key NAME=KEY (InputRequest.key_names) reading another key as NAME; a mapped key that is
    missing is named, with the keys the file has."""
    arrays = _batch()
    path = _write(tmp_path / "b.safetensors", {"lm_logits": arrays["logits"], "y": arrays["labels"]})
    request = InputRequest(input_path=str(path), key_names=(("logits", "lm_logits"), ("labels", "y")))
    batch = pipeline.load_whole(request, Settings())
    assert np.array_equal(batch.logits, arrays["logits"]) and np.array_equal(batch.labels, arrays["labels"])
    with pytest.raises(ValueError, match=r"^.*b\.safetensors: no key 'target' \(named by --key\); the file has 'lm_logits', 'y'$"):
        pipeline.load_whole(InputRequest(input_path=str(path), key_names=(("targets", "target"),)), Settings())


def test_the_key_option_parses_name_equals_key():
    """Protects: --key's parsing (NAME=KEY, NAME one gradcheck reads) as the command line gives it."""
    import click
    from click.testing import CliRunner

    from gradcheck_cli.options import tensor_key_option

    @click.command()
    @tensor_key_option
    def show(key_names):
        click.echo(repr(key_names))

    assert CliRunner().invoke(show, ["--key", "logits=a=b", "--key", "labels=y"]).stdout == \
        "(('logits', 'a=b'), ('labels', 'y'))\n"
    for bad, said in (("logits", "expected NAME=KEY"), ("logit=z", "'logit' is not one of logits, labels")):
        result = CliRunner().invoke(show, ["--key", bad])
        assert result.exit_code == 2 and said in result.stderr, result.stderr


def _corrupt_npy(path: Path) -> list[str]:
    np.save(path, np.ones((4, 3)))
    path.write_bytes(path.read_bytes()[:-8])
    return ["-i", str(path), "--labels", "0,1,2,0"]


def _npy(path: Path, array: np.ndarray, labels: str = "0,1,2,0") -> list[str]:
    np.save(path, array)
    return ["-i", str(path), "--labels", labels]


def _named(path: Path, arrays: dict[str, np.ndarray]) -> list[str]:
    return ["-i", str(_write(path, arrays))]


def _bytes(path: Path, data: bytes) -> list[str]:
    path.write_bytes(data)
    return ["-i", str(path)]


def _huge_labels_file(path: Path) -> list[str]:
    np.save(path / "y.npy", np.array([0, 2**63 + 1, 0, 0], dtype=np.uint64))
    return [*_npy(path / "z.npy", Z)[:2], "--labels-file", str(path / "y.npy")]


def _float_labels_file(path: Path) -> list[str]:
    np.save(path / "y.npy", Y.astype(float))
    return [*_npy(path / "z.npy", Z)[:2], "--labels-file", str(path / "y.npy")]


def _nan_at_row_9(path: Path) -> list[str]:
    logits = np.ones((12, 3))
    logits[9, 2] = np.nan
    np.save(path, logits)
    return ["-i", str(path), "--labels", ",".join(["0"] * 12)]


Z = np.ones((4, 3))
Y = np.array([0, 1, 2, 0])
ERRORS = [
    ("missing logits", lambda p: _named(p / "b.npz", {"z": Z, "labels": Y}),
     "b.npz: no 'logits' array (the file has 'labels', 'z'); name the key that holds them with --key logits=KEY"),
    ("missing answers", lambda p: _named(p / "b.safetensors", {"logits": Z}), "no labels or targets"),
    ("3-D logits", lambda p: _named(p / "b.npz", {"logits": np.ones((2, 2, 3)), "labels": Y}),
     "b.npz: logits: the logits are 2 x 2 x 3; they must be N x C"),
    ("labels of the wrong length", lambda p: _named(p / "b.npz", {"logits": Z, "labels": Y[:3]}),
     "b.npz: labels: labels of shape 3 for 4 rows of logits"),
    ("float labels", lambda p: _named(p / "b.npz", {"logits": Z, "labels": Y.astype(float)}),
     "b.npz: labels: labels of dtype float64; class indices must be integers"),
    ("integer logits", lambda p: _named(p / "b.safetensors", {"logits": Z.astype(np.int32), "labels": Y}),
     "b.safetensors: logits: dtype int32 is not one gradcheck reads"),
    ("complex logits", lambda p: _npy(p / "z.npy", Z.astype(complex)), "z.npy: logits: dtype complex128"),
    ("bfloat16 in .npy", lambda p: _npy(p / "z.npy", Z.astype(ml_dtypes.bfloat16)),
     "save bfloat16 logits as .safetensors or .pt"),
    ("truncated .npy", lambda p: _corrupt_npy(p / "z.npy"), "z.npy: not a readable .npy file"),
    ("garbage .safetensors", lambda p: _bytes(p / "b.safetensors", b"\x10\0\0\0\0\0\0\0{not json}xxxxx"),
     "b.safetensors: not a readable .safetensors file"),
    ("garbage .npz", lambda p: _bytes(p / "b.npz", b"PK\x03\x04" + b"\0" * 40), "b.npz: not a readable .npz file"),
    ("a NaN logit, named by its row in the file", lambda p: _nan_at_row_9(p / "z.npy"), "z.npy: logits[9][2]: nan is not finite"),
    ("labels out of range", lambda p: _npy(p / "z.npy", Z, "0,1,7,0"), "--labels[2]: label 7 is out of range"),
    ("--key on a .npy", lambda p: [*_npy(p / "z.npy", Z), "--key", "logits=x"], "a .npy file holds the logits alone"),
    ("a labels .npy of floats", lambda p: _float_labels_file(p),
     "y.npy: labels of shape (4,) and dtype float64; a labels file holds N integer class indices"),
    ("a text file read as .npy", lambda p: [*_bytes(p / "t.csv", b"1,2,3\n"), "--input-format", "npy", "--labels", "0"],
     "t.csv: not a .npy file (it does not start with numpy's magic string)"),
    ("uint64 labels beyond int64", lambda p: _huge_labels_file(p), "y.npy: labels[1]: 9223372036854775809 is far too large"),
    ("a grad_output not finite", lambda p: [*_named(p / "b.npz", {"logits": Z, "labels": Y,
                                                                   "grad_output": np.array([1.0, np.nan, 1, 1])}),
                                            "--reduction", "none"],
     "b.npz: grad_output[1]: nan is not finite; the upstream gradient must be finite numbers"),
    ("a grad_output per row for a mean", lambda p: _named(p / "b.npz", {"logits": Z, "labels": Y,
                                                                       "grad_output": np.ones(4)}),
     "b.npz: grad_output: 4 upstream gradient values; --reduction mean takes one number"),
    ("a grad_output too short", lambda p: [*_named(p / "b.safetensors", {"logits": Z, "labels": Y,
                                                                          "grad_output": np.ones(3)}),
                                           "--reduction", "none"],
     "b.safetensors: grad_output: 3 upstream gradient values; --reduction none takes one per row (4)"),
    ("an integer grad_output", lambda p: _named(p / "b.npz", {"logits": Z, "labels": Y, "grad_output": Y}),
     "b.npz: grad_output: dtype int64; the upstream gradient must be float64, float32, float16, bfloat16"),
    ("a 2-D grad_output", lambda p: _named(p / "b.npz", {"logits": Z, "labels": Y, "grad_output": np.ones((4, 1))}),
     "b.npz: grad_output: the upstream gradient is 4 x 1; give one number, or one per row for --reduction none"),
    ("grad_output in the file and --grad-output", lambda p: [*_named(p / "b.npz", {"logits": Z, "labels": Y,
                                                                                  "grad_output": np.array(2.0)}),
                                                             "--grad-output", "ones"],
     "b.npz: grad_output: the file gives the upstream gradient, and so does --grad-output; give it once"),
]


@pytest.mark.parametrize(("what", "make", "said"), ERRORS, ids=[row[0] for row in ERRORS])
def test_a_bad_tensor_file_is_refused_with_one_line(gradcheck, tmp_path, monkeypatch, what, make, said):
    """Protects: every bad tensor input (missing key, wrong shape, bad dtype, corrupt file, non-finite value)
    exits 2 with one line on stderr saying what and where, and nothing on stdout."""
    monkeypatch.chdir(tmp_path)
    args = make(tmp_path)
    if "--key" in args:
        _check_key_error(tmp_path, args, said)
        return
    result = gradcheck("check", *args)
    assert result.exit_code == 2, result
    assert result.stdout == "" and result.stderr.count("\n") == 1 and said in result.stderr, result


def _check_key_error(tmp_path: Path, args: list[str], said: str) -> None:
    """--key through the request (the option reaches it once commands/check.py passes key_names on)."""
    request = InputRequest(input_path=args[1], labels_arg=args[3], key_names=(("logits", "x"),))
    with pytest.raises(ValueError, match=said), open_input(request, None):
        pass


@pytest.mark.parametrize(("blocked", "suffix", "said"), [
    ("torch", ".pt", "reading a .pt file needs torch, which is not installed: pip install torch"),
    ("safetensors", ".safetensors", "pip install 'gradcheck[tensors]'"),
    ("ml_dtypes", ".safetensors", "reading bfloat16 tensors needs packages that are not installed"),
])
def test_a_missing_library_is_named_with_what_to_install(gradcheck, tmp_path, monkeypatch, blocked, suffix, said):
    """Protects: .pt without torch, .safetensors without safetensors, BF16 without ml_dtypes: exit 2, one line
    saying what to install (never a traceback)."""
    path = tmp_path / f"b{suffix}"
    if suffix == ".pt":
        path.write_bytes(b"not read: torch is missing")
    else:
        _write(path, {"logits": Z.astype(ml_dtypes.bfloat16), "labels": Y})
    monkeypatch.setitem(sys.modules, blocked, None)
    result = gradcheck("check", "-i", str(path))
    assert result.exit_code == 2 and result.stdout == "", result
    assert result.stderr.count("\n") == 1 and said in result.stderr, result


def test_teacher_logits_come_from_a_tensor_file_or_beside_it(tmp_path):
    """Protects: the distillation losses' teacher logits read from a tensor file's 'teacher_logits' key, or from
    --teacher-file beside a chunked .npy (sliced with its rows), with the report of the same numbers in JSON."""
    rng = np.random.default_rng(7)
    logits, teacher = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    document = _json(tmp_path / "b.json", {"logits": logits, "teacher_logits": teacher})
    settings = Settings(loss="kl", reduction="sum")
    reference = pipeline.check(InputRequest(input_path=str(document)), settings)
    in_file = pipeline.check(InputRequest(input_path=str(_write(tmp_path / "b.npz", {"logits": logits,
                                                                                     "teacher_logits": teacher}))),
                             settings)
    assert in_file.loss == reference.loss and in_file.passed and reference.passed
    np.save(tmp_path / "z.npy", logits)
    (tmp_path / "teacher.csv").write_text("\n".join(",".join(map(repr, row)) for row in teacher.tolist()) + "\n")
    request = InputRequest(input_path=str(tmp_path / "z.npy"), teacher_path=str(tmp_path / "teacher.csv"))
    with pipeline.open_check(request, settings, chunk_bytes=8 * 4 * 2) as job:
        assert job.input.whole is None
        chunked = job.run(Keep(arrays=False))
    assert chunked.passed and chunked.loss == reference.loss  # exact sums: chunking changes no bit


# --- the upstream gradient in the file (grad_output) ----------------------------------------------------------------


def _upstream_case(rows: int = 6, classes: int = 5) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A batch with labels and g drawn in [0.5, 2), and the gradient of sum_n g_n l_n by hand: g_n (s - y) (MATH.md),
    exact to a few ulps, far inside the gradient check's tolerance."""
    arrays = {key: value for key, value in _batch(rows, classes, seed=3).items() if key != "targets"}
    g = np.random.default_rng(4).uniform(0.5, 2.0, rows)
    s = np.exp(arrays["logits"] - arrays["logits"].max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    return arrays, g[:, None] * (s - np.eye(classes)[arrays["labels"]])


@pytest.mark.parametrize("suffix", DICT_FORMATS)
def test_grad_output_in_a_tensor_file_is_read_as_grad_output_file_is(gradcheck, tmp_path, suffix):
    """Protects: a file's grad_output (N values, --reduction none) is the upstream gradient g, exactly as
    --grad-output FILE gives it: the report is byte for byte that of the JSON input with --grad-output g.txt,
    the hand gradient sum_n g_n grad l_n passes, and a backward that used g_0 for every row (Liger-Kernel #968)
    fails its supplied-gradient check."""
    arrays, gradient = _upstream_case()
    g = np.random.default_rng(4).uniform(0.5, 2.0, 6)
    (tmp_path / "g.txt").write_text(" ".join(repr(x) for x in g.tolist()))
    ours = _write(tmp_path / f"b{suffix}", {**arrays, "grad_output": g, "gradient": gradient})
    reference = _json(tmp_path / "b.json", {**arrays, "gradient": gradient})
    mine = gradcheck("check", "-i", str(ours), "--reduction", "none", "-f", "json")
    theirs = gradcheck("check", "-i", str(reference), "--reduction", "none", "--grad-output", str(tmp_path / "g.txt"),
                       "-f", "json")
    assert mine.exit_code == 0 and mine.stdout == theirs.stdout and mine.stderr == "", (mine, theirs)
    assert json.loads(mine.stdout)["settings"]["grad_output"] == g.tolist()
    broadcast = gradient / g[:, None] * g[0]
    wrong = _write(tmp_path / f"w{suffix}", {**arrays, "grad_output": g, "gradient": broadcast})
    failed = gradcheck("check", "-i", str(wrong), "--reduction", "none", "-f", "json")
    assert failed.exit_code == 1, failed
    checks = {check["name"]: check for check in json.loads(failed.stdout)["checks"]}
    assert checks["supplied gradient"]["passed"] is False and checks["gradient"]["passed"] is True


@pytest.mark.parametrize("suffix", DICT_FORMATS)
def test_one_grad_output_number_scales_a_sum(gradcheck, tmp_path, suffix):
    """Protects: one number (a 0-d or 1-element grad_output) is g for --reduction sum: the gradient g (s - y)
    passes and the plain s - y fails; without the key the plain one passes (g = 1)."""
    arrays, gradient = _upstream_case()
    plain = gradient / np.random.default_rng(4).uniform(0.5, 2.0, 6)[:, None]
    for g, shape in ((np.array(0.25), ()), (np.array([3.0]), (1,))):
        assert g.shape == shape
        scaled = _write(tmp_path / f"s{suffix}", {**arrays, "grad_output": g, "gradient": g.reshape(()) * plain})
        assert gradcheck("check", "-i", str(scaled), "--reduction", "sum", "-q").exit_code == 0
        unscaled = _write(tmp_path / f"u{suffix}", {**arrays, "grad_output": g, "gradient": plain})
        assert gradcheck("check", "-i", str(unscaled), "--reduction", "sum", "-q").exit_code == 1
    without = _write(tmp_path / f"p{suffix}", {**arrays, "gradient": plain})
    assert gradcheck("check", "-i", str(without), "--reduction", "sum", "-q").exit_code == 0


def test_grad_output_in_a_file_read_in_chunks(tmp_path):
    """Protects: a chunked .safetensors file's one-number grad_output scales the sum as in the whole read (same
    losses and verdict); N values with --reduction none are refused there (g is checked per row of the whole)."""
    arrays, gradient = _upstream_case(rows=23, classes=7)
    path = _write(tmp_path / "b.safetensors", {**arrays, "grad_output": np.array([0.5]),
                                               "gradient": gradient / gradient.max()})
    request = InputRequest(input_path=str(path))
    whole = pipeline.check(request, Settings(reduction="sum"))
    with pipeline.open_check(request, Settings(reduction="sum"), chunk_bytes=8 * 7 * 4) as job:
        assert job.input.whole is None and job.settings.grad_output == (0.5,)
        chunked = job.run(Keep(arrays=False))
    assert chunked.passed == whole.passed and chunked.loss == whole.loss
    _write(path, {**arrays, "grad_output": np.ones(23)})
    with pytest.raises(ValueError, match="read in chunks: check it with --reduction sum"), \
            pipeline.open_check(request, Settings(reduction="none"), chunk_bytes=8 * 7 * 4):
        pass


def test_key_names_the_grad_output(tmp_path):
    """Protects: --key grad_output=KEY (InputRequest.key_names) reads g from another key, as for the other arrays."""
    arrays, _ = _upstream_case()
    path = _write(tmp_path / "b.safetensors", {**arrays, "upstream": np.array([0.75])})
    request = InputRequest(input_path=str(path), key_names=(("grad_output", "upstream"),))
    with pipeline.open_check(request, Settings(reduction="sum")) as job:
        assert job.settings.grad_output == (0.75,)
    with pipeline.open_check(InputRequest(input_path=str(path)), Settings(reduction="sum")) as job:
        assert job.settings.grad_output is None  # "upstream" is no name gradcheck reads unless --key says so


@pytest.mark.parametrize("command", [("sweep",), ("explain", "--row", "0")])
def test_sweep_and_explain_refuse_a_grad_output_they_would_ignore(gradcheck, tmp_path, command):
    """Protects: sweep and explain take no upstream gradient; a file's grad_output is refused there (exit 2, one
    line), never silently dropped (a right g-weighted gradient would then fail unexplained)."""
    arrays, gradient = _upstream_case()
    path = _write(tmp_path / "b.npz", {**arrays, "grad_output": np.ones(6), "gradient": gradient})
    run = gradcheck(command[0], "-i", str(path), *command[1:])
    assert run.exit_code == 2 and run.stdout == "" and run.stderr.count("\n") == 1, run
    assert "b.npz: grad_output: an upstream gradient (grad_output) is read by check only" in run.stderr, run
