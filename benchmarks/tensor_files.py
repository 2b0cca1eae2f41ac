"""Tensor files (issue 18, item 1): a complete check from .npy and .safetensors against the floor, and its scaling.

Run in a venv where gradcheck is installed normally with the tensors extra (`pip install ".[tensors]"`), from
the repository root:

    python benchmarks/tensor_files.py [--quick] [--repeats 1] [--work DIR] [--only npy|safetensors|scaling]

Rows:
- 1,024 x 128,256 float32 logits from .npy (525 MB) with a .npy labels file: the complete reference check
  (`gradcheck check -q`) against the floor, a process that memory-maps the file with numpy.load(mmap_mode='r')
  and computes one stable float64 softmax over it in chunks of 64 rows (the least any checker must do).
  Target: at most 6x the floor's time, peak memory at most 1 GB.
- The same logits rounded to bfloat16 in .safetensors (263 MB), labels in the file, against the same floor.
- Scaling: the .npy check at four N (C = 128,256) and four C (N = 1,024); linear means the time per element
  stays flat.

Every figure is a whole process; the check and the floor alternate (A B A B) so load from elsewhere hits both,
and each row gives the CPU time (user + system) beside the wall time: on a machine shared with other jobs the
wall time counts the waits for a core, the CPU time the work.
Peak memory is the child's largest resident size (wait4), which counts the pages of a memory-mapped file it
touched. A child starts with its parent's resident size (fork), so the files are written by processes of their
own and this one stays small. --quick uses small sizes: a smoke run of the script, not figures to quote.
"""

from __future__ import annotations

import argparse
import os
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
FLOOR = """
import sys, numpy as np
z = np.load(sys.argv[1], mmap_mode="r")
total = 0.0
for start in range(0, z.shape[0], 64):
    x = np.asarray(z[start:start + 64], dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    total += float((e / e.sum(axis=1, keepdims=True))[:, 0].sum())
print(total)
"""


Run = tuple[float, int, int, float]
ROWS = ("npy", "safetensors", "scaling")


