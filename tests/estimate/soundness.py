"""A soundness fuzzer for ``lipkit.estimate``: random torch models and oracles that do not use
lipkit's network code.

Shared by ``tests/estimate/test_estimate_soundness_fuzz.py`` (a minute of it in the suite) and
``benchmarks/fuzz_soundness.py`` (the long run). :func:`random_case` builds a model from torch
layers only (MLPs, Conv1d / Conv2d on tiny inputs, residual blocks; every activation of
:data:`ACTIVATIONS` with random parameters; normal, tiny, huge, zero, duplicated and mixed
weights; exactly linear nets); :func:`check_case` runs every lipkit method that fits, for the
l2, l1 and l-inf norms, globally and (one norm) over a local ball, and checks each bound
against oracles computed on the torch module itself, in float64, with autograd:

- a pair search (random pairs at several scales and separations, pairs along the direction
  the Jacobian stretches most, then Adam on both points of the best pairs) and the induced
  norms of the Jacobians it visits: every number it keeps is attained, so every upper bound
  must be at least its best (``value >= best * (1 - 1e-9)``);
- every witness recomputed: a pair's ratio, a point's Jacobian norm; the bound must be at most
  what it attains (``value <= attained * (1 + 1e-9)``), and inside the domain;
- ``lower <= upper`` across all usable bounds of a run (``1e-9`` relative);
- exactly linear nets: every upper at least, every lower at most, the induced norm of the
  product matrix (numpy: largest singular value, largest column / row abs sum);
- local domains (an l-inf or l2 ball, its center near the origin or at ``|c| ~ 1e3``): every
  upper bound at least ``||J(center)||`` and the pair ratios found inside the ball, every
  witness inside it.

**The oracle's own rounding (the only slack).** A ratio ``||f(x1) - f(x2)|| / ||x1 - x2||``
computed in float64 carries the rounding of ``f(x1)`` and ``f(x2)`` (large when the weights
are tiny and the biases ordinary: ``f(x1) - f(x2)`` is a difference of nearly equal numbers).
Each evaluation's error is estimated by its float32 shadow: the same model in float32 at the
same point (rounded to float32) differs from float64 by about ``2^29`` times float64's error,
so ``E(x) = 64 * 2^-29 * ||f32(x) - f64(x)|| + 4 eps ||f64(x)||`` (a factor 64: the
shadow's error is itself a random sample). The oracle keeps
``(||f(x1) - f(x2)|| - E(x1) - E(x2)) / ||x1 - x2||`` as its lower value, and only from pairs
whose band ``2 (E(x1) + E(x2))`` is below ``1e-10`` of the ratio; it allows a witness up
to ``(||f(x1) - f(x2)|| + E(x1) + E(x2)) / ||x1 - x2||`` (or, when that band is wide, up to the
largest ``||J(x) d|| / ||d||`` along the segment, by the mean value inequality); Jacobian
norms carry the norm of their own float32 shadow's difference the same way, plus ``1e-7``
relative per module whose float64 backward torch computes with float32 constants
(:data:`INEXACT_BACKWARD`: ``Hardsigmoid``, ``CELU``).

Models that lipkit refuses must raise a ``LipkitError`` naming the module in one line (a good
refusal); any other exception is a failure.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lipkit.errors import LipkitError, UnsupportedModuleError
from lipkit.estimate import METHODS, estimate
from lipkit.estimate.registry import option_fields
from lipkit.nn.activation import GroupSort, MaxMin

NORMS = ("2", "1", "inf")
RELATIVE = 1e-9  # the relative tolerance of every comparison
SHADOW = 64.0 * 2.0 ** -29  # float64's error per unit of float32's error, with a factor 64
CREDIBLE = 1e-10  # the oracle counts a pair only when its rounding band is this narrow
# torch's float64 backward of these modules uses float32 constants (hardsigmoid: a slope of
# float32(1/6); celu: float32(1/alpha)): their derivatives are off by up to 3e-8 relative
# (measured against central differences), so a Jacobian norm carries that much per module
INEXACT_BACKWARD = {nn.Hardsigmoid: 1e-7, nn.CELU: 1e-7}
EPS = float(np.finfo(np.float64).eps)
SKIPPED_METHODS = ("lipsdp-network", "lipsdp-network-rand")  # estimates, never checked
# small budgets: the fuzzer checks soundness, not tightness
METHOD_OPTIONS = {
    "lower-jacobian": {"points": 48},
    "lower-adversarial": {"points": 48, "steps": 20, "refine": 4},
    "lower-gradient": {"steps": 20, "starts": 4},
    "compositional": {"steps": 20},
    "exact-bab": {"max_branches": 20_000},
}
TIME_LIMIT = 0.5

CATEGORIES = ("false upper", "lower > upper", "unattained witness", "lower above exact",
              "witness outside domain", "non-finite witness", "missing witness", "exception",
              "bad refusal",
              "fuzzer error")


# ------------------------------------------------------------------------------------------
# the generator


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _prelu(rng: np.random.Generator, channels: int) -> nn.Module:
    count = int(rng.choice([1, channels]))
    module = nn.PReLU(count)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(rng.uniform(-1.5, 3.0, count)))
    return module


def _hardtanh(rng: np.random.Generator, channels: int) -> nn.Module:
    low = _uniform(rng, -3.0, 0.5)
    return nn.Hardtanh(low, low + _uniform(rng, 0.1, 3.0))


def _rrelu(rng: np.random.Generator, channels: int) -> nn.Module:
    low = _uniform(rng, -0.5, 1.5)
    return nn.RReLU(low, low + _uniform(rng, 0.0, 1.0))


# name -> (factory(rng, channels), group size the width must be a multiple of); to add an
# activation, add a line
ACTIVATIONS: dict[str, tuple[Callable[[np.random.Generator, int], nn.Module], int]] = {
    "ReLU": (lambda rng, c: nn.ReLU(), 1),
    "LeakyReLU": (lambda rng, c: nn.LeakyReLU(float(rng.choice(
        [0.01, 0.2, -0.5, 1.7, 3.0, _uniform(rng, -2.0, 4.0)]))), 1),
    "Tanh": (lambda rng, c: nn.Tanh(), 1),
    "Sigmoid": (lambda rng, c: nn.Sigmoid(), 1),
    "Softplus": (lambda rng, c: nn.Softplus(_uniform(rng, 0.5, 5.0), float(rng.choice(
        [20.0, _uniform(rng, 1.0, 20.0)]))), 1),
    "ELU": (lambda rng, c: nn.ELU(float(rng.choice([1.0, _uniform(rng, 0.1, 3.0)]))), 1),
    "CELU": (lambda rng, c: nn.CELU(_uniform(rng, 0.1, 3.0)), 1),
    "SELU": (lambda rng, c: nn.SELU(), 1),
    "GELU": (lambda rng, c: nn.GELU(approximate=str(rng.choice(["none", "tanh"]))), 1),
    "SiLU": (lambda rng, c: nn.SiLU(), 1),
    "Mish": (lambda rng, c: nn.Mish(), 1),
    "Hardswish": (lambda rng, c: nn.Hardswish(), 1),
    "Hardsigmoid": (lambda rng, c: nn.Hardsigmoid(), 1),
    "Hardtanh": (_hardtanh, 1),
    "ReLU6": (lambda rng, c: nn.ReLU6(), 1),
    "PReLU": (_prelu, 1),
    "Softsign": (lambda rng, c: nn.Softsign(), 1),
    "LogSigmoid": (lambda rng, c: nn.LogSigmoid(), 1),
    "Tanhshrink": (lambda rng, c: nn.Tanhshrink(), 1),
    "Softshrink": (lambda rng, c: nn.Softshrink(_uniform(rng, 0.0, 2.0)), 1),
    "Hardshrink": (lambda rng, c: nn.Hardshrink(_uniform(rng, 0.1, 2.0)), 1),  # jumps
    "RReLU": (_rrelu, 1),
    "Identity": (lambda rng, c: nn.Identity(), 1),
    "MaxMin": (lambda rng, c: MaxMin(), 2),
    "GroupSort3": (lambda rng, c: GroupSort(3), 3),
}

REGIMES = ("normal", "normal", "tiny", "huge", "zero", "duplicated", "mixed", "large bias")


class Residual(nn.Module):
    """``x + branch(x)``."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return x + self.branch(x)


