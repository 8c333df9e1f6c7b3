"""Operator norms of the linear maps inside layers: dense matrices and convolutions.

The l2 Lipschitz constant of an affine layer ``x -> A x + b`` is the largest singular value
``sigma_1(A)`` of its linear part. For a dense layer ``A`` is the weight matrix. For a
convolution ``A`` is the *convolution operator* on inputs of a given size, whose norm
depends on the stride, the padding and the input size, and is **not** the norm of the
kernel reshaped to a matrix (the quantity ``torch.nn.utils.spectral_norm`` normalizes).

This module gives, for both kinds:

- :func:`linear_operator_norm`: ``sigma_1`` of a matrix, computed exactly (SVD, float64);
- :func:`conv_power_iteration`: power iteration through ``conv`` and its adjoint
  (``conv_transpose``), the estimate spectral normalization uses (a lower bound);
- :func:`conv_operator_norm_upper`: a sound upper bound. With the input size known, the
  padded input is embedded in a torus on which the convolution is circular, and a circular
  convolution is block-diagonalised by the DFT (Sedghi, Gupta & Long, ICLR 2019), so its
  norm is ``max_omega sigma_1(K_hat(omega))``; cropping, striding and zero padding can only
  shrink it. On small maps (at most :data:`EXACT_ENTRIES` entries in the operator's
  matrix) also the materialized operator's norm, rounding included, which the DFT bound
  can exceed by 10-50 % when the map is not much larger than the kernel. Without an input
  size, ``sqrt(prod(k)) * sigma_1(K reshaped)``, which holds for every input size;
- :func:`conv_matrix`: the operator materialised as a dense matrix (small inputs, tests).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.linalg import spectral_norm_upper

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE_FUNCTIONS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def linear_operator_norm(weight: torch.Tensor) -> float:
    """Largest singular value of a matrix (the l2 operator norm), by an SVD in float64."""
    if weight.ndim != 2:
        shape = tuple(weight.shape)
        raise InvalidArgumentError(f"expected a matrix, got a tensor of shape {shape}")
    if weight.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(weight.detach().double(), ord=2))


@dataclass(frozen=True)
class ConvGeometry:
    """Everything besides the kernel that fixes a convolution operator.

    ``padding`` holds one ``(before, after)`` pair per spatial dimension, so that PyTorch's
    ``padding="same"`` with even kernels (asymmetric padding) is represented exactly.
    ``input_size`` is the spatial size of the input, or ``None`` when it is not known yet.
    """

    dims: int
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    input_size: tuple[int, ...] | None = None

    @classmethod
    def of(cls, conv: nn.Module, input_size=None) -> ConvGeometry:
        """The geometry of an ``nn.Conv1d/2d/3d`` (optionally with a known input size)."""
        if not isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            raise InvalidArgumentError(f"expected nn.Conv1d/2d/3d, got {type(conv).__name__}")
        kernel = tuple(conv.kernel_size)
        dims = len(kernel)
        dilation = tuple(conv.dilation)
        if isinstance(conv.padding, str):
            if conv.padding == "valid":
                padding = tuple((0, 0) for _ in range(dims))
            else:  # "same": total d*(k-1), the extra element after, as PyTorch does
                padding = tuple(
                    (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                    for k, d in zip(kernel, dilation, strict=True)
                )
        else:
            padding = tuple((p, p) for p in conv.padding)
        if conv.padding_mode not in _PADDING_MODES:
            raise InvalidArgumentError(f"unsupported padding_mode {conv.padding_mode!r}")
        geometry = cls(
            dims=dims,
            stride=tuple(conv.stride),
            padding=padding,
            dilation=dilation,
            groups=conv.groups,
            padding_mode=conv.padding_mode,
        )
        return geometry.with_input_size(input_size) if input_size is not None else geometry

    def with_input_size(self, input_size) -> ConvGeometry:
        """A copy with the spatial input size set (an int is used for every dimension)."""
        if isinstance(input_size, int):
            input_size = (input_size,) * self.dims
        input_size = tuple(int(s) for s in input_size)
        if len(input_size) != self.dims or min(input_size) < 1:
            raise InvalidArgumentError(
                f"input_size must give {self.dims} positive spatial sizes, got {input_size}"
            )
        return replace(self, input_size=input_size)

    def padded_size(self) -> tuple[int, ...]:
        return tuple(
            size + before + after
            for size, (before, after) in zip(self.input_size, self.padding, strict=True)
        )

    def output_size(self, kernel_size) -> tuple[int, ...]:
        return tuple(
            (n - d * (k - 1) - 1) // s + 1
            for n, k, d, s in zip(
                self.padded_size(), kernel_size, self.dilation, self.stride, strict=True
            )
        )

    def _flat_padding(self) -> list[int]:
        # F.pad wants the last dimension first
        flat: list[int] = []
        for before, after in reversed(self.padding):
            flat += [before, after]
        return flat

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if not any(b or a for b, a in self.padding):
            return x
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, self._flat_padding(), mode=mode)

    def _pad_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not any(b or a for b, a in self.padding):
            return y
        if self.padding_mode == "zeros":
            index = [slice(None), slice(None)]
            index += [
                slice(b, b + s) for (b, _), s in zip(self.padding, self.input_size, strict=True)
            ]
            return y[tuple(index)]
        # the adjoint of a circular / reflect / replicate padding: let autograd sum the copies
        with torch.enable_grad():
            x = torch.zeros(y.shape[:2] + self.input_size, dtype=y.dtype, device=y.device)
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(self._pad(x), x, y)
        return grad

    def apply(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The convolution operator (no bias) applied to ``x``."""
        return _CONV_FUNCTIONS[self.dims](
            self._pad(x), weight, None, self.stride, 0, self.dilation, self.groups
        )

    def apply_adjoint(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The adjoint (transpose) of the convolution operator applied to ``y``."""
        padded = self.padded_size()
        out = self.output_size(weight.shape[2:])
        output_padding = tuple(
            n - ((o - 1) * s + d * (k - 1) + 1)
            for n, o, s, d, k in zip(
                padded, out, self.stride, self.dilation, weight.shape[2:], strict=True
            )
        )
        x_padded = _CONV_TRANSPOSE_FUNCTIONS[self.dims](
            y, weight, None, self.stride, 0, output_padding, self.groups, self.dilation
        )
        return self._pad_adjoint(x_padded)

    def _padding_norm(self) -> float:
        """An upper bound on the norm of the padding map (1 for zeros and circular)."""
        if self.padding_mode in ("zeros", "circular"):
            return 1.0
        copies = 1
        for (before, after), size in zip(self.padding, self.input_size, strict=True):
            if self.padding_mode == "reflect":
                # a sample appears once, plus at most once in each padded border
                copies *= 1 + (before > 0) + (after > 0)
            else:  # replicate: the border samples are repeated
                copies *= 1 + before + after if size == 1 else 1 + max(before, after)
        return math.sqrt(copies)


def conv_power_iteration(
    weight: torch.Tensor,
    geometry: ConvGeometry,
    u: torch.Tensor,
    n_iterations: int = 1,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power iteration on ``A^T A`` for the convolution operator ``A``.

    ``u`` has the input's shape ``(1, in_channels, *input_size)``. Returns unit vectors
    ``(u, v)`` with ``v = A u / ||A u||``; ``<v, A u>`` is then an estimate of ``sigma_1(A)``
    from below.
    """
    weight = weight.detach()
    with torch.no_grad():
        v = geometry.apply(u, weight)
        v = v / (v.norm() + eps)
        for _ in range(n_iterations):
            u = geometry.apply_adjoint(v, weight)
            u = u / (u.norm() + eps)
            v = geometry.apply(u, weight)
            v = v / (v.norm() + eps)
    return u, v


#: operators with at most this many entries are materialized for their exact norm
EXACT_ENTRIES = 1 << 22


def conv_operator_norm_upper(weight: torch.Tensor, geometry: ConvGeometry,
                             exact_entries: int = EXACT_ENTRIES) -> float:
    """A sound upper bound on ``sigma_1`` of the convolution operator (see module docstring).

    With the input size known, zero padding that makes up a third of the torus or more,
    and at most ``exact_entries`` entries in the operator's matrix, also the norm of the
    materialized operator (:func:`lipkit.linalg.spectral_norm_upper`: its top Gram
    eigenvalue plus the rounding of the Gram and of the eigensolver), and the smaller of
    the two: on small feature maps the torus of the DFT bound is much larger than the map
    (a 3x3 kernel on a 4x4 map: the 6x6 torus), and the DFT bound can exceed the operator's
    norm by 10-50 %.
    ``exact_entries=0``: the DFT bound only.
    """
    bound = _conv_norm_bound(weight.detach().double(), geometry)
    if (geometry.input_size is not None and exact_entries > 0
            and geometry.padding_mode == "zeros"
            and math.prod(geometry.padded_size()) >= 1.5 * math.prod(geometry.input_size)):
        # (only where the padding is a large part of the torus: elsewhere the DFT bound is
        # close to the norm and the materialization would cost seconds for little)
        in_channels = weight.shape[1] * geometry.groups
        inputs = in_channels * math.prod(geometry.input_size)
        outputs = weight.shape[0] * math.prod(geometry.output_size(tuple(weight.shape[2:])))
        if 0 < inputs * outputs <= exact_entries:
            # the operator's entries are the kernel's (a convolution of one-hot inputs is
            # exact), so the proven norm of its matrix is the operator's
            bound = min(bound, spectral_norm_upper(conv_matrix(weight.detach().double(),
                                                               geometry)))
    return bound


def _conv_norm_bound(weight: torch.Tensor, geometry: ConvGeometry) -> float:
    """The DFT bound (with the input size) or the size-free bound."""
    out_channels, in_per_group = weight.shape[:2]
    groups = geometry.groups
    kernel = tuple(weight.shape[2:])
    taps = math.prod(kernel)
    # one block per group: the operator is block diagonal over groups
    blocks = weight.reshape(groups, out_channels // groups, in_per_group, *kernel)
    if geometry.input_size is None:
        # ||conv|| <= sqrt(#taps) * ||[K_1 ... K_T]||_2 (Cauchy-Schwarz over the taps), and the
        # same with the taps stacked vertically; valid for every input size, stride, dilation.
        wide = blocks.reshape(groups, out_channels // groups, -1)
        tall = blocks.permute(0, *range(3, 3 + geometry.dims), 1, 2).reshape(
            groups, -1, in_per_group
        )
        best = min(
            torch.linalg.matrix_norm(wide, ord=2).max().item(),
            torch.linalg.matrix_norm(tall, ord=2).max().item(),
        )
        return math.sqrt(taps) * best * _padding_norm_unknown_size(geometry, kernel)
    if geometry.padding_mode == "circular":
        torus = geometry.input_size
        output = geometry.output_size(kernel)
        # output j is row (j * s - before) mod n of the circular operator; when the padding
        # wraps around, rows repeat, and ||S C|| <= sqrt(max multiplicity) ||C|| for a row
        # selection S. Count the multiplicity exactly: with a stride it can exceed ceil(o / n)
        # (n = 2, padding 2, stride 2: the three outputs are all row 0).
        repeats = math.prod(
            max(Counter(j * s % n for j in range(o)).values())
            for o, n, s in zip(output, torus, geometry.stride, strict=True)
        )
        factor = math.sqrt(repeats)
    else:
        torus = geometry.padded_size()
        factor = geometry._padding_norm()
    return factor * _circular_norm(blocks, torus, geometry.dilation)


def _padding_norm_unknown_size(geometry: ConvGeometry, kernel_size) -> float:
    """For every input size, a bound on ``||S_t P||``: one kernel tap's view of the padding.

    Per dimension: 1 for zero padding, and for circular padding that does not wrap around
    (``before + after <= d (k - 1)``: the outputs are distinct rows of the circular
    operator). Otherwise the norm of the padding map ``P``: a sample appears in the input and
    at most once in each border (torch pads circular and reflect by at most one period), or
    up to ``1 + before + after`` times with replicate padding. A circular padding that wraps
    (``Conv1d(1, 1, 1, padding=1, padding_mode="circular")`` on one sample outputs it three
    times) is not norm preserving.
    """
    copies = 1
    for (before, after), k, d in zip(geometry.padding, kernel_size, geometry.dilation,
                                     strict=True):
        mode = geometry.padding_mode
        if mode == "zeros" or (mode == "circular" and before + after <= d * (k - 1)):
            continue
        if mode in ("reflect", "circular"):
            copies *= 1 + (before > 0) + (after > 0)
        else:
            copies *= 1 + before + after
    return math.sqrt(copies)


def _circular_norm(blocks: torch.Tensor, torus, dilation, max_elements: int = 1 << 23) -> float:
    """max over DFT frequencies of sigma_1 of the kernel's frequency response, all groups."""
    groups, c_out, c_in = blocks.shape[:3]
    kernel = blocks.shape[3:]
    # phase of tap a at frequency w along one dimension: exp(-2 pi i w d a / n)
    phases = None
    real = {"dtype": torch.float64, "device": blocks.device}
    for n, k, d in zip(torus, kernel, dilation, strict=True):
        w = torch.arange(n, **real)[:, None]
        a = torch.arange(k, **real)[None, :] * d
        e = torch.polar(torch.ones(n, k, **real), -2 * math.pi * w * a / n)
        phases = e if phases is None else (phases[:, None, :, None] * e[None, :, None, :]).reshape(
            phases.shape[0] * n, phases.shape[1] * k
        )
    flat = blocks.reshape(groups * c_out * c_in, -1).to(torch.complex128)  # (G*co*ci, taps)
    chunk = max(1, max_elements // max(1, groups * c_out * c_in))
    best = 0.0
    for start in range(0, phases.shape[0], chunk):
        response = phases[start : start + chunk] @ flat.T  # (chunk, G*co*ci)
        response = response.reshape(-1, c_out, c_in)
        best = max(best, torch.linalg.matrix_norm(response, ord=2).max().item())
    return best


def conv_matrix(weight: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """The convolution operator as a dense matrix of shape (outputs, inputs); small sizes only."""
    if geometry.input_size is None:
        raise InvalidArgumentError("conv_matrix needs the input size (geometry.with_input_size)")
    in_channels = weight.shape[1] * geometry.groups
    n_inputs = in_channels * math.prod(geometry.input_size)
    basis = torch.eye(n_inputs, dtype=weight.dtype, device=weight.device)
    basis = basis.reshape(n_inputs, in_channels, *geometry.input_size)
    with torch.no_grad():
        columns = geometry.apply(basis, weight.detach())
    return columns.reshape(n_inputs, -1).T