def run(command: list[str]) -> Run:
    """Wall seconds, peak resident MB, exit code and CPU seconds (user + system) of one process. On a machine
    shared with other jobs the wall time measures the queue as much as the work: the CPU time does not."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - start, usage.ru_maxrss >> 10, os.waitstatus_to_exitcode(status), cpu


def alternate(first: list[str], second: list[str], repeats: int) -> tuple[list[Run], ...]:
    ours, floor = [], []
    for _ in range(repeats):
        ours.append(run(first))
        floor.append(run(second))
    return ours, floor


def make(kind: str, *args: object) -> None:
    """Write a file in a process of its own (see the docstring: peak memory)."""
    subprocess.run([PY, __file__, "--make", kind, *map(str, args)], check=True)


def write_npy(path: Path, rows: int, classes: int, seed: int = 0) -> None:
    """float32 logits of scale 3, written 64 rows at a time (the file may be bigger than memory allows twice)."""
    rng = np.random.default_rng(seed)
    logits = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, classes))
    for start in range(0, rows, 64):
        stop = min(start + 64, rows)
        logits[start:stop] = rng.normal(scale=3.0, size=(stop - start, classes)).astype(np.float32)
    logits.flush()
    del logits


def write_labels(path: Path, rows: int, classes: int) -> None:
    np.save(path, np.random.default_rng(1).integers(0, classes, rows))


def write_bf16_safetensors(path: Path, npy: Path, labels_path: Path) -> None:
    """The .npy logits rounded to bfloat16, with the labels, in one .safetensors file; also its own .npy of the
    same bfloat16 values as float32 (exact), for the floor to read."""
    import ml_dtypes
    from safetensors.numpy import save_file

    logits = np.load(npy, mmap_mode="r").astype(ml_dtypes.bfloat16)
    save_file({"logits": logits, "labels": np.load(labels_path).astype(np.int64)}, str(path))
    np.save(path.with_suffix(".f32.npy"), logits.astype(np.float32))


def report(name: str, ours: list[Run], floor: list[Run] | None, ratio_target: float | None = None,
           memory_mb: int | None = None) -> None:
    seconds, cpu = statistics.median(r[0] for r in ours), statistics.median(r[3] for r in ours)
    peak = max(r[1] for r in ours)
    codes = sorted({r[2] for r in ours})
    line = f"{name}: {seconds:.2f} s (CPU {cpu:.2f} s), peak {peak} MB, exit {codes}"
    verdicts = []
    if floor is not None:
        floor_seconds, floor_cpu = statistics.median(r[0] for r in floor), statistics.median(r[3] for r in floor)
        ratio, cpu_ratio = seconds / floor_seconds, cpu / floor_cpu
        line += (f"; floor {floor_seconds:.2f} s (CPU {floor_cpu:.2f} s, peak {max(r[1] for r in floor)} MB), "
                 f"ratio {ratio:.1f}x (CPU {cpu_ratio:.1f}x)")
        if ratio_target is not None:
            verdicts.append(f"<= {ratio_target:g}x {'met' if ratio <= ratio_target else 'NOT met'} "
                            f"(CPU: {'met' if cpu_ratio <= ratio_target else 'NOT met'})")
    if memory_mb is not None:
        verdicts.append(f"<= {memory_mb} MB {'met' if peak <= memory_mb else 'NOT met'}")
    print(line + (f" [{'; '.join(verdicts)}]" if verdicts else ""), flush=True)


def check_command(logits: Path, labels: Path | None = None) -> list[str]:
    return [GRADCHECK, "check", "-i", str(logits), "-q", *(["--labels-file", str(labels)] if labels else [])]


def scaling(work: Path, rows: int, classes: int, repeats: int) -> None:
    """The .npy check at four N (C fixed) and four C (N fixed): linear means the time per element stays flat."""
    for label, sizes in (("N", [(rows // 8 * k, classes) for k in (1, 2, 4, 8)]),
                         ("C", [(rows, classes // 8 * k) for k in (1, 2, 4, 8)])):
        for n, c in sizes:
            path, label_file = work / f"{n}x{c}.npy", work / f"{n}x{c}.labels.npy"
            make("npy", path, n, c)
            make("labels", label_file, n, c)
            ours = [run(check_command(path, label_file)) for _ in range(repeats)]
            seconds, cpu = statistics.median(r[0] for r in ours), statistics.median(r[3] for r in ours)
            report(f"scaling in {label}: {n} x {c} ({seconds / (n * c) * 1e9:.1f} ns per element, CPU "
                   f"{cpu / (n * c) * 1e9:.1f})", ours, None)
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of this script")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs per row (the median is shown)")
    parser.add_argument("--work", type=Path, default=None, help="where the files go (default: a temporary folder)")
    parser.add_argument("--only", choices=ROWS, action="append",
                        help="run only this row (repeatable): npy, safetensors or scaling; default all")
    parser.add_argument("--make", nargs="+", help=argparse.SUPPRESS)  # the writer processes
    args = parser.parse_args()
    if args.make:
        kind, path, *rest = args.make
        if kind == "bf16":
            write_bf16_safetensors(Path(path), Path(rest[0]), Path(rest[1]))
        else:
            (write_npy if kind == "npy" else write_labels)(Path(path), int(rest[0]), int(rest[1]))
        return
    rows, classes = (64, 8_016) if args.quick else (1_024, 128_256)
    wanted = set(args.only or ROWS)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {rows} x {classes}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gradcheck-tensor-bench-", dir=args.work) as folder:
        work = Path(folder)
        floor = [PY, "-c", FLOOR]
        npy, labels_path = work / "logits.npy", work / "labels.npy"
        make("npy", npy, rows, classes)
        make("labels", labels_path, rows, classes)
        if "npy" in wanted:
            ours, base = alternate(check_command(npy, labels_path), [*floor, str(npy)], args.repeats)
            report(f".npy float32 {rows} x {classes}", ours, base, 6.0, 1024)
        if "safetensors" in wanted:
            safetensors = work / "logits.safetensors"
            make("bf16", safetensors, npy, labels_path)
            floor_input = safetensors.with_suffix(".f32.npy")
            ours, base = alternate(check_command(safetensors), [*floor, str(floor_input)], args.repeats)
            report(f".safetensors bfloat16 {rows} x {classes}", ours, base, 6.0, 1024)
        if "scaling" in wanted:
            scaling(work, rows, classes, args.repeats)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
