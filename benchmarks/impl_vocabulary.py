"""Issue 18's --impl target: torch's own F.cross_entropy (loss only, autograd gives the gradient) on N x 128,256
bfloat16 logits on the CPU, beside the time torch itself takes for its forward and backward.

Run from the repository root with the Python that has torch (gradcheck is imported from the checkout):

    /tmp/torchvenv/bin/python benchmarks/impl_vocabulary.py [--rows 64 1024] [--classes 128256]

For each size: the logits (standard normal times 2, float32) and labels are written as .npy into a temporary
directory (removed at the end), torch's forward + backward of the same kernel is timed in this process (best of
3), then `gradcheck check -i X.npy --labels-file Y.npy --impl examples/torch_kernels.py:fused_ce --framework
torch --dtype bfloat16` runs as a child. Its peak memory is the largest sum, over the command and its --impl
worker, of their proportional set sizes (PSS: pages the two share, such as the memory files arrays cross in, are
counted once), sampled every 0.1 s from /proc; the machine's load (uptime) is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KERNEL = f"{ROOT / 'examples' / 'torch_kernels.py'}:fused_ce"


def write_input(directory: Path, rows: int, classes: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    logits = np.lib.format.open_memmap(directory / "logits.npy", mode="w+", dtype=np.float32, shape=(rows, classes))
    for start in range(0, rows, 64):  # a chunk at a time: the input itself may be larger than memory allows twice
        logits[start:start + 64] = rng.standard_normal((min(64, rows - start), classes), dtype=np.float32) * 2
    logits.flush()
    del logits
    np.save(directory / "labels.npy", rng.integers(0, classes, rows))
    return directory / "logits.npy", directory / "labels.npy"


def torch_forward_backward(logits_path: Path, labels_path: Path) -> float:
    """Best of 3: the bf16 tensor made from the file, fused_ce's forward and autograd's backward."""
    import torch

    sys.path.insert(0, str(ROOT / "examples"))
    from torch_kernels import fused_ce

    labels = torch.from_numpy(np.load(labels_path))
    logits = torch.from_numpy(np.load(logits_path)).to(torch.bfloat16)
    best = float("inf")
    for _ in range(3):
        z = logits.clone().requires_grad_(True)
        start = time.perf_counter()
        (gradient,) = torch.autograd.grad(fused_ce(z, labels), z)
        best = min(best, time.perf_counter() - start)
        del gradient, z
    return best


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """The process and its descendants (the --impl worker), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        found.append(current := stack.pop())
        stack.extend(children.get(current, []))
    return found


def run_gradcheck(logits_path: Path, labels_path: Path) -> tuple[float, tuple[float, float, float], int, str]:
    """Wall time, peak PSS (GB) of the command and its worker together, of the command alone and of the worker
    alone (each its own peak), exit status and the verdict line."""
    command = [sys.executable, "-m", "gradcheck_cli", "check", "-i", str(logits_path), "--labels-file",
               str(labels_path), "--impl", KERNEL, "--framework", "torch", "--dtype", "bfloat16", "-q"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = command = worker = 0
    while process.poll() is None:
        sizes = {pid: _pss_kb(pid) for pid in _tree(process.pid)}
        peak = max(peak, sum(sizes.values()))
        command = max(command, sizes.get(process.pid, 0))
        worker = max(worker, sum(size for pid, size in sizes.items() if pid != process.pid))
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    out, err = process.communicate()
    peaks = (peak / 2**20, command / 2**20, worker / 2**20)
    return elapsed, peaks, process.returncode, (out.strip().splitlines() or err.strip().splitlines() or [""])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--classes", type=int, default=128_256)
    arguments = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, {os.cpu_count()} cores")
    for rows in arguments.rows:
        with tempfile.TemporaryDirectory() as directory:
            logits_path, labels_path = write_input(Path(directory), rows, arguments.classes)
            torch_time = torch_forward_backward(logits_path, labels_path)
            elapsed, peak, status, verdict = run_gradcheck(logits_path, labels_path)
        print(f"{rows} x {arguments.classes:,} bf16: gradcheck {elapsed:.1f} s, peak {peak[0]:.2f} GB (command "
              f"{peak[1]:.2f}, worker {peak[2]:.2f}), exit {status} ({verdict}); torch forward + backward "
              f"{torch_time:.2f} s ({elapsed / torch_time:.0f}x)", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
