"""Training-step cost of Lipschitz-constrained layers, as a ratio to the plain torch layer.

One training step is forward + backward + ``torch.optim.Adam.step`` (mean-squared error to a
fixed random target). Two cases:

- ``linear``: ``nn.Linear(512, 512)`` on a batch of 256;
- ``conv``: ``nn.Conv2d(64, 64, 3, padding=1)`` on a batch of 64 inputs of 32 x 32.

Every method of a case is built, warmed up and timed in the same process, interleaved: each
round times a few steps of every method, in a shuffled order, and the rounds repeat, so that
machine noise (frequency scaling, the allocator) affects all rows alike. Other load on the
machine is kept out (see :class:`Quiet`): the script waits for a quiet machine before each
turn and discards a turn disturbed by another process, and the rounds go on until every row
has its steps (at most three times the rounds planned). A row's figure is the median over
its kept steps; its ratio is that median over the plain layer's, and the spread is the
interquartile range of the ratios of the two in the same round.

After timing, each layer's certified Lipschitz bound is reported (inference mode):
``lipkit.nn.lipschitz_bound`` for lipkit's layers, and for the others the exact operator norm
(an SVD) of a dense weight or, for a convolution, the sound upper bound
``lipkit.nn.conv_operator_norm_upper`` for the operator on 32 x 32 inputs.

Peers: ``torch.nn.utils.parametrizations`` (``spectral_norm``, ``orthogonal``) and, when it
is installed, deel-torchlip and (cases ``sota-*``) orthogonium. Neither is a lipkit
dependency: install them in a separate virtualenv (see BENCHMARKS.md); without them, their
rows read "not installed".

Usage:
    python benchmarks/bench_layers.py [--steps N] [--case linear conv] [--device cpu]
        [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn.utils import parametrizations

import lipkit.nn as lnn
from revision import lipkit_revision

try:  # an optional peer, benchmarked only where it is installed
    import deel.torchlip as torchlip
except ImportError:  # pragma: no cover - depends on the environment
    torchlip = None
try:  # the peer of the state-of-the-art layers (AOC, SOC, SLL), likewise optional
    import orthogonium
    from orthogonium.layers.conv.adaptiveSOC.ortho_conv import AdaptiveSOCConv2d
    from orthogonium.layers.conv.AOC.ortho_conv import AdaptiveOrthoConv2d
    from orthogonium.layers.conv.SLL.sll_layer import (
        SDPBasedLipschitzDense,
        SDPBasedLipschitzResBlock,
    )
except ImportError:  # pragma: no cover - depends on the environment
    orthogonium = None

INPUT_SIZE = (32, 32)


@dataclass
class Case:
    """One layer shape: the plain layer, its input and target shapes."""

    name: str
    title: str
    plain: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    default_steps: int


@dataclass
class Method:
    """One row: how to build the layer, and how to certify its Lipschitz constant."""

    name: str
    library: str
    description: str
    build: Callable[[], nn.Module] | None
    bound: Callable[[nn.Module], float] | None
    missing: str | None = None
    note: str = ""
    bound_at_build: bool = False  # certify right after building (an exported copy)
    # filled in by the benchmark
    layer: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    turns: dict[int, tuple[list[float], float]] = field(default_factory=dict)
    bound_value: float | None = None


def _linear() -> nn.Linear:
    return nn.Linear(512, 512)


def _conv() -> nn.Conv2d:
    return nn.Conv2d(64, 64, 3, padding=1)


CASES = {
    "linear": Case("linear", "Linear 512x512, batch 256", _linear, (256, 512), (256, 512), 150),
    "conv": Case(
        "conv", "Conv2d 64->64 3x3 pad 1, 32x32, batch 64", _conv,
        (64, 64, *INPUT_SIZE), (64, 64, *INPUT_SIZE), 40,
    ),
    "sota-linear": Case("sota-linear", "State-of-the-art dense layers, 512 features, batch 256",
                        _linear, (256, 512), (256, 512), 100),
    "sota-conv": Case(
        "sota-conv", "State-of-the-art conv layers, 64->64 3x3, 32x32, batch 64", _conv,
        (64, 64, *INPUT_SIZE), (64, 64, *INPUT_SIZE), 24,
    ),
}


# -- certified bounds ---------------------------------------------------------------------
def _on_cpu(layer: nn.Module) -> nn.Module:
    # the bounds are computed in float64 on the CPU, whatever device the layer trained on
    return copy.deepcopy(layer).cpu().eval()


def lipkit_bound(layer: nn.Module) -> float:
    """lipkit's own certificate for one of its constrained layers (inference mode)."""
    return lnn.lipschitz_bound(_on_cpu(layer))


