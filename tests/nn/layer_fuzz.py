"""A soundness fuzzer for :func:`lipkit.nn.lipschitz_bound`: random models built from
lipkit's own layers, the bound they certify checked against pairs of inputs of the model.

Each draw builds a small model from the constrained layers (spectral, Björck, AOL, BCOP, AOC,
SLL rescaling, clipping), the blocks (CPL, SLL, SOC, Cayley, Residual), the activations and
the pooling layers, with random geometry (stride, padding, padding mode, groups), random
parameter scales (ordinary, tiny, huge), optionally a few training steps with a large
learning rate (power-iteration buffers and BatchNorm statistics move, parametrizations leave
their comfortable regime), then puts it in eval mode and computes

- ``bound``: ``lipschitz_bound(model, example_input=x)``;
- ``exported``: ``lipschitz_bound(export(model), example_input=x)`` (the plain form's
  operator norms: another route to the same number's guarantee);
- ``lower``: the largest ``||f(a) - f(b)|| / ||a - b||`` over pairs found by power
  iteration on ``J^T J`` (autograd in float64) and by gradient ascent on the pair ratio;
  each pair is evaluated again in float64 and its ratio is a lower bound on the constant up
  to float64 rounding, which is accounted for. ``f`` is the function the float32 model
  computes: its weights as the float32 parametrizations produce them (the exported copy's,
  whose outputs are checked against the model's), in float64 arithmetic. Recomputing a
  parametrization in float64 would give another function, 1e-7 away.

A draw fails when ``lower`` exceeds either bound (beyond rounding), when the exported
model's outputs differ from the model's, or when anything raises other than a named refusal
(:class:`lipkit.errors.LipkitError`). Nothing here imports lipkit's estimators: the oracle is
the model's own forward pass.
"""

from __future__ import annotations

import copy
import math
import random
import traceback
from dataclasses import dataclass, field

import torch
from torch import nn

from lipkit import nn as lnn
from lipkit.errors import LipkitError

EPS64 = 2.0**-52
#: changes whenever the draws change, so that a results file never mixes two kinds of draw
DRAW_VERSION = 4


@dataclass
class Draw:
    seed: int
    regime: str
    description: list[str] = field(default_factory=list)


