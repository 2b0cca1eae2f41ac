"""The pytest plugin, run the way users run it: test files in a pytester directory, their outcomes and failure text.

Held here: the plugin is registered as a pytest11 entry point; assert_gradients_match passes a correct function
and fails a wrong one with pytest's own `E` lines (each failing check, the worst elements, never the arrays, the
helper's frames hidden); the gradcheck_report fixture gives a Report and adds its findings to a failing test's
output; JUnit XML carries the message; examples/test_my_softmax.py and the README's test files pass as documented.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy  # noqa: F401 - imported here, before pytester's in-process runs: numpy cannot be loaded twice
import pytest

import gradcheck_cli.api  # noqa: F401 - the same: the runs below import it, and pytester unloads what they import

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def installed() -> bool:
    """Whether gradcheck is installed here (then pytest loads the plugin through its entry point)."""
    return any(point.value == "gradcheck_cli.pytest_plugin" for point in metadata.entry_points(group="pytest11"))


@pytest.fixture
def run(pytester: pytest.Pytester):
    """Run pytest in the pytester directory as a user would: the plugin comes from the entry point when gradcheck
    is installed (CI), or is named with -p when these tests run from a checkout that is not."""
    plugin = [] if installed() else ["-p", "gradcheck_cli.pytest_plugin"]

    def run_pytest(*args: str) -> pytest.RunResult:
        return pytester.runpytest("-p", "no:cacheprovider", *plugin, *args)

    return run_pytest


def test_the_plugin_is_a_pytest11_entry_point():
    """pytest loads the plugin wherever gradcheck is installed, and only there: it is an entry point."""
    if not installed():
        pytest.skip("gradcheck is not installed in this environment (pip install . registers the entry point)")
    (point,) = [p for p in metadata.entry_points(group="pytest11") if p.name == "gradcheck"]
    assert point.value == "gradcheck_cli.pytest_plugin"


PASSING = '''
import numpy as np
from gradcheck_cli import assert_gradients_match


def softmax_cross_entropy(logits, targets):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    return -(targets * log_s).sum() / n, (np.exp(log_s) * targets.sum(axis=1, keepdims=True) - targets) / n


def test_helper():
    assert_gradients_match(softmax_cross_entropy, [[1.1, 2.2, 0.2, -1.7], [1000.0, 0.0, -1000.0, 3.0]], labels=[2, 0])


def test_fixture(gradcheck_report):
    report = gradcheck_report(softmax_cross_entropy, np.array([[1.0, 2.0, 3.0]]), targets=[[0.2, 0.3, 0.5]])
    assert report.passed
    assert {check.name for check in report.checks} == {"gradient", "jacobian", "supplied loss", "supplied gradient"}
'''

FAILING = '''
import numpy as np
from gradcheck_cli import assert_gradients_match


def label_twice(logits, targets):
    s = np.exp(logits - logits.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    return -(targets * np.log(s)).sum() / n, (s - 2 * targets) / n


LOGITS = np.zeros((256, 64))  # every s_i is exactly 1/64, so every gradient element is exact in binary
LABELS = np.arange(256) % 64


def test_helper():
    assert_gradients_match(label_twice, LOGITS, labels=LABELS)


def test_fixture(gradcheck_report):
    report = gradcheck_report(label_twice, LOGITS, LABELS, reduction="mean")
    assert report.passed
'''


def test_a_passing_file_passes(pytester, run):
    """A correct function passes through the helper and through the fixture: no false failure from the plugin."""
    pytester.makepyfile(test_passing=PASSING)
    run().assert_outcomes(passed=2)


def test_a_failing_file_fails_with_what_a_log_needs(pytester, run):
    """Both tests fail; the helper's failure is its message in `E` lines ending at the test's own line (no frame of
    gradcheck's), naming the check, the count (when counted) and the worst elements, never the 10,000 values."""
    pytester.makepyfile(test_failing=FAILING)
    result = run()
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    helper = output[output.index("___ test_helper ___"):output.index("___ test_fixture ___")]
    assert ">       assert_gradients_match(label_twice, LOGITS, labels=LABELS)" in helper
    assert "gradcheck_cli" not in helper  # the helper's own frames are hidden
    message = [line.removeprefix("E       ") for line in helper.splitlines() if line.startswith("E   ")]
    assert message[0].startswith("AssertionError: gradcheck: 1 of 4 checks failed on 256 x 64 logits (cross_entropy")
    assert re.fullmatch(r"supplied gradient \(the gradient you supplied vs gradcheck's reference\): "
                        r"(256 of 16384 elements mismatch|its worst element mismatches); "
                        r"max abs error 0\.00391, max rel error 0\.504", message[1])
    assert message[2].split() == ["index", "actual", "expected"]
    # At each label the reference is (1/64 - 1) / 256 = -63/16384 exactly; subtracting the label twice gives
    # -127/16384, 1/256 off (0.504 of it). All 256 are equally wrong: the first is the worst, as numpy.argmax says.
    assert message[3].split() == ["[0,", "0]", "-0.00775146484375", "-0.00384521484375"]
    if len(message) > 4:  # counted: the next four labels, then how many more
        assert [line.split()[:2] for line in message[4:8]] == [["[1,", "1]"], ["[2,", "2]"], ["[3,", "3]"], ["[4,", "4]"]]
        assert message[8:] == ["    ... and 251 more"]


def test_a_failing_fixture_test_shows_its_report(pytester, run):
    """`assert report.passed` reads as pytest's own explanation (the Report in one line), and the failure output
    gets a `gradcheck report` section with the report's failure message."""
    pytester.makepyfile(test_failing=FAILING)
    output = run().stdout.str()
    fixture = output[output.index("___ test_fixture ___"):]
    assert "where False = <gradcheck Report of 256 x 64 logits, 4 checks: FAIL: supplied gradient>.passed" in fixture
    section = fixture[fixture.index("gradcheck report"):]
    assert "gradcheck: 1 of 4 checks failed on 256 x 64 logits" in section
    assert "[0, 0]  -0.00775146484375" in section


def test_junit_xml_carries_the_failure(pytester, run):
    """pytest's own --junitxml records each failure with gradcheck's message: CI reports need nothing more."""
    pytester.makepyfile(test_failing=FAILING)
    run("--junitxml=report.xml")
    xml = (pytester.path / "report.xml").read_text(encoding="utf-8")
    assert xml.count("<failure") == 2
    assert "gradcheck: 1 of 4 checks failed on 256 x 64 logits" in xml


def test_the_example_file_passes_and_catches_each_planted_bug(pytester, run):
    """examples/test_my_softmax.py: the correct functions pass, each planted bug is an expected failure (so the
    file passes), and with --runxfail each fails with gradcheck's message naming the check it failed."""
    # (Copied under another name: a session that also collects examples/ has a test_my_softmax module already.)
    shutil.copy(EXAMPLES / "test_my_softmax.py", pytester.path / "test_example_of_my_softmax.py")
    shutil.copy(EXAMPLES / "my_softmax.py", pytester.path / "my_softmax.py")
    torch = 1 if _has_torch() else 0
    run().assert_outcomes(passed=2 + torch, skipped=1 - torch, xfailed=3)
    result = run("--runxfail")
    result.assert_outcomes(passed=2 + torch, skipped=1 - torch, failed=3)
    output = result.stdout.str()
    for test, failing in (("test_forgot_one_over_n", "supplied gradient"),
                          ("test_naive_softmax_cross_entropy", "supplied gradient"),
                          ("test_mse_factor_two", "supplied gradient")):
        section = output[output.index(f"___ {test} ___"):]
        assert re.search(rf"E       {failing} \(the gradient you supplied vs gradcheck's reference\): ", section)
    naive = output[output.index("___ test_naive_softmax_cross_entropy ___"):output.index("___ test_mse_factor_two ___")]
    assert "a value is not finite" in naive  # e^1000 overflowed: NaN, named as such


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def readme_test_files() -> list[str]:
    """The complete test files of the README's "Use from Python and pytest" section (python blocks with a test)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use from Python and pytest"):text.index("## Reliability: what is refused")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return [block for block in blocks if "def test_" in block]


def test_the_readme_test_files_pass(pytester, run):
    """Each complete test file in the README runs as written beside examples/my_softmax.py (torch's where torch is)."""
    files = readme_test_files()
    assert len(files) >= 2
    shutil.copy(EXAMPLES / "my_softmax.py", pytester.path / "my_softmax.py")
    tests = 0
    for k, block in enumerate(files):
        if "import torch" in block and not _has_torch():
            continue
        pytester.makepyfile(**{f"test_readme_{k}": block})
        tests += block.count("\ndef test_")
    run().assert_outcomes(passed=tests)


def test_the_readme_api_example_prints_what_it_says():
    """The README's example of check() prints, run from the repository's top, what the README says it prints."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use from Python and pytest"):text.index("## Reliability: what is refused")]
    (code,) = re.findall(r"```python\n(import gradcheck_cli\n.*?)```", section, flags=re.DOTALL)
    printed = re.search(r"```\n\nprints `(.*?)`", section[section.index(code):]).group(1)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == printed