def operator_bound(layer: nn.Module) -> float:
    """Exact operator norm of a dense layer; sound upper bound for a conv on 32 x 32."""
    layer = _on_cpu(layer)
    with torch.no_grad():
        weight = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        return lnn.linear_operator_norm(weight)
    return lnn.conv_operator_norm_upper(weight, lnn.ConvGeometry.of(layer, INPUT_SIZE))


# -- the rows -----------------------------------------------------------------------------
def _torchlip(name: str, *args, **kwargs) -> tuple[Callable[[], nn.Module] | None, str | None]:
    if torchlip is None:
        return None, "not installed"
    kind = getattr(torchlip, name, None)
    if kind is None:
        return None, f"deel-torchlip has no {name}"
    return (lambda: kind(*args, **kwargs)), None


def _orthogonium(build: Callable[[], nn.Module]):
    if orthogonium is None:
        return None, "not installed"
    return build, None


def _with_input(layer: nn.Module) -> nn.Module:
    with torch.no_grad():  # records the input size of a conv (SOC, Cayley)
        layer(torch.zeros(1, 64, *INPUT_SIZE))
    return layer


def _exported(make: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        layer = make()
        if isinstance(layer, nn.Conv2d):
            with torch.no_grad():  # a forward pass records the input size
                layer(torch.zeros(1, 64, *INPUT_SIZE))
        return lnn.export(layer).train()

    return build


def methods_for(case: str) -> list[Method]:
    """The rows of one case, the plain layer first."""
    rows: list[Method] = []

    def add(name, library, description, build, bound, missing=None, note="",
            bound_at_build=False):
        rows.append(Method(name, library, description, build, bound, missing, note,
                           bound_at_build))

    if case == "linear":
        add("plain", "torch", "nn.Linear, unconstrained", _linear, operator_bound)
        add("clip", "lipkit", "weight_clip(lipschitz=1): clamp entries to 1/512",
            lambda: lnn.weight_clip(_linear(), lipschitz=1.0), lipkit_bound)
        add("spectral", "lipkit", "spectral_norm: W / sigma_1, 1 power iteration",
            lambda: lnn.spectral_norm(_linear()), lipkit_bound)
        add("bjorck (projected)", "lipkit",
            "bjorck: polar factor, backward by tangent projection (default)",
            lambda: lnn.bjorck(_linear()), lipkit_bound)
        add("bjorck (autograd)", "lipkit", "bjorck(backward='autograd'): through iterations",
            lambda: lnn.bjorck(_linear(), backward="autograd"), lipkit_bound)
        add("aol", "lipkit", "aol: W diag(d), d from |W^T W| row sums",
            lambda: lnn.aol(_linear()), lipkit_bound)
        add("exported spectral", "lipkit", "export(spectral_norm(Linear)): a plain nn.Linear",
            _exported(lambda: lnn.spectral_norm(_linear())), operator_bound,
            note="bound at export; trained on, it is unconstrained", bound_at_build=True)
        add("spectral_norm", "torch", "parametrizations.spectral_norm, 1 power iteration",
            lambda: parametrizations.spectral_norm(_linear()), operator_bound)
        add("orthogonal", "torch", "parametrizations.orthogonal (matrix_exp)",
            lambda: parametrizations.orthogonal(_linear()), operator_bound)
        build, missing = _torchlip("SpectralLinear", 512, 512)
        add("SpectralLinear", "deel-torchlip", "torch spectral_norm + Björck (<= 15 it.)",
            build, operator_bound, missing)
        build, missing = _torchlip("FrobeniusLinear", 512, 512)
        add("FrobeniusLinear", "deel-torchlip", "rows / their norms (disjoint neurons)",
            build, operator_bound, missing,
            note="each output 1-Lipschitz; the layer up to sqrt(512)")
    elif case == "conv":
        add("plain", "torch", "nn.Conv2d, unconstrained", _conv, operator_bound)
        add("clip", "lipkit", "weight_clip(lipschitz=1): clamp entries to 1/576",
            lambda: lnn.weight_clip(_conv(), lipschitz=1.0), lipkit_bound)
        add("spectral (operator)", "lipkit",
            "spectral_norm: conv OPERATOR on 32x32 / sigma_1, 1 power iteration",
            lambda: lnn.spectral_norm(_conv(), input_size=INPUT_SIZE), lipkit_bound)
        add("aol", "lipkit", "aol: kernel autocorrelation rescaling",
            lambda: lnn.aol(_conv()), lipkit_bound)
        add("bcop", "lipkit", "bcop: orthogonal 3x3 kernel from 5 Björck matrices",
            lambda: lnn.bcop(_conv()), lipkit_bound)
        add("exported spectral", "lipkit", "export(spectral_norm(Conv2d)): a plain nn.Conv2d",
            _exported(lambda: lnn.spectral_norm(_conv(), input_size=INPUT_SIZE)),
            operator_bound, note="bound at export; trained on, it is unconstrained",
            bound_at_build=True)
        add("spectral_norm (kernel)", "torch",
            "parametrizations.spectral_norm of the (64, 576) reshaped kernel",
            lambda: parametrizations.spectral_norm(_conv()), operator_bound,
            note="bounds the reshaped kernel, not the operator")
        build, missing = _torchlip("SpectralConv2d", 64, 64, 3, padding=1)
        add("SpectralConv2d", "deel-torchlip",
            "spectral_norm + Björck of the reshaped kernel, x 1/3",
            build, operator_bound, missing)
        build, missing = _torchlip("FrobeniusConv2d", 64, 64, 3, padding=1)
        add("FrobeniusConv2d", "deel-torchlip", "kernel / ||kernel||_F, x 1/3",
            build, operator_bound, missing)
    elif case == "sota-linear":
        add("plain", "torch", "nn.Linear, unconstrained", _linear, operator_bound)
        add("sll", "lipkit", "SLLLinear(512, 512): x - V^T relu(V x + b), V = sqrt2 T^-1/2 P",
            lambda: lnn.SLLLinear(512, 512), lipkit_bound)
        build, missing = _orthogonium(lambda: SDPBasedLipschitzDense(512, 512, 512))
        add("sll", "orthogonium", "SDPBasedLipschitzDense(512, 512, inner 512)", build, None,
            missing)
        add("cpl", "lipkit", "CPLLinear(512, 512): V spectrally normalized to sqrt 2",
            lambda: lnn.CPLLinear(512, 512), lipkit_bound)
    elif case == "sota-conv":
        add("plain", "torch", "nn.Conv2d, unconstrained", _conv, operator_bound)
        add("aoc", "lipkit", "aoc(Conv2d): exact orthogonal kernel (BCOP at stride 1)",
            lambda: lnn.aoc(_conv()), lipkit_bound)
        build, missing = _orthogonium(lambda: AdaptiveOrthoConv2d(
            64, 64, 3, padding="same", padding_mode="zeros"))
        add("aoc", "orthogonium", "AdaptiveOrthoConv2d(64, 64, 3), zero padding", build,
            operator_bound, missing)
        add("soc", "lipkit", "SkewOrthogonalConv2d(64, 3): 6 terms (train), 12 (eval)",
            lambda: _with_input(lnn.SkewOrthogonalConv2d(64, 3)), lipkit_bound)
        add("soc", "lipkit", "SkewOrthogonalConv2d(64, 3, terms=3): orthogonium's truncation",
            lambda: _with_input(lnn.SkewOrthogonalConv2d(64, 3, terms=3)), lipkit_bound)
        build, missing = _orthogonium(lambda: AdaptiveSOCConv2d(
            64, 64, 3, padding="same", padding_mode="zeros"))
        add("soc", "orthogonium", "AdaptiveSOCConv2d(64, 64, 3): explicit kernel (3 terms "
            "in 0.0.4), zero padding",
            build, operator_bound, missing)
        add("cayley", "lipkit", "CayleyConv2d(64, 3): FFT, per-frequency Cayley transform",
            lambda: _with_input(lnn.CayleyConv2d(64, 3)), lipkit_bound,
            note="circular; no orthogonium peer")
        add("sll", "lipkit", "SLLConv2d(64, 64): residual, 3x3 conv and its transpose",
            lambda: lnn.SLLConv2d(64, 64), lipkit_bound)
        build, missing = _orthogonium(lambda: SDPBasedLipschitzResBlock(64, 1, 3))
        add("sll", "orthogonium", "SDPBasedLipschitzResBlock(64, inner factor 1, 3)", build,
            None, missing)
        add("cpl", "lipkit", "CPLConv2d(64, 64): operator spectral norm on 32x32 to sqrt 2",
            lambda: lnn.CPLConv2d(64, 64, input_size=INPUT_SIZE), lipkit_bound,
            note="no orthogonium peer")
    else:
        raise ValueError(f"unknown case {case!r}")
    return rows


# -- timing -------------------------------------------------------------------------------
_PROBE_SLOWDOWN = 1.5  # a turn whose probe ran this much slower than its best is discarded
_OTHERS_BUSY = 0.05  # ... or during which other processes used this share of the CPUs
_MAX_WAIT_SECONDS = 30.0  # longest wait for a quiet machine before a turn


class Quiet:
    """Detects turns disturbed by other load on the machine, and waits for it to pass.

    A fixed workload (three 512 x 512 matrix products, a few ms) is timed before and after
    every turn; on Linux, ``/proc/stat`` and ``/proc/self/stat`` also tell how much CPU time
    other processes took during the turn. On a shared machine another process on one of
    the two cores makes torch's two threads wait for each other, slowing a step many times
    over, and long steps more often than short ones, which would bias the ratios.
    """

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.a = torch.randn(512, 512, generator=generator)
        self.b = torch.randn(512, 512, generator=generator)
        self.best = math.inf
        self.waited = 0.0
        self.max_wait = _MAX_WAIT_SECONDS
        self._cpus = os.cpu_count() or 1
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def probe(self) -> float:
        start = time.perf_counter()
        for _ in range(3):
            torch.mm(self.a, self.b)
        seconds = time.perf_counter() - start
        self.best = min(self.best, seconds)
        return seconds

    def fast(self, seconds: float) -> bool:
        return seconds <= _PROBE_SLOWDOWN * self.best

    def wait(self) -> None:
        """Sleep while the probe is slow (other load), at most _MAX_WAIT_SECONDS."""
        start = time.perf_counter()
        while not self.fast(self.probe()) and time.perf_counter() - start < self.max_wait:
            time.sleep(0.5)
        self.waited += time.perf_counter() - start

    def _busy_ticks(self) -> tuple[int, int] | None:
        """(CPU ticks of all processes, ticks of this one), or None off Linux."""
        try:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
            with open("/proc/self/stat") as own:
                mine = own.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, int(mine[11]) + int(mine[12])  # utime + stime

    def start(self) -> tuple:
        return self.probe(), self._busy_ticks(), time.perf_counter()

    def end(self, started: tuple) -> tuple[float, float]:
        """(slowest probe around the turn, other processes' share of the CPUs during it)."""
        before, ticks, start = started
        after_ticks, elapsed = self._busy_ticks(), time.perf_counter() - start
        others = 0.0
        if ticks is not None and after_ticks is not None:
            other_ticks = (after_ticks[0] - ticks[0]) - (after_ticks[1] - ticks[1])
            # the tick counters are coarse (10 ms): ignore a single stray tick
            if other_ticks > 1:
                others = other_ticks / (self._ticks * elapsed * self._cpus)
        return max(before, self.probe()), others

    def kept(self, turn: tuple[list[float], float, float]) -> bool:
        _, slowest, others = turn
        return self.fast(slowest) and others <= _OTHERS_BUSY


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(method: Method, x: torch.Tensor, target: torch.Tensor) -> None:
    method.optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(method.layer(x), target)
    loss.backward()
    method.optimizer.step()


def kept_times(row: Method, quiet: Quiet) -> list[float]:
    return [t for turn in row.turns.values() if quiet.kept(turn) for t in turn[0]]


def _times_for_report(row: Method, quiet: Quiet) -> tuple[list[float], bool]:
    """The kept steps, or every step (flagged) when the machine was never quiet."""
    kept = kept_times(row, quiet)
    if kept:
        return kept, False
    return [t for turn in row.turns.values() for t in turn[0]], True


def run_case(case: Case, device: torch.device, steps: int, warmup: int, chunk: int,
             seed: int, max_rounds_factor: int = 3,
             max_wait: float = _MAX_WAIT_SECONDS) -> tuple[list[Method], Quiet, int]:
    rows = methods_for(case.name)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(case.input_shape, generator=generator).to(device)
    target = torch.randn(case.output_shape, generator=generator).to(device)
    active = [row for row in rows if row.build is not None]
    for row in active:
        torch.manual_seed(seed)  # the same initial weight wherever the method keeps it
        row.layer = row.build()
        if row.bound_at_build:
            row.bound_value = row.bound(row.layer)
        row.layer = row.layer.to(device).train()
        row.optimizer = torch.optim.Adam(row.layer.parameters(), lr=1e-3)
        for _ in range(warmup):
            _step(row, x, target)
    _synchronize(device)

    quiet = Quiet()
    quiet.max_wait = max_wait
    for _ in range(10):
        quiet.probe()
    order = random.Random(seed)
    needed = math.ceil(steps / chunk)
    rounds = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while rounds < max_rounds_factor * needed and (
            rounds < needed or min(len(kept_times(row, quiet)) for row in active) < steps
        ):
            order.shuffle(active)
            for row in active:
                quiet.wait()
                started = quiet.start()
                times = []
                for _ in range(chunk):
                    _synchronize(device)
                    start = time.perf_counter()
                    _step(row, x, target)
                    _synchronize(device)
                    times.append(time.perf_counter() - start)
                row.turns[rounds] = (times, *quiet.end(started))
            rounds += 1
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()

    for row in active:
        if not row.bound_at_build and row.bound is not None:
            row.bound_value = row.bound(row.layer)
    return rows, quiet, rounds


# -- report -------------------------------------------------------------------------------

def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lipkit": lipkit_revision("src/lipkit/nn"),
        "deel-torchlip": getattr(torchlip, "__version__", None) if torchlip else None,
        "orthogonium": _version("orthogonium") if orthogonium else None,
        "threads": torch.get_num_threads(),
    }