def _dense_layer(rng: random.Random, width: int, draw: Draw) -> tuple[nn.Module, int]:
    """A dense layer or block on ``width`` features; returns it and its output width."""
    kind = rng.choice(["spectral", "bjorck", "aol", "clip", "sll-scaling", "plain",
                       "sll-block", "cpl-block", "residual", "batchnorm"])
    out = rng.choice([width, max(1, width // 2), width * 2, rng.randint(1, 12)])
    if kind == "spectral":
        layer = lnn.spectral_norm(nn.Linear(width, out), lipschitz=rng.choice([1.0, 0.5, 3.0]),
                                  n_power_iterations=rng.choice([1, 3]))
    elif kind == "bjorck":
        layer = lnn.bjorck(nn.Linear(width, out), lipschitz=rng.choice([1.0, 2.0]),
                           max_iterations=rng.choice([2, 30]))
    elif kind == "aol":
        layer = lnn.aol(nn.Linear(width, out))
    elif kind == "clip":
        layer = lnn.weight_clip(nn.Linear(width, out), clip_value=rng.choice([0.01, 0.1, 1.0]))
    elif kind == "sll-scaling":
        layer = lnn.sdp_scaling(nn.Linear(width, out))
    elif kind == "plain":
        layer = nn.Linear(width, out, bias=rng.random() < 0.7)
    elif kind == "sll-block":
        layer, out = lnn.SLLLinear(width, rng.choice([width, 2 * width])), width
    elif kind == "cpl-block":
        layer, out = lnn.CPLLinear(width, rng.choice([width, 2 * width]),
                                   n_power_iterations=rng.choice([1, 5])), width
    elif kind == "residual":
        branch = nn.Sequential(lnn.spectral_norm(nn.Linear(width, width)), nn.ReLU())
        layer, out = lnn.Residual(branch, t=rng.random(), learnable=rng.random() < 0.5), width
    else:
        layer, out = nn.BatchNorm1d(width), width
    draw.description.append(f"{kind}({width}->{out})")
    return layer, out


def _activation(rng: random.Random, kind: str) -> nn.Module:
    """Activations with random parameters, some of them hostile (negative alpha, a Softplus
    threshold where its switch to x jumps): the bound must hold or the module be refused."""
    return {
        "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity, "maxmin": lnn.MaxMin,
        "groupsort2": lambda: lnn.GroupSort(2), "fullsort": lnn.FullSort,
        "leaky": lambda: nn.LeakyReLU(rng.choice([0.3, -2.0])),
        "elu": lambda: nn.ELU(rng.choice([1.0, 0.5, -3.0])),
        "celu": lambda: nn.CELU(rng.choice([1.0, 2.0, 0.5, 1.0, -0.5])),
        "selu": nn.SELU, "gelu": lambda: nn.GELU(rng.choice(["none", "tanh"])),
        "silu": nn.SiLU, "mish": nn.Mish, "hardswish": nn.Hardswish,
        "hardsigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign,
        "relu6": nn.ReLU6, "hardtanh": lambda: nn.Hardtanh(-rng.random(), rng.random()),
        "softplus": lambda: nn.Softplus(rng.choice([1.0, 3.0]),
                                        rng.choice([20.0, 20.0, 30.0, 20.0, 1.0, -2.0])),
        "prelu": lambda: _prelu(rng), "tanhshrink": nn.Tanhshrink,
        "softshrink": lambda: nn.Softshrink(rng.random()),
    }[kind]()


def _prelu(rng: random.Random) -> nn.PReLU:
    layer = nn.PReLU()
    with torch.no_grad():
        layer.weight.fill_(rng.choice([0.25, -2.0, 3.0]))
    return layer


_ELEMENTWISE = ["relu", "tanh", "identity", "leaky", "elu", "celu", "selu", "gelu", "silu",
                "mish", "hardswish", "hardsigmoid", "sigmoid", "softsign", "relu6", "hardtanh",
                "softplus", "prelu", "tanhshrink", "softshrink"]


def _dense_activation(rng: random.Random, width: int, draw: Draw) -> nn.Module:
    options = list(_ELEMENTWISE)
    if width % 2 == 0:
        options += ["maxmin", "groupsort2"]
    if width <= 8:
        options.append("fullsort")
    kind = rng.choice(options)
    module = _activation(rng, kind)
    draw.description.append(repr(module) if kind not in ("maxmin", "groupsort2") else kind)
    return module


def _conv_layer(rng: random.Random, channels: int, size: int,
                draw: Draw) -> tuple[nn.Module, int, int]:
    """A convolutional layer or block; returns it, its output channels and spatial size."""
    kind = rng.choice(["spectral", "aol", "bcop", "aoc", "aoc-stride", "clip", "plain",
                       "sll-scaling", "sll-block", "cpl-block", "soc", "cayley", "pool",
                       "batchnorm"])
    out = rng.choice([channels, 2 * channels, max(1, channels // 2)])
    k = rng.choice([1, 2, 3, 5]) if kind in ("spectral", "aol", "clip", "plain",
                                             "sll-scaling") else 3
    padding = rng.choice([0, k // 2, k - 1]) if k > 1 else 0
    padding = min(padding, max(0, size - 1))
    mode = rng.choice(["zeros", "zeros", "circular", "reflect", "replicate"])
    if mode != "zeros" and (padding == 0 or padding >= size):
        mode = "zeros"
    stride = rng.choice([1, 1, 2])
    groups = 1
    if kind in ("spectral", "aol", "plain", "aoc") and channels % 2 == 0 and out % 2 == 0:
        groups = rng.choice([1, 2])

    def conv(kernel: int, **options) -> nn.Conv2d:
        return nn.Conv2d(channels, out, kernel, **options)

    if kind in ("spectral", "aol", "clip", "plain", "sll-scaling"):
        dilation = rng.choice([1, 1, 2])
        if size + 2 * padding < dilation * (k - 1) + 1:
            k, padding, dilation = 1, 0, 1
            mode = "zeros"
        layer = conv(k, stride=stride, padding=padding, padding_mode=mode, groups=groups,
                     dilation=dilation, bias=rng.random() < 0.7)
        if kind == "spectral":
            layer = lnn.spectral_norm(layer, lipschitz=rng.choice([1.0, 2.0]),
                                      n_power_iterations=rng.choice([1, 4]))
        elif kind == "aol":
            layer = lnn.aol(layer)
        elif kind == "clip":
            layer = lnn.weight_clip(layer, clip_value=rng.choice([0.01, 0.1]))
        elif kind == "sll-scaling":
            layer = lnn.sdp_scaling(layer)
        new_size = (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1
        draw.description.append(f"{kind}-conv({channels}->{out}, k{k}, s{stride}, p{padding}, "
                                f"d{dilation}, {mode}, g{groups})")
        return layer, out, new_size
    if kind == "bcop":
        layer = lnn.bcop(nn.Conv2d(channels, out, 3, padding=1))
        draw.description.append(f"bcop({channels}->{out})")
        return layer, out, size
    if kind in ("aoc", "aoc-stride"):
        s = 2 if kind == "aoc-stride" and size >= 2 else 1
        pad = rng.choice([0, 1])
        if size + 2 * pad < 3:
            pad = 1
        layer = lnn.aoc(nn.Conv2d(channels, out, 3, stride=s, padding=pad, groups=groups))
        draw.description.append(f"aoc({channels}->{out}, s{s}, p{pad}, g{groups})")
        return layer, out, (size + 2 * pad - 3) // s + 1
    if kind == "sll-block":
        draw.description.append(f"sll-block({channels})")
        return lnn.SLLConv2d(channels, rng.choice([channels, 2 * channels])), channels, size
    if kind == "cpl-block":
        draw.description.append(f"cpl-block({channels})")
        return lnn.CPLConv2d(channels, rng.choice([channels, 2 * channels]),
                             n_power_iterations=rng.choice([1, 3])), channels, size
    if kind == "soc":
        terms = rng.choice([2, 6])
        draw.description.append(f"soc({channels}, terms {terms})")
        return (lnn.SkewOrthogonalConv2d(channels, terms=terms, eval_terms=rng.choice([3, 12]),
                                         padding_mode=rng.choice(["zeros", "circular"])),
                channels, size)
    if kind == "cayley":
        draw.description.append(f"cayley({channels})")
        return lnn.CayleyConv2d(channels), channels, size
    if kind == "pool":
        choice = rng.choice(["avg", "max", "scaled-avg", "l2"])
        if size < 2:
            draw.description.append("identity")
            return nn.Identity(), channels, size
        kernel = 2
        stride = rng.choice([1, 2])
        padding = rng.choice([0, 0, 1])
        ceil = rng.random() < 0.3
        options = {"padding": padding, "ceil_mode": ceil}
        dilation = rng.choice([1, 2]) if choice == "max" and size >= 3 else 1
        layer = {"avg": lambda: nn.AvgPool2d(kernel, stride, count_include_pad=rng.random() < 0.5,
                                             divisor_override=rng.choice([None, None, -1, 3]),
                                             **options),
                 "max": lambda: nn.MaxPool2d(kernel, stride, dilation=dilation, **options),
                 "scaled-avg": lambda: lnn.ScaledAvgPool2d(kernel, stride),
                 "l2": lambda: lnn.L2NormPool2d(kernel, stride)}[choice]()
        draw.description.append(repr(layer))
        with torch.no_grad():
            out = layer(torch.zeros(1, channels, size, size)).shape[-1]
        return layer, channels, out
    draw.description.append("batchnorm2d")
    return nn.BatchNorm2d(channels), channels, size


def _conv_activation(rng: random.Random, channels: int, draw: Draw) -> nn.Module:
    options = list(_ELEMENTWISE)
    if channels % 2 == 0:
        options += ["maxmin", "groupsort2"]
    kind = rng.choice(options)
    module = _activation(rng, kind)
    draw.description.append(repr(module) if kind not in ("maxmin", "groupsort2") else kind)
    return module


def _preset(rng: random.Random, draw: Draw) -> tuple[nn.Sequential, torch.Tensor]:
    """One of lipkit.certify's preset architectures, small, on a small input."""
    from lipkit.certify import presets

    kind = rng.choice(["mlp", "convnet", "comparison", "liresnet"])
    last = rng.choice(presets.LAST_LAYERS)
    if kind == "mlp":
        layer = rng.choice(["bjorck", "spectral", "aol", "sll", "clip"])
        features = rng.randint(2, 16)
        model = presets.lipschitz_mlp(features, rng.randint(2, 5), hidden=(16, 16),
                                      layer=layer, last=last)
        x = torch.randn(16, features)
    elif kind == "convnet":
        layer = rng.choice(["orthogonal", "spectral", "aol"])
        model = presets.lipschitz_convnet(rng.choice([1, 3]), 8, 3, layer=layer, last=last)
        x = torch.randn(4, model[0].in_channels, 8, 8)
    elif kind == "comparison":
        layer = rng.choice(presets.COMPARISON_LAYERS)
        model = presets.comparison_convnet(3, 8, 3, size="small", layer=layer, last=last)
        x = torch.randn(2, 3, 8, 8)
    else:
        layer = rng.choice(["sll", "cpl"])
        model = presets.liresnet(3, 8, 3, size="small", block=layer, last=last)
        x = torch.randn(2, 3, 8, 8)
    draw.description.append(f"preset {kind}({layer}, last {last})")
    return model, x


def draw_model(seed: int) -> tuple[nn.Module, torch.Tensor, Draw]:
    """A random model of lipkit layers and a batch of its inputs."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    draw = Draw(seed, rng.choice(["ordinary", "ordinary", "tiny", "huge", "trained",
                                  "trained", "stretched"]))
    layers: list[nn.Module] = []
    if rng.random() < 0.15:
        model, x = _preset(rng, draw)
        layers = list(model)
    elif rng.random() < 0.5:
        width = rng.randint(1, 12)
        x = torch.randn(16, width)
        for _ in range(rng.randint(1, 4)):
            layer, width = _dense_layer(rng, width, draw)
            layers += [layer, _dense_activation(rng, width, draw)]
    else:
        channels, size = rng.choice([1, 2, 3, 4, 6]), rng.randint(3, 9)
        x = torch.randn(8, channels, size, size)
        for _ in range(rng.randint(1, 3)):
            layer, channels, size = _conv_layer(rng, channels, size, draw)
            layers += [layer, _conv_activation(rng, channels, draw)]
            if size < 1:
                raise ValueError("degenerate draw")
        layers += [nn.Flatten(), nn.Linear(channels * size * size, rng.randint(1, 5))]
        draw.description.append("flatten-linear")
    model = nn.Sequential(*layers)
    model.train()
    model(x)  # input sizes, first power iterations
    if draw.regime in ("tiny", "huge"):
        factor = 1e-4 if draw.regime == "tiny" else 1e4
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(factor)
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.running_var.mul_(factor)
    elif draw.regime == "stretched":
        # train the parameters to maximize a pair ratio: layers pushed to their bound's edge
        optimizer = torch.optim.Adam(model.parameters(), lr=rng.choice([1e-2, 1e-1]))
        for _ in range(rng.randint(5, 20)):
            optimizer.zero_grad()
            a = x + 0.1 * torch.randn_like(x)
            ratio = ((model(a) - model(x)).flatten(1).norm(dim=1)
                     / (a - x).flatten(1).norm(dim=1)).mean()
            if not torch.isfinite(ratio):
                break
            (-ratio).backward()
            optimizer.step()
    elif draw.regime == "trained":
        optimizer = torch.optim.SGD(model.parameters(), lr=rng.choice([0.1, 1.0]))
        target = torch.randn_like(model(x))
        for _ in range(rng.randint(1, 5)):
            optimizer.zero_grad()
            loss = (model(x) - target).pow(2).mean()
            if not torch.isfinite(loss):
                break
            loss.backward()
            optimizer.step()
    model.eval()
    return model, x, draw


def _pair_ratio(model: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """``||f(a) - f(b)|| / ||a - b||`` in float64 and its rounding tolerance (relative)."""
    with torch.no_grad():
        fa, fb = model(a[None])[0], model(b[None])[0]
    distance = float((a - b).norm())
    change = float((fa - fb).norm())
    if distance == 0 or not math.isfinite(change):
        return 0.0, 0.0
    scale = float(fa.abs().max() + fb.abs().max()) * math.sqrt(fa.numel())
    # the outputs' own rounding, amplified by the difference, plus the inputs' difference
    slack = 1e-9 + 256 * EPS64 * scale / max(change, 1e-300) + 64 * EPS64 * float(
        a.abs().max() + b.abs().max()) / distance
    return change / distance, slack


def oracle_lower(plain: nn.Module, x: torch.Tensor, iterations: int = 25,
                 ascent_steps: int = 40) -> tuple[float, float]:
    """The best pair ratio of the exported model ``plain`` found, and its rounding slack
    (relative)."""
    model64 = _float64(plain)
    points = x.double()
    best, slack = 0.0, 0.0
    generator = torch.Generator().manual_seed(0)
    for point in points[:4]:
        direction = torch.randn(point.shape, generator=generator, dtype=torch.float64)
        for _ in range(iterations):
            probe = point.clone().requires_grad_(True)
            # J v by a central difference (a search direction only: some activations have
            # no double backward), J^T (J v) by autograd
            h = 1e-6 * max(1.0, float(point.norm()))
            with torch.no_grad():
                jv = (model64((point + h * direction)[None])[0]
                      - model64((point - h * direction)[None])[0]) / (2 * h)
            (jtjv,) = torch.autograd.grad(model64(probe[None])[0], probe, jv,
                                          allow_unused=True)
            if jtjv is None or not torch.isfinite(jtjv).all() or float(jtjv.norm()) == 0:
                break
            direction = jtjv / jtjv.norm()
        for step in (1e-5, 1e-3, 1e-1):
            h = step * max(1.0, float(point.norm()))
            ratio, tol = _pair_ratio(model64, point, point + h * direction)
            if ratio > best:
                best, slack = ratio, tol
        # gradient ascent on the pair ratio from the power iteration's pair
        a = point.clone().requires_grad_(True)
        b = (point + 0.1 * direction).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([a, b], lr=0.05)
        for _ in range(ascent_steps):
            optimizer.zero_grad()
            ratio = (model64(a[None]) - model64(b[None])).norm() / ((a - b).norm() + 1e-300)
            if not torch.isfinite(ratio):
                break
            (-ratio).backward()
            optimizer.step()
        ratio, tol = _pair_ratio(model64, a.detach(), b.detach())
        if ratio > best:
            best, slack = ratio, tol
    return best, slack


def _float64(plain: nn.Module) -> nn.Module:
    """A float64 copy of ``plain`` (complex buffers, such as a Fourier convolution's
    transfer matrices, to complex128)."""
    model64 = copy.deepcopy(plain).eval()
    model64.double()
    for module in model64.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_complex():
                setattr(module, name, buffer.to(torch.complex128))
    return model64


def check(seed: int) -> dict:
    """One draw: its bounds, the oracle and the failures (a JSON-ready dict)."""
    record: dict = {"seed": seed, "version": DRAW_VERSION, "failures": [], "refused": None}
    try:
        model, x, draw = draw_model(seed)
    except ValueError:
        record["skipped"] = "degenerate draw"
        return record
    record.update(regime=draw.regime, model=" ".join(draw.description))
    try:
        bound = lnn.lipschitz_bound(model, example_input=x)
    except LipkitError as error:
        record["refused"] = str(error).splitlines()[0]
        return record
    except Exception:
        record["failures"].append("bound raised: " + traceback.format_exc(limit=3))
        return record
    record["bound"] = bound
    try:
        plain = lnn.export(model)
        with torch.no_grad():
            expected, exported_out = model(x), plain(x)
        if bool(torch.isfinite(expected).all()):
            same = torch.allclose(exported_out, expected, rtol=1e-4,
                                  atol=1e-5 * (1 + float(expected.abs().max())))
            if not same:
                record["failures"].append("export: outputs differ")
        else:  # float32 overflow in the forward pass (huge parameters): nothing to compare
            record["float32_overflow"] = True
        exported = lnn.lipschitz_bound(plain, example_input=x)
        record["exported"] = exported
    except Exception:
        record["failures"].append("export raised: " + traceback.format_exc(limit=3))
        return record
    lower, slack = oracle_lower(plain, x)
    record.update(lower=lower, slack=slack)
    if not math.isfinite(bound) or bound < 0:
        record["failures"].append(f"bound is {bound}")
    for name, value in (("bound", bound), ("exported", exported)):
        if lower > value * (1 + slack) + 1e-300:
            record["failures"].append(f"{name} {value!r} < lower {lower!r} (slack {slack:.1e})")
    return record
