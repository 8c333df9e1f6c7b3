"""Start-up of `lipkit estimate small.mat -m naive` with two typer versions, interleaved.

A: this checkout's environment (typer < 0.29, the pin); B: another environment with the
same torch and typer >= 0.29 (e.g. the benchmark environment installed before the pin).
Both run this checkout's source (PYTHONPATH). Writes the small weight file first:

    python benchmarks/bench_startup_typer.py 15 [A-python] [B-python]
"""
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
A = sys.argv[2] if len(sys.argv) > 2 else str(ROOT / ".venv" / "bin" / "python")
B = sys.argv[3] if len(sys.argv) > 3 else str(ROOT / ".bench-venv" / "bin" / "python")
env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
subprocess.run([A, "-c", (
    "import numpy as np, scipy.io; r = np.random.default_rng(0); c = np.empty((1, 2), object);"
    " c[0, 0], c[0, 1] = r.standard_normal((16, 8)), r.standard_normal((4, 16));"
    " scipy.io.savemat('/tmp/small.mat', {'weights': c})")], check=True)
cmds = {
    "torch (A)": [A, "-c", "import torch"],
    "naive, A": [A, "-m", "lipkit", "estimate", "/tmp/small.mat", "-m", "naive"],
    "torch (B)": [B, "-c", "import torch"],
    "naive, B": [B, "-m", "lipkit", "estimate", "/tmp/small.mat", "-m", "naive"],
}
times = {k: [] for k in cmds}
loads = []
for _ in range(int(sys.argv[1])):
    for k, c in cmds.items():
        started = time.perf_counter()
        subprocess.run(c, env=env, check=True, capture_output=True)
        times[k].append(time.perf_counter() - started)
    loads.append(os.getloadavg()[0])
for k, v in times.items():
    print(f"{k}: median {statistics.median(v):.3f} s")
ta, tb = statistics.median(times["torch (A)"]), statistics.median(times["torch (B)"])
na, nb = statistics.median(times["naive, A"]), statistics.median(times["naive, B"])
print(f"above torch: A {na - ta:.3f} s (ratio {na / ta:.3f}); B {nb - tb:.3f} s (ratio "
      f"{nb / tb:.3f}); load {min(loads):.1f}-{max(loads):.1f}")