def _round_ratios(row: Method, plain: Method, quiet: Quiet) -> list[float]:
    ratios = []
    for index, turn in row.turns.items():
        if index in plain.turns and quiet.kept(turn) and quiet.kept(plain.turns[index]):
            ratios.append(statistics.median(turn[0]) / statistics.median(plain.turns[index][0]))
    return ratios


def summarize(case: Case, rows: list[Method], quiet: Quiet) -> list[dict]:
    plain_row = rows[0]
    plain = statistics.median(_times_for_report(plain_row, quiet)[0])
    summary = []
    for row in rows:
        entry = {
            "case": case.name, "method": row.name, "library": row.library,
            "description": row.description, "note": row.note,
        }
        if row.build is None:
            entry["missing"] = row.missing
        else:
            times, contended = _times_for_report(row, quiet)
            median = statistics.median(times)
            q1, _, q3 = statistics.quantiles(times, n=4)
            ratios = _round_ratios(row, plain_row, quiet)
            r1, _, r3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (
                None, None, None)
            entry.update(
                steps=len(times),
                discarded_turns=sum(not quiet.kept(turn) for turn in row.turns.values()),
                median_ms=1e3 * median, q1_ms=1e3 * q1, q3_ms=1e3 * q3,
                ratio=median / plain, round_ratio_q1=r1, round_ratio_q3=r3,
                bound=row.bound_value, contended=contended,
            )
            if contended:
                entry["note"] = "NO QUIET TURN: timed under other load; " + entry["note"]
        summary.append(entry)
    return summary


