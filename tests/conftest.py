"""Shared fixtures of lipkit's tests: devices, dtypes and the exact oracles.

The oracles never come from the code under test. An operator norm is the largest singular
value (an SVD in float64) of a dense matrix built here, by pushing the identity basis through
a plain torch layer or function; a Lipschitz bound is checked against ratios
``|f(x) - f(y)| / |x - y|`` and Jacobian norms that torch computes.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from torch import nn

# two pytest-xdist workers on two cores: one thread each, or OpenMP oversubscription makes
# every torch call orders of magnitude slower
torch.set_num_threads(1)

# timings on a shared two-core machine vary: no per-example deadline (each test sets its own
# max_examples, small enough for the suite to run in minutes). CI runs the same examples every
# time (derandomize); HYPOTHESIS_PROFILE=explore draws new ones, to look for new failures.
settings.register_profile(
    "lipkit", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("explore", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lipkit"))

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def pytest_configure(config):
    # torch's notice that even "same" kernels copy the input: expected in geometry sweeps
    config.addinivalue_line(
        "filterwarnings", "ignore:Using padding='same' with even kernel:UserWarning"
    )
    # raised by torch.func's own imports, not by lipkit
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
    )


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@pytest.fixture(scope="session", params=DEVICES)
def device(request) -> torch.device:
    """Every device: the CPU always, CUDA when present (STYLE.md point 9)."""
    return torch.device(request.param)


@pytest.fixture(scope="session", params=list(DTYPES.values()), ids=list(DTYPES))
def dtype(request) -> torch.dtype:
    """Every floating dtype a user trains in: float32 and float64."""
    return request.param


def materialize(function, input_shape) -> torch.Tensor:
    """The matrix of the affine map ``function`` on inputs of ``input_shape`` (no batch dim).

    Column ``i`` is ``function(e_i) - function(0)``: the identity basis pushed through, the
    offset (a bias) removed. Computed in float64 on the CPU.
    """
    size = math.prod(input_shape)
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *input_shape)
    with torch.no_grad():
        columns = function(basis) - function(torch.zeros(1, *input_shape, dtype=torch.float64))
    return columns.reshape(size, -1).T


def exact_norm(matrix: torch.Tensor) -> float:
    """The largest singular value of a matrix, by an SVD in float64."""
    return float(torch.linalg.svdvals(matrix.detach().to("cpu", torch.float64))[0])


def plain_copy(layer: nn.Module) -> nn.Module:
    """A float64 CPU torch layer with ``layer``'s geometry and its current weight, no bias.

    The weight is read once (in eval mode, so that nothing is iterated) and stored as a plain
    parameter: the copy is torch's own Linear / Conv, independent of lipkit.
    """
    modes = {module: module.training for module in layer.modules()}
    layer.eval()
    with torch.no_grad():
        weight = layer.weight.detach().to("cpu", torch.float64).clone()
    for module, mode in modes.items():
        module.training = mode
    if isinstance(layer, nn.Linear):
        copy = nn.Linear(layer.in_features, layer.out_features, bias=False)
    else:
        kind = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(layer.kernel_size)]
        copy = kind(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, bias=False,
            padding_mode=layer.padding_mode,
        )
    copy = copy.double()
    with torch.no_grad():
        copy.weight.copy_(weight)
    return copy


def operator_matrix(layer: nn.Module, input_shape=None) -> torch.Tensor:
    """The linear part of a Linear (its weight) or Conv (materialized on ``input_shape``)."""
    if isinstance(layer, nn.Linear):
        return plain_copy(layer).weight.detach()
    return materialize(plain_copy(layer), input_shape)


def operator_norm(layer: nn.Module, input_shape=None) -> float:
    """The exact l2 operator norm of a layer's linear part (conv: on ``(C, *input_size)``)."""
    return exact_norm(operator_matrix(layer, input_shape))


@pytest.fixture(scope="session")
def oracle():
    """The exact oracles above, as a fixture (test modules are imported by path)."""

    functions = (materialize, exact_norm, plain_copy, operator_matrix, operator_norm,
                 lipschitz_ratios)
    return SimpleNamespace(**{function.__name__: function for function in functions})


def lipschitz_ratios(function, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||f(x_i) - f(y_i)|| / ||x_i - y_i||`` for each pair of a batch."""
    with torch.no_grad():
        difference = (function(x) - function(y)).flatten(1).norm(dim=1)
    return difference / (x - y).flatten(1).norm(dim=1)


@st.composite
def _conv_layers(
    draw,
    dims=(1, 2),
    padding_modes=PADDING_MODES,
    max_groups: int = 2,
    max_channels: int = 3,
    max_size: int = 6,
    max_stride: int = 2,
    max_dilation: int = 2,
    max_kernel: int = 3,
    same: bool | None = None,
):
    """A random ``nn.Conv1d/2d`` (float64, random weight) and a valid input shape ``(C, *n)``.

    Draws channels, groups, kernel, stride, dilation, padding (explicit per dimension or
    ``"same"``; ``same=True`` forces it and stride 1), padding mode and input size, and keeps
    only geometries torch accepts.
    """
    d = draw(st.sampled_from(dims))
    groups = draw(st.integers(1, max_groups))
    in_channels = groups * draw(st.integers(1, max_channels))
    out_channels = groups * draw(st.integers(1, max_channels))
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, max_dilation)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 1 if same else max_stride)) for _ in range(d))
    size = tuple(draw(st.integers(1, max_size)) for _ in range(d))
    mode = draw(st.sampled_from(padding_modes))
    # the most padding torch accepts on one side for this mode and size
    limits = {
        "zeros": lambda n: 2, "replicate": lambda n: 2,
        "reflect": lambda n: min(2, n - 1), "circular": lambda n: min(2, n),
    }[mode]
    if same or (same is None and all(s == 1 for s in stride) and draw(st.booleans())):
        padding = "same"
        sides = [(e * (k - 1) // 2, e * (k - 1) - e * (k - 1) // 2)
                 for k, e in zip(kernel, dilation, strict=True)]
        assume(all(max(sides_) <= limits(n) for sides_, n in zip(sides, size, strict=True)))
        padded = [n + sum(sides_) for n, sides_ in zip(size, sides, strict=True)]
    else:
        padding = tuple(draw(st.integers(0, max(0, limits(n)))) for n in size)
        padded = [n + 2 * p for n, p in zip(size, padding, strict=True)]
    assume(all(p >= e * (k - 1) + 1 for p, k, e in zip(padded, kernel, dilation, strict=True)))
    kind = {1: nn.Conv1d, 2: nn.Conv2d}[d]
    conv = kind(in_channels, out_channels, kernel, stride, padding, dilation, groups,
                bias=draw(st.booleans()), padding_mode=mode, dtype=torch.float64)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator,
                                      dtype=torch.float64))
    return conv, (in_channels, *size)


@pytest.fixture(scope="session")
def conv_layers():
    """The strategy of random convolutions (draw it with hypothesis' ``st.data()``)."""
    return _conv_layers
