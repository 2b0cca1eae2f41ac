"""Start-up, batch and streaming figures for gradcheck, side by side with torch and JAX when installed.

Run in a venv where gradcheck is installed normally (`pip install .`, byte-compiled as users get it); the
peers run in whichever Python has them (gradcheck's venv need not hold torch or jax):

    python benchmarks/performance.py [--rows 1000000] [--repeats 9] [--torch-python /work/venvs/torch/bin/python]

Every figure is a whole process, timed as the median of several runs, and reported as a ratio against
its reference measured in the same run, because the machine (2 shared cores) is noisy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PY = sys.executable
GRADCHECK = shutil.which("gradcheck") or str(Path(PY).with_name("gradcheck"))
TORCH_GRADCHECK = """
import torch
z = torch.randn(128, 100, dtype=torch.float64, requires_grad=True)
y = torch.randint(0, 100, (128,))
assert torch.autograd.gradcheck(lambda z: torch.nn.functional.cross_entropy(z, y), (z,))
"""
JAX_CHECK = """
import jax, jax.numpy as jnp
from jax.test_util import check_grads
jax.config.update("jax_enable_x64", True)
z = jax.random.normal(jax.random.PRNGKey(0), (128, 100))
y = jax.nn.one_hot(jnp.arange(128) % 100, 100)
check_grads(lambda z: -(y * jax.nn.log_softmax(z)).sum() / 128, (z,), order=1)
"""


# Runs a command and prints its peak memory (KB) and exit code.
PROBE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
)


def timed(command: list[str], repeats: int, codes: tuple[str, ...] = ("0", "1")) -> tuple[float, int]:
    """Median wall time of a whole process, and its peak resident memory in MB (from the last run)."""
    times, peak = [], 0
    for _ in range(repeats):
        probe = [PY, "-c", PROBE, *command]
        start = time.perf_counter()
        out = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.split()
        times.append(time.perf_counter() - start)
        peak = int(out[0]) // 1024
        if out[1] not in codes:  # a failed import would time nothing
            raise SystemExit(f"{command} exited {out[1]}")
    return statistics.median(times), peak


def paired(first: list[str], second: list[str], repeats: int) -> tuple[float, float]:
    """Median times of two commands run alternately, so that load from other users hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for command, spent in zip((first, second), times, strict=True):
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


MISSED: list[str] = []
UNMEASURED: list[str] = []


def line(name: str, value: float, reference: float, target: float, unit: str = "s") -> None:
    ratio = value / reference
    print(f"  {name:58} {value:8.3f} {unit} / {reference:8.3f} {unit} = {ratio:5.2f}x "
          f"(target <= {target:g}x: {verdict(name, ratio <= target)})")


def verdict(name: str, met: bool) -> str:
    if not met:
        MISSED.append(name)
    return "met" if met else "NOT met"


def _has(python: str, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the streaming CSV (10 classes)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--torch-python", default=PY, help="a Python with torch (default: this one)")
    parser.add_argument("--jax-python", default=PY, help="a Python with jax (default: this one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gradcheck-bench-"))
    rng = np.random.default_rng(0)

    print("start-up (one-row check with tables vs importing numpy, click, rich.console, rich.table)")
    bare, ours = paired([PY, "-c", "import numpy, click, rich.console, rich.table"],
                        [GRADCHECK, "check", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"], args.repeats * 4)
    line("gradcheck check (1 row, tables)", ours, bare, 1.15)

    print("batch (full element-by-element check of gradient and Jacobian, whole process)")
    batch = work / "batch.json"
    batch.write_text(json.dumps({"logits": (rng.standard_normal((1024, 100)) * 3).tolist(),
                                 "labels": rng.integers(0, 100, 1024).tolist()}))
    ours, _ = timed([GRADCHECK, "check", "-i", str(batch)], args.repeats)
    if _has(args.torch_python, "torch"):
        torch_time, _ = timed([args.torch_python, "-c", TORCH_GRADCHECK], 3, ("0",))
        line("gradcheck 1024x100 vs torch.autograd.gradcheck 128x100", ours, torch_time, 0.1)
        start_torch, _ = timed([args.torch_python, "-c", "import torch"], 3, ("0",))
        print(f"  (python -c 'import torch' alone: {start_torch:.3f} s)")
    else:
        print(f"  gradcheck 1024x100: {ours:.3f} s (torch not installed: no ratio)")
        UNMEASURED.append("the ratio to torch (see --torch-python)")
    if _has(args.jax_python, "jax"):
        jax_time, _ = timed([args.jax_python, "-c", JAX_CHECK], 3, ("0",))
        line("gradcheck 1024x100 vs jax check_grads 128x100 (one direction)", ours, jax_time, 1.0)
    else:
        UNMEASURED.append("the ratio to JAX (see --jax-python)")

    print(f"streaming ({args.rows:,} x 10 CSV with a header and a label column)")
    big = work / "big.csv"
    with big.open("w") as handle:
        handle.write(",".join(f"z{c}" for c in range(10)) + ",label\n")
        for start in range(0, args.rows, 100_000):
            rows = min(100_000, args.rows - start)
            block = np.column_stack([rng.standard_normal((rows, 10)) * 3, rng.integers(0, 10, rows)])
            np.savetxt(handle, block, delimiter=",", fmt=["%.6f"] * 10 + ["%d"])
    loadtxt, _ = timed([PY, "-c", f"import numpy; numpy.loadtxt({str(big)!r}, delimiter=',', skiprows=1)"], 3)
    ours, peak = timed([GRADCHECK, "check", "-i", str(big)], 3)
    line("gradcheck check (streamed) vs numpy.loadtxt of the file", ours, loadtxt, 1.5)
    print(f"  peak memory of gradcheck: {peak} MB (target <= 200 MB: {verdict('streamed peak memory', peak <= 200)}; "
          f"the file is {big.stat().st_size >> 20} MB)")

    print("large C (one row of 3000 classes, tables)")
    row = ",".join(f"{v:.6f}" for v in rng.standard_normal(3000) * 5)
    ours, peak = timed([GRADCHECK, "check", "--logits", row, "--labels", "7"], 3)
    jacobian = 3000 * 3000 * 8 >> 20
    print(f"  {ours:.3f} s, peak memory {peak} MB (target: below the {jacobian} MB of a 3000 x 3000 Jacobian "
          f"alone: {verdict('large C memory', peak < jacobian)})")
    shutil.rmtree(work)
    print("every target met" if not MISSED else f"NOT met: {', '.join(MISSED)}")
    if UNMEASURED:
        print(f"not measured: {', '.join(UNMEASURED)}")


if __name__ == "__main__":
    main()