@dataclass
class Case:
    """A fuzzed model and what the oracles need to know about it."""

    seed: int
    model: nn.Module
    input_shape: tuple[int, ...]
    structure: str
    regime: str
    activations: list[str]
    linear: bool  # every activation is the identity: the constant is a matrix norm

    @property
    def description(self) -> str:
        return (f"seed {self.seed}: {self.structure}, {self.regime} weights, activations "
                f"[{', '.join(self.activations)}], input {list(self.input_shape)}")


def _round_width(width: int, group: int) -> int:
    return max(group, -(-width // group) * group)


def random_case(seed: int) -> Case:
    """The model of ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    linear = rng.random() < 0.12
    names = list(ACTIVATIONS)
    single = str(rng.choice(names))
    mixed = rng.random() < 0.4
    chosen: list[str] = []

    def activation(width: int) -> nn.Module:
        name = "Identity" if linear else (str(rng.choice(names)) if mixed else single)
        if width % ACTIVATIONS[name][1]:  # a mixed net: the group size must divide the width
            name = str(rng.choice([n for n in names if width % ACTIVATIONS[n][1] == 0]))
        factory, _ = ACTIVATIONS[name]
        module = factory(rng, width)
        chosen.append(repr(module))
        return module

    def group() -> int:
        return 1 if linear or mixed else ACTIVATIONS[single][1]

    structure = str(rng.choice(["mlp", "mlp", "mlp", "conv1d", "conv2d", "residual"]))
    bias = rng.random() < 0.85
    if structure == "mlp":
        depth = int(rng.integers(1, 5))
        widths = [int(rng.integers(1, 7))]
        widths += [_round_width(int(rng.integers(1, 9)), group()) for _ in range(depth - 1)]
        widths += [int(rng.integers(1, 5))]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
            if i < depth - 1:
                layers.append(activation(widths[i + 1]))
        input_shape = (widths[0],)
        text = f"mlp {'-'.join(map(str, widths))}"
    elif structure in ("conv1d", "conv2d"):
        dims = 1 if structure == "conv1d" else 2
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        channels = int(rng.integers(1, 3))
        size = int(rng.integers(4, 7 if dims == 1 else 6))
        input_shape = (channels, *([size] * dims))
        layers = []
        shape = input_shape
        for _ in range(int(rng.integers(1, 3))):
            out = int(rng.integers(1, 3))
            kernel = int(rng.integers(1, 4))
            stride = int(rng.integers(1, 3))
            padding = int(rng.integers(0, 2))
            mode = str(rng.choice(["zeros", "zeros", "zeros", "circular", "reflect",
                                   "replicate"])) if padding else "zeros"
            if mode == "reflect" and padding >= shape[-1]:
                mode = "zeros"
            if kernel > shape[-1] + 2 * padding:
                kernel = 1
            layer = conv(shape[0], out, kernel, stride=stride, padding=padding,
                         padding_mode=mode, bias=bias)
            layers += [layer, activation(out)]
            with torch.no_grad():
                shape = tuple(layer(torch.zeros(1, *shape)).shape[1:])
        block = rng.random() < 0.35
        if block:  # a residual block of convolutions that keep the shape
            channels = shape[0]
            mode = str(rng.choice(["zeros", "circular"]))
            layers.append(Residual(nn.Sequential(
                conv(channels, channels, 3, padding=1, padding_mode=mode, bias=bias),
                activation(channels), conv(channels, channels, 1, bias=bias))))
        layers += [nn.Flatten(), nn.Linear(math.prod(shape), int(rng.integers(1, 4)),
                                           bias=bias)]
        text = (f"{structure} {input_shape} -> {shape}{' + residual block' if block else ''} "
                "-> linear")
    else:
        inputs = int(rng.integers(1, 6))
        width = _round_width(int(rng.integers(1, 7)), group())
        layers = [nn.Linear(inputs, width, bias=bias), activation(width)]
        for _ in range(int(rng.integers(1, 3))):
            layers.append(Residual(nn.Sequential(nn.Linear(width, width, bias=bias),
                                                 activation(width),
                                                 nn.Linear(width, width, bias=bias))))
        layers.append(nn.Linear(width, int(rng.integers(1, 4)), bias=bias))
        input_shape = (inputs,)
        text = f"residual {inputs}-{width}x{(len(layers) - 3)} blocks"
    model = nn.Sequential(*layers)
    regime = str(rng.choice(REGIMES))
    _apply_regime(model, regime, rng)
    return Case(seed, model.eval(), input_shape, text, regime, chosen, linear)


def _apply_regime(model: nn.Module, regime: str, rng: np.random.Generator) -> None:
    affine = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    with torch.no_grad():
        for index, layer in enumerate(affine):
            weight = layer.weight
            if regime == "tiny":
                weight.mul_(1e-6)
                if layer.bias is not None:
                    layer.bias.uniform_(-1.0, 1.0)
            elif regime == "huge":
                weight.mul_(_uniform(rng, 1e3, 1e4))
            elif regime == "mixed":
                weight.mul_(10.0 ** _uniform(rng, -3.0, 3.0))
            elif regime == "large bias" and layer.bias is not None:
                layer.bias.mul_(100.0)
            elif regime == "duplicated" and weight.shape[0] > 1:
                # duplicated rows (neurons), and in the next layer duplicated columns
                weight[-1] = weight[0]
                if layer.bias is not None:
                    layer.bias[-1] = layer.bias[0]
                if index + 1 < len(affine) and isinstance(affine[index + 1], nn.Linear):
                    following = affine[index + 1].weight
                    if following.shape[1] == weight.shape[0]:
                        following[:, -1] = following[:, 0]
        if regime == "zero":
            layer = affine[int(rng.integers(0, len(affine)))]
            layer.weight.zero_()


# ------------------------------------------------------------------------------------------
# the oracles (torch module only, float64, autograd)


def vector_norm(x: torch.Tensor, norm: str) -> torch.Tensor:
    p = {"2": 2.0, "1": 1.0, "inf": math.inf}[norm]
    return torch.linalg.vector_norm(x.flatten(1), ord=p, dim=1)


def matrix_norms(jac: np.ndarray, norm: str) -> np.ndarray:
    """Induced norms of a batch of matrices, with numpy."""
    if norm == "2":
        return np.linalg.norm(jac, ord=2, axis=(1, 2)) if jac.size else np.zeros(len(jac))
    if norm == "inf":
        return np.abs(jac).sum(axis=2).max(axis=1, initial=0.0)
    return np.abs(jac).sum(axis=1).max(axis=1, initial=0.0)


class Oracle:
    """The torch module in float64 (and its float32 shadow), evaluated without lipkit."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        self.f64 = copy.deepcopy(model).double().eval()
        self.f32 = copy.deepcopy(model).float().eval()
        self.input_shape = tuple(input_shape)
        self.n = math.prod(self.input_shape)
        # the relative error of torch's float64 derivatives (see INEXACT_BACKWARD)
        self.autograd = 1e-12 + sum(INEXACT_BACKWARD.get(type(m), 0.0) for m in model.modules())

    @torch.no_grad()
    def values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(x)`` in float64 (flattened) and its estimated rounding error per point (in
        each norm: a dict norm -> tensor)."""
        x = x.reshape(-1, *self.input_shape).to(torch.float64)
        y = self.f64(x).flatten(1)
        shadow = self.f32(x.float()).double().flatten(1)
        y_at_shadow = self.f64(x.float().double()).flatten(1)
        return y, (shadow - y_at_shadow, y)

    def errors(self, error_and_value, norm: str) -> torch.Tensor:
        difference, value = error_and_value
        error = SHADOW * vector_norm(difference, norm) + 4 * EPS * vector_norm(value, norm)
        return torch.nan_to_num(error, nan=math.inf)

    def ratios(self, x1: torch.Tensor, x2: torch.Tensor, norm: str):
        """``(low, middle, high)`` of the pair ratios (float64 with its rounding band)."""
        y1, e1 = self.values(x1)
        y2, e2 = self.values(x2)
        distance = vector_norm((x1 - x2).reshape(len(x1), -1).double(), norm)
        change = vector_norm(y1 - y2, norm)
        band = self.errors(e1, norm) + self.errors(e2, norm)
        safe = distance.clamp_min(1e-300)
        middle = torch.where(distance > 0, change / safe, 0.0)
        low = torch.where(distance > 0, (change - band).clamp_min(0) / safe, 0.0)
        high = torch.where(distance > 0, (change + band) / safe, 0.0)
        return low, middle, high

    def jacobians(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """``(batch, out, in)`` Jacobians by reverse mode, one pass per output."""
        model = model or self.f64
        dtype = next(model.parameters()).dtype
        x = x.detach().reshape(-1, *self.input_shape).to(dtype).requires_grad_(True)
        with torch.enable_grad():
            y = model(x).flatten(1)
            rows = []
            for k in range(y.shape[1]):
                (grad,) = torch.autograd.grad(y[:, k].sum(), x, retain_graph=True,
                                              allow_unused=True)
                rows.append(torch.zeros_like(x).flatten(1) if grad is None else grad.flatten(1))
        return torch.stack(rows, dim=1).detach().double()

    def jacobian_norms(self, x: torch.Tensor, norm: str):
        """``(low, middle, high, jacobians)`` of ``||J(x)||`` with the float32 shadow's band."""
        jac = self.jacobians(x)
        shadow = self.jacobians(x.float(), self.f32)
        middle = torch.from_numpy(matrix_norms(jac.numpy(), norm))
        difference = (shadow - self.jacobians(x.float().double())).numpy()
        if norm == "2":
            band = np.sqrt((difference ** 2).sum(axis=(1, 2)))  # Frobenius >= spectral
        else:
            band = matrix_norms(difference, norm)
        band = SHADOW * band + (8 * EPS + self.autograd) * middle.numpy()
        band = torch.nan_to_num(torch.from_numpy(band), nan=math.inf)
        return (middle - band).clamp_min(0), middle, middle + band, jac


@dataclass
class Domain:
    """All of R^n (``center`` None), or the ball ``||x - center|| <= radius`` in the l-inf
    (a box) or l2 norm (``ball``)."""

    center: torch.Tensor | None = None
    radius: float = 0.0
    ball: str = "inf"

    @property
    def local(self) -> bool:
        return self.center is not None

    def describe(self) -> str:
        if not self.local:
            return "global"
        return (f"local: center {[round(v, 6) for v in self.center.reshape(-1).tolist()]}, "
                f"radius {self.radius:g} (l{self.ball} ball)")

    def contains(self, x: torch.Tensor) -> bool:
        if not self.local:
            return True
        slack = 1e-12 * (float(self.center.abs().max()) + self.radius)
        offset = x.reshape(-1) - self.center.reshape(-1)
        if self.ball == "2":
            return bool(offset.norm() <= self.radius + slack)
        return bool((offset.abs() <= self.radius + slack).all())

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        if not self.local:
            return x
        center = self.center.reshape(1, *x.shape[1:])
        if self.ball == "2":
            offset = (x - center).flatten(1)
            shrink = (self.radius / offset.norm(dim=1).clamp_min(1e-300)).clamp(max=1.0)
            return center + (offset * shrink[:, None]).reshape(x.shape)
        return torch.minimum(torch.maximum(x, center - self.radius), center + self.radius)

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Seeded points of the domain (flattened), the center first."""
        n = self.center.numel()
        if self.ball == "2":
            direction = torch.randn(count, n, generator=generator, dtype=torch.float64)
            direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-300)
            length = torch.rand(count, 1, generator=generator, dtype=torch.float64) ** (1 / n)
            unit = direction * length
        else:
            unit = torch.rand(count, n, generator=generator, dtype=torch.float64) * 2 - 1
        points = self.center.reshape(1, -1) + self.radius * unit
        points[0] = self.center.reshape(-1)
        return points


@dataclass
class Best:
    """The oracle's best attained value and how it was found."""

    value: float = 0.0
    how: str = "nothing"

    def update(self, value: float, how: str) -> None:
        if value > self.value:
            self.value, self.how = value, how


def _directions(jac: torch.Tensor, norm: str, shape) -> torch.Tensor:
    """Per point, an input direction along which ``J`` stretches most (unit in ``norm``)."""
    if norm == "2":
        _, _, vh = torch.linalg.svd(jac)
        direction = vh[:, 0, :]
    elif norm == "inf":
        rows = jac.abs().sum(dim=2).argmax(dim=1)
        direction = torch.sign(jac[torch.arange(len(jac)), rows])
        direction[direction == 0] = 1.0
    else:
        direction = torch.zeros(jac.shape[0], jac.shape[2], dtype=jac.dtype)
        direction[torch.arange(len(jac)), jac.abs().sum(dim=1).argmax(dim=1)] = 1.0
    return direction.reshape(-1, *shape)


def pair_search(oracle: Oracle, norm: str, domain: Domain, seed: int, points: int = 60,
                restarts: int = 4, steps: int = 24) -> Best:
    """The largest attained value the oracle finds: pair ratios (rounding subtracted) and
    Jacobian norms (their rounding subtracted)."""
    generator = torch.Generator().manual_seed(seed)
    shape = oracle.input_shape
    best = Best()
    if domain.local:
        x = domain.sample(points, generator).reshape(points, *shape)
        scale = torch.full((points,), domain.radius, dtype=torch.float64)
    else:
        scale = torch.tensor([0.1, 1.0, 10.0, 100.0, 1000.0],
                             dtype=torch.float64).repeat(points // 5 + 1)[:points]
        x = torch.randn(points, *shape, generator=generator, dtype=torch.float64)
        x = x * scale.reshape(-1, *([1] * len(shape)))
    expand = (-1, *([1] * len(shape)))

    def consider(first, second, how):
        first, second = domain.clamp(first), domain.clamp(second)
        low, middle, high = oracle.ratios(first, second, norm)
        low = torch.where(high - low <= CREDIBLE * middle, low, 0.0)
        if len(low):
            index = int(low.argmax())
            best.update(float(low[index]), how)
        return low

    # Jacobian norms at the points, and pairs along their stretching directions
    low, _, _, jac = oracle.jacobian_norms(x, norm)
    best.update(float(low.max()), "jacobian norm at a random point")
    direction = _directions(jac, norm, shape)
    pairs_first, pairs_second = [], []
    for step in (1e-6, 1e-3, 1e-1):
        pairs_first.append(x)
        pairs_second.append(x + step * scale.reshape(expand) * direction)
    # random pairs at several separations, and independent far pairs
    for step in (1e-4, 1e-2, 1.0):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        pairs_first.append(x)
        pairs_second.append(x + step * scale.reshape(expand) * noise)
    pairs_first.append(x)
    pairs_second.append(x[torch.randperm(points, generator=generator)])
    first, second = torch.cat(pairs_first), torch.cat(pairs_second)
    low = consider(first, second, "random pair")
    # Adam on both points of the best pairs
    keep = low.argsort(descending=True)[:restarts]
    first, second = first[keep].clone(), second[keep].clone()
    pair_scale = (1.0 + first.flatten(1).abs().amax(dim=1)).reshape(expand)
    if domain.local:
        pair_scale = torch.full_like(pair_scale, domain.radius)
    u1 = (first / pair_scale).requires_grad_(True)
    u2 = (second / pair_scale).requires_grad_(True)
    optimizer = torch.optim.Adam([u1, u2], lr=0.01)
    for step in range(steps):
        with torch.enable_grad():
            a, b = domain.clamp(u1 * pair_scale), domain.clamp(u2 * pair_scale)
            change = vector_norm(oracle.f64(a) - oracle.f64(b), norm)
            distance = vector_norm(a - b, norm)
            objective = -(torch.log(change + 1e-300) - torch.log(distance + 1e-300)).sum()
            optimizer.zero_grad()
            objective.backward()
        optimizer.step()
        if step % 8 == 7 or step == steps - 1:
            with torch.no_grad():
                consider(u1 * pair_scale, u2 * pair_scale, "gradient ascent on a pair")
    return best


def exact_linear_constant(oracle: Oracle, norm: str) -> float:
    """The induced norm of the product matrix of an exactly linear net (numpy)."""
    matrix = oracle.jacobians(torch.zeros(1, *oracle.input_shape))[0].numpy()
    if matrix.size == 0:
        return 0.0
    if norm == "2":
        return float(np.linalg.svd(matrix, compute_uv=False)[0])
    if norm == "1":
        return float(np.abs(matrix).sum(axis=0).max())
    return float(np.abs(matrix).sum(axis=1).max())


# ------------------------------------------------------------------------------------------
# the checks


@dataclass
class Failure:
    """One violated property."""

    category: str
    method: str
    norm: str
    domain: str
    value: float
    oracle: float
    detail: str = ""

    def __str__(self) -> str:
        return (f"{self.category}: {self.method}, norm {self.norm}, {self.domain}: value "
                f"{self.value!r} vs oracle {self.oracle!r} {self.detail}")


@dataclass
class Result:
    """What one model gave: refusals, failures, statistics."""

    seed: int
    description: str
    refusal: str | None = None
    failures: list[Failure] = field(default_factory=list)
    checks: int = 0  # bounds checked
    statuses: dict[str, int] = field(default_factory=dict)  # not-ok statuses by reason
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"seed": self.seed, "description": self.description, "refusal": self.refusal,
                "failures": [vars(f) for f in self.failures], "checks": self.checks,
                "statuses": self.statuses, "seconds": round(self.seconds, 3)}


def _check_refusal(error: Exception, case: Case) -> str | None:
    """Why a refusal is not a good one (None if it is)."""
    message = str(error)
    if "\n" in message.strip():
        return f"a multi-line message: {message!r}"
    if not isinstance(error, LipkitError):
        return f"{type(error).__name__} is not a LipkitError: {message}"
    if isinstance(error, UnsupportedModuleError):
        return None  # its message is "unsupported module '<path>' of type <type>: ..."
    names = {type(m).__name__ for m in case.model.modules()}
    paths = {name for name, _ in case.model.named_modules() if name}
    if not any(name in message for name in names | paths):
        return f"the message names no module of the model: {message}"
    return None


def _witness_attained(oracle: Oracle, bound, norm: str, domain: Domain):
    """``(attained_high, attained_middle, description)`` of a bound's witness, or None when
    it has none; raises ValueError when the witness lies outside the domain."""
    witness = bound.details.get("witness") if isinstance(bound.details, dict) else None
    if not isinstance(witness, dict):
        return None
    if "x1" in witness and "x2" in witness:
        x1 = torch.as_tensor(witness["x1"], dtype=torch.float64).reshape(1, *oracle.input_shape)
        x2 = torch.as_tensor(witness["x2"], dtype=torch.float64).reshape(1, *oracle.input_shape)
        if not (torch.isfinite(x1).all() and torch.isfinite(x2).all()):
            raise ArithmeticError(f"witness pair not finite: {x1.tolist()}, {x2.tolist()}")
        if not (domain.contains(x1) and domain.contains(x2)):
            raise ValueError("witness pair outside the domain")
        _, middle, high = oracle.ratios(x1, x2, norm)
        middle, high = float(middle[0]), float(high[0])
        if high > middle * (1 + RELATIVE):
            # the rounding band is wide: the mean value inequality along the segment
            t = torch.linspace(0, 1, 33, dtype=torch.float64).reshape(-1, *([1] * (x1.ndim - 1)))
            segment = x2 + t * (x1 - x2)
            jac = oracle.jacobians(segment)
            d = (x1 - x2).reshape(-1, 1)
            stretched = vector_norm((jac @ d).squeeze(-1), norm)
            distance = float(vector_norm(x1 - x2, norm)[0])
            if distance > 0:
                _, _, jac_high, _ = oracle.jacobian_norms(segment, norm)
                along = float(stretched.max()) / distance
                band = float((jac_high - torch.from_numpy(
                    matrix_norms(jac.numpy(), norm))).max())
                high = min(high, along + band)
        return high, middle, "pair"
    if "x" in witness:
        x = torch.as_tensor(witness["x"], dtype=torch.float64).reshape(1, *oracle.input_shape)
        if not torch.isfinite(x).all():
            raise ArithmeticError(f"witness point not finite: {x.tolist()}")
        if not domain.contains(x):
            raise ValueError("witness point outside the domain")
        _, middle, high, _ = oracle.jacobian_norms(x, norm)
        return float(high[0]), float(middle[0]), "point"
    return None


def check_bounds(oracle: Oracle, bounds, norm: str, domain: Domain, best: Best,
                 exact: float | None, result: Result) -> None:
    """Check one run's bounds; failures and counts go into ``result``."""
    where = domain.describe()
    usable = [b for b in bounds if b.usable]
    for bound in bounds:
        if not bound.usable and bound.kind != "estimate":
            reason = bound.status.split(":")[0] + (": " + bound.status.split(":")[1].strip()
                                                   if bound.status.startswith("failed") else "")
            key = f"{bound.method}: {reason}"[:120]
            result.statuses[key] = result.statuses.get(key, 0) + 1
    # the witnesses first: a verified witness is an attained value the upper bounds must meet
    for bound in usable:
        if bound.kind not in ("lower", "exact"):
            continue
        result.checks += 1
        try:
            attained = _witness_attained(oracle, bound, norm, domain)
        except ValueError as error:
            result.failures.append(Failure("witness outside domain", bound.method, norm, where,
                                           bound.value, math.nan, str(error)))
            continue
        except ArithmeticError as error:
            result.failures.append(Failure("non-finite witness", bound.method, norm, where,
                                           bound.value, math.nan, str(error)))
            continue
        if attained is None:
            if bound.value > 0:
                result.failures.append(Failure("missing witness", bound.method, norm, where,
                                               bound.value, math.nan))
            continue
        high, middle, kind = attained
        if not bound.value <= high * (1 + RELATIVE):
            result.failures.append(Failure(
                "unattained witness", bound.method, norm, where, bound.value, high,
                f"({kind} witness: float64 ratio {middle!r}, relative excess "
                f"{bound.value / high - 1 if high > 0 else math.inf:.3g})"))
        if exact is not None and not bound.value <= exact * (1 + RELATIVE):
            result.failures.append(Failure("lower above exact", bound.method, norm, where,
                                           bound.value, exact, "(exactly linear net)"))
    for bound in usable:
        if bound.kind not in ("upper", "exact"):
            continue
        result.checks += 1
        if not bound.value >= best.value * (1 - RELATIVE):
            result.failures.append(Failure(
                "false upper", bound.method, norm, where, bound.value, best.value,
                f"(oracle: {best.how}; relative deficit {1 - bound.value / best.value:.3g})"))
        if exact is not None and not bound.value >= exact * (1 - RELATIVE):
            result.failures.append(Failure("false upper", bound.method, norm, where,
                                           bound.value, exact,
                                           "(below the exact constant of a linear net)"))
    lowers = [b for b in usable if b.kind in ("lower", "exact")]
    uppers = [b for b in usable if b.kind in ("upper", "exact")]
    if lowers and uppers:
        low = max(lowers, key=lambda b: b.value)
        high = min(uppers, key=lambda b: b.value)
        if not low.value <= high.value * (1 + RELATIVE):
            result.failures.append(Failure(
                "lower > upper", f"{low.method} > {high.method}", norm, where, low.value,
                high.value))


def _oracle_with_witnesses(oracle: Oracle, bounds, norm: str, domain: Domain,
                           best: Best) -> None:
    """Lipkit's witnesses, evaluated by the oracle (their rounding subtracted), raise the
    oracle's best: the upper bounds must meet them too."""
    for bound in bounds:
        witness = bound.details.get("witness") if isinstance(bound.details, dict) else None
        if not bound.usable or not isinstance(witness, dict):
            continue
        try:
            if "x1" in witness and "x2" in witness:
                x1 = torch.as_tensor(witness["x1"], dtype=torch.float64).reshape(
                    1, *oracle.input_shape)
                x2 = torch.as_tensor(witness["x2"], dtype=torch.float64).reshape(
                    1, *oracle.input_shape)
                if domain.contains(x1) and domain.contains(x2):
                    low, middle, high = oracle.ratios(x1, x2, norm)
                    low = torch.where(high - low <= CREDIBLE * middle, low, 0.0)
                    best.update(float(low[0]), f"{bound.method}'s witness pair, re-evaluated")
            elif "x" in witness:
                x = torch.as_tensor(witness["x"], dtype=torch.float64).reshape(
                    1, *oracle.input_shape)
                if domain.contains(x):
                    low, _, _, _ = oracle.jacobian_norms(x, norm)
                    best.update(float(low[0]), f"{bound.method}'s witness point, re-evaluated")
        except (RuntimeError, ValueError):
            continue


def run_estimate(source, input_shape, norm: str, methods, domain: Domain,
                 time_limit: float, result: Result, **options):
    """``estimate`` with the fuzzer's options; an exception is recorded per method."""
    methods = list(methods) if methods is not None else methods_for(norm, domain.local)
    typed, extra = _method_options(methods), dict(options)
    if domain.local:
        extra.update(center=domain.center.reshape(-1).clone(), radius=domain.radius,
                     ball=domain.ball)
    try:
        return estimate(source, methods=methods, norm=norm, input_shape=input_shape,
                        time_limit=time_limit, budget=None, options=typed, **extra).bounds
    except Exception:
        if len(methods) > 1:
            bounds = []
            for name in methods:
                bounds += run_estimate(source, input_shape, norm, [name], domain, time_limit,
                                       result, **options)
            return bounds
        result.failures.append(Failure(
            "exception", methods[0], norm, domain.describe(), math.nan, math.nan,
            traceback.format_exc(limit=-2).strip().splitlines()[-1]))
        return []


def _method_options(names) -> dict:
    """The fuzzer's small budgets for the methods of a run: typed options per method (only
    the fields its options dataclass has)."""
    typed = {}
    for name in names:
        fields = option_fields(METHODS[name].options)
        own = {key: value for key, value in METHOD_OPTIONS.get(name, {}).items()
               if key in fields}
        if own:
            typed[name] = own
    return typed


def methods_for(norm: str, local: bool) -> list[str]:
    """Every method for the norm (over a local domain: the local ones and the global upper
    bounds, which bound the local constant too)."""
    return [name for name, method in METHODS.items() if norm in method.norms
            and name not in SKIPPED_METHODS and (not local or method.local
                                                 or method.kind == "upper")]


def check_source(source, oracle: Oracle, input_shape, result: Result, seed: int,
                 norms=NORMS, local: bool = True, time_limit: float = TIME_LIMIT,
                 exact_linear: bool = False, methods: dict | None = None, **options) -> None:
    """Run and check every method that fits, per norm, globally, and for one of the norms
    over a random local ball. ``source`` is what lipkit imports (the model, a file); the
    oracle is the torch module."""
    rng = np.random.default_rng(seed + 1)
    local_norm = str(rng.choice(list(norms)))
    for norm in norms:
        domain = Domain()
        exact = exact_linear_constant(oracle, norm) if exact_linear else None
        names = (methods or {}).get(norm, methods_for(norm, False))
        bounds = run_estimate(source, input_shape, norm, names, domain, time_limit, result,
                              **options)
        best = pair_search(oracle, norm, domain, seed)
        _oracle_with_witnesses(oracle, bounds, norm, domain, best)
        check_bounds(oracle, bounds, norm, domain, best, exact, result)
        if local and norm == local_norm:
            domain = random_domain_for(oracle, rng)
            bounds = run_estimate(source, input_shape, norm, methods_for(norm, True), domain,
                                  time_limit, result, **options)
            best = pair_search(oracle, norm, domain, seed)
            low, _, _, _ = oracle.jacobian_norms(domain.center.reshape(1, -1), norm)
            best.update(float(low[0]), "||J(center)||")
            _oracle_with_witnesses(oracle, bounds, norm, domain, best)
            check_bounds(oracle, bounds, norm, domain, best, exact, result)


def random_domain_for(oracle: Oracle, rng: np.random.Generator) -> Domain:
    far = rng.random() < 0.3
    center = rng.standard_normal(oracle.n) * (1e3 if far else 1.0)
    radius = float(rng.choice([2.0 ** -7, 2.0 ** -3, 1.0]))
    ball = str(rng.choice(["inf", "2"]))
    return Domain(torch.from_numpy(center.astype(np.float32).astype(np.float64)), radius, ball)


def check_case(case: Case, norms=NORMS, local: bool = True,
               time_limit: float = TIME_LIMIT) -> Result:
    """Everything the fuzzer checks on one model."""
    started = time.perf_counter()
    result = Result(case.seed, case.description)
    from lipkit.estimate import load_network

    try:
        load_network(case.model, case.input_shape)
    except Exception as error:  # a refusal: it must be a good one
        why = _check_refusal(error, case)
        if why is None:
            result.refusal = f"{type(error).__name__}: {error}"
        else:
            result.failures.append(Failure("bad refusal", "import", "-", "-", math.nan,
                                           math.nan, why))
        result.seconds = time.perf_counter() - started
        return result
    oracle = Oracle(case.model, case.input_shape)
    check_source(case.model, oracle, case.input_shape, result, case.seed, norms, local,
                 time_limit, exact_linear=case.linear)
    result.seconds = time.perf_counter() - started
    return result