def print_table(console: Console, case: Case, summary: list[dict], device: str,
                quiet: Quiet, rounds: int) -> None:
    table = Table(title=f"{case.title}: training step (forward + backward + Adam), {device}")
    for column, justify in (("library", "left"), ("method", "left"), ("ms/step", "right"),
                            ("x plain", "right"), ("per-round IQR", "right"),
                            ("certified bound", "right"), ("note", "left")):
        table.add_column(column, justify=justify)
    for entry in summary:
        if "missing" in entry:
            table.add_row(entry["library"], entry["method"], "-", entry["missing"], "-", "-",
                          "")
            continue
        table.add_row(
            entry["library"], entry["method"], f"{entry['median_ms']:.2f}",
            f"{entry['ratio']:.2f}",
            "-" if entry["round_ratio_q1"] is None
            else f"{entry['round_ratio_q1']:.2f}-{entry['round_ratio_q3']:.2f}",
            "-" if entry["bound"] is None else f"{entry['bound']:.4f}", entry["note"],
        )
    console.print(table)
    timed = [entry for entry in summary if "steps" in entry]
    kept = min(0 if entry["contended"] else entry["steps"] for entry in timed)
    discarded = max(entry["discarded_turns"] for entry in timed)
    console.print(
        f"{rounds} rounds; at least {kept} kept steps per row; up to {discarded} turns per row "
        f"discarded (probe > {_PROBE_SLOWDOWN}x its best of {1e3 * quiet.best:.2f} ms, or other "
        f"processes > {_OTHERS_BUSY:.0%} of the CPUs); {quiet.waited:.0f} s spent waiting for "
        "a quiet machine"
    )
    for entry in summary:
        console.print(f"  {entry['library']} {entry['method']}: {entry['description']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per method after warm-up (default: 150 for linear, "
                             "40 for conv)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per method")
    parser.add_argument("--chunk", type=int, default=4,
                        help="steps of one method per turn of the round-robin")
    parser.add_argument("--case", nargs="+", choices=sorted(CASES), default=["linear", "conv"])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=_MAX_WAIT_SECONDS,
                        help="longest wait for a quiet machine before a turn (seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--results", metavar="PATH",
                        help="append each finished case's rows to this JSON-lines file; "
                             "cases already in it are skipped (a case's rows are timed "
                             "together, so its ratios stay side by side)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    console = Console(width=None if sys.stdout.isatty() else 160)
    machine = _machine()
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    console.print(
        f"CPU {machine['cpu']}, {machine['threads']} threads; torch {machine['torch']}; "
        f"lipkit {machine['lipkit']}; "
        f"deel-torchlip {machine['deel-torchlip'] or 'not installed'}; device {device}"
    )
    results = []
    done = set()
    if args.results and os.path.exists(args.results):
        with open(args.results) as stream:
            done = {json.loads(line)["case"] for line in stream if line.strip()}
    for name in args.case:
        case = CASES[name]
        if name in done:
            console.print(f"{name}: already in {args.results}, skipped")
            continue
        steps = args.steps if args.steps is not None else case.default_steps
        rows, quiet, rounds = run_case(case, device, steps, args.warmup, args.chunk, args.seed,
                                       max_wait=args.max_wait)
        summary = summarize(case, rows, quiet)
        print_table(console, case, summary, str(device), quiet, rounds)
        results += summary
        if args.results:
            with open(args.results, "a") as stream:
                for entry in summary:
                    stream.write(json.dumps({**entry, "machine": machine}) + "\n")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine, "args": vars(args), "rows": results}, out, indent=2)


if __name__ == "__main__":
    main()
