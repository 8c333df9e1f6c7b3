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

import contextlib
import contextvars
import math
from collections import Counter
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.linalg import UNIT, gamma, round_up, spectral_norm_upper

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
_exact_entries: contextvars.ContextVar[int] = contextvars.ContextVar("exact_entries",
                                                                     default=EXACT_ENTRIES)


@contextlib.contextmanager
def materialize_up_to(entries: int):
    """Within the block, :func:`conv_operator_norm_upper` materializes operators of up to
    ``entries`` entries by default (``lipschitz_bound(..., exact_entries=)`` uses it)."""
    if int(entries) < 0:
        raise InvalidArgumentError(f"exact_entries must be >= 0, got {entries}")
    token = _exact_entries.set(int(entries))
    try:
        yield
    finally:
        _exact_entries.reset(token)


def conv_operator_norm_upper(weight: torch.Tensor, geometry: ConvGeometry,
                             exact_entries: int | None = None) -> float:
    """A sound upper bound on ``sigma_1`` of the convolution operator (see module docstring).

    With the input size known, zero padding that makes up a third of the torus or more,
    and at most ``exact_entries`` entries in the operator's matrix, also the norm of the
    materialized operator (:func:`lipkit.linalg.spectral_norm_upper`: its top Gram
    eigenvalue plus the rounding of the Gram and of the eigensolver), and the smaller of
    the two: on small feature maps the torus of the DFT bound is much larger than the map
    (a 3x3 kernel on a 4x4 map: the 6x6 torus), and the DFT bound can exceed the operator's
    norm by 10-50 %.
    ``exact_entries=0``: the DFT bound only; ``None``: :data:`EXACT_ENTRIES`, or what an
    enclosing :func:`materialize_up_to` set.
    """
    if exact_entries is None:
        exact_entries = _exact_entries.get()
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


#: the size-free bound also tries :func:`gram_bound` up to this many channel pairs (~0.6 s)
GRAM_CHEAP = 256 * 256


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
        bound = math.sqrt(taps) * best * _padding_norm_unknown_size(geometry, kernel)
        if out_channels * in_per_group <= GRAM_CHEAP:
            # the Gram row sums: also valid for every size, and near 1 for orthogonal kernels
            # (an exported BCOP / AOC layer), where sqrt(#taps) is 3 for a 3x3 kernel
            bound = min(bound, gram_bound(weight, geometry))
        return bound
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
    # (the DFT's phases and the SVD err by ~1e-16 relative per term: a margin for them)
    return factor * _circular_norm(blocks, torus, geometry.dilation) * (1 + 1e-12)


def gram_bound(weight: torch.Tensor, geometry: ConvGeometry | None = None,
               side: str = "both") -> float:
    """A proven bound on the operator norm of a dense or convolutional layer, from the
    absolute row sums of its weight's Gram matrices, valid for every input size.

    For a dense ``W``, ``sigma_1(W)^2 = lambda_max(W^T W) <= max_i sum_j |W^T W|_ij q_j / q_i``
    for every ``q > 0`` (Gershgorin's bound after a diagonal similarity; lipkit takes ``q``
    near the Perron vector of ``|W^T W|``, which makes the bound that matrix's spectral
    radius: the weights of AOL's and SLL's proofs are one choice of ``q``). For
    a convolution the operator on the infinite grid has the frequency response
    ``K_hat(omega)``, and ``K_hat^H K_hat = sum_t G_t exp(i omega t)`` with ``G_t`` the
    autocorrelation of the kernel at shift ``t``; its absolute row sums over every shift bound
    ``lambda_max`` at every frequency. A zero-padded input of any size is a restriction of the
    infinite grid, a stride selects rows, circular padding that does not wrap samples the
    frequencies, and other paddings multiply by the padding map's norm
    (:func:`_padding_norm_unknown_size`). With zero padding and a stride the kernel's
    polyphase form (a stride-1 kernel on the space-to-depth input, ``in * prod(stride)``
    channels) gives a second bound, exact for orthogonal strided kernels, and the smaller is
    kept. The rows' Gram ``K K^H`` has the same nonzero spectrum as the columns' ``K^H K``;
    an orthogonal kernel's Gram is the identity on one side, a rescaling makes one side's
    sums small (AOL: inputs, SLL: outputs): ``side="both"`` (default) keeps the smaller of
    the two, ``"input"`` or ``"output"`` computes one.

    This is the a posteriori form of the guarantees of AOL, SLL's rescaling and orthogonal
    kernels: it is computed, in float64 with its rounding bounded, on the weight the layer
    actually uses (in float32 a rescaled or orthogonalized weight exceeds its nominal
    constant by rounding, ~1e-7), so it holds for that weight, not for the construction in
    exact arithmetic.
    """
    if side == "both":
        return min(gram_bound(weight, geometry, "input"), gram_bound(weight, geometry, "output"))
    if side not in ("input", "output"):
        raise InvalidArgumentError(f"side must be 'both', 'input' or 'output', got {side!r}")
    w = weight.detach().to(torch.float64)
    if w.ndim == 2:
        return round_up(_gershgorin(w[None, :, :, None], side, 0) * (1 + 4 * UNIT))
    if geometry is None:
        raise InvalidArgumentError("gram_bound of a convolution needs its geometry")
    dims = w.ndim - 2
    kernel = tuple(w.shape[2:])
    if any(d > 1 for d in geometry.dilation):  # the dilated kernel, zeros between taps
        spread = w.new_zeros(*w.shape[:2], *[(k - 1) * d + 1 for k, d in
                                             zip(kernel, geometry.dilation, strict=True)])
        spread[(slice(None), slice(None), *[slice(None, None, d) for d in geometry.dilation])] = w
        w = spread
    groups = geometry.groups
    blocks = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    factor = _padding_norm_unknown_size(geometry, kernel)
    bound = _gershgorin(blocks, side, dims)
    if geometry.padding_mode == "zeros" and any(s > 1 for s in geometry.stride):
        bound = min(bound, _gershgorin(_polyphase(blocks, geometry.stride), side, dims))
    return round_up(bound * factor * (1 + 4 * UNIT))


def _perron_candidates(matrix: torch.Tensor, iterations: int) -> list[torch.Tensor]:
    """Positive weights near the Perron vector of a symmetric nonnegative matrix: ones, and
    its top eigenvector (by ``eigh`` up to 2,048 rows, else a power iteration on
    ``A + I``), floored at a tiny positive value."""
    n = matrix.shape[0]
    ones = torch.ones(n, dtype=matrix.dtype, device=matrix.device)
    if n == 1 or float(matrix.max()) == 0.0:
        return [ones]
    if n <= 2048:
        vector = torch.linalg.eigh(matrix)[1][:, -1].abs()
    else:
        vector = ones
        for _ in range(iterations):
            vector = matrix @ vector + vector
            vector = vector / vector.max()
    vector = vector / vector.max()
    return [ones, vector.clamp_min(1e-12)]


def _polyphase(blocks: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """``(G, out, in, *k)`` -> ``(G, out, in * prod(s), *ceil(k / s))``: the stride-``s``
    convolution as a stride-1 one on the space-to-depth input (taps ``u s + a`` to channel
    ``(i, a)``, tap ``u``)."""
    dims = len(stride)
    kernel = blocks.shape[3:]
    reduced = [-(-k // s) for k, s in zip(kernel, stride, strict=True)]
    padded = blocks.new_zeros(*blocks.shape[:3], *[r * s for r, s in
                                                   zip(reduced, stride, strict=True)])
    padded[(..., *[slice(0, k) for k in kernel])] = blocks
    shape = list(blocks.shape[:3])
    for r, s in zip(reduced, stride, strict=True):
        shape += [r, s]
    split = padded.reshape(shape)  # (G, out, in, r1, s1, r2, s2, ...)
    order = [0, 1, 2, *[4 + 2 * i for i in range(dims)], *[3 + 2 * i for i in range(dims)]]
    moved = split.permute(order)  # (G, out, in, s1, s2, ..., r1, r2, ...)
    return moved.reshape(*blocks.shape[:2], -1, *reduced)


def _gershgorin(blocks: torch.Tensor, side: str, dims: int, iterations: int = 200) -> float:
    """``sqrt(max_i sum_{j, t} |G_t|_ij q_j / q_i)`` over the groups, rounding included, with
    ``q`` near the Perron vector of ``A = sum_t |G_t|`` (symmetric: ``G_{-t} = G_t^T``),
    which makes the bound ``A``'s spectral radius; any positive ``q`` gives a valid bound."""
    kernel = tuple(blocks.shape[3:]) if dims else ()
    taps = math.prod(kernel) if dims else 1
    best = 0.0
    for block in blocks:
        if dims == 0:
            block = block[..., 0]
            matrix = block if side == "output" else block.mT  # rows of the Gram's side
            gram = (matrix @ matrix.mT)[..., None]
            absolute = matrix.abs()
            inner = matrix.shape[1]
        else:
            # the side's channels as a batch, correlated with themselves at every shift
            matrix = block if side == "output" else block.transpose(0, 1)
            gram = _CONV_FUNCTIONS[dims](matrix, matrix, padding=[k - 1 for k in kernel])
            absolute = matrix.abs()
            inner = matrix.shape[1] * taps
        n = gram.shape[0]
        if n == 0:
            continue
        rows = gram.abs().flatten(2)  # (n, n, shifts)
        summed = rows.sum(dim=2)
        if not bool(torch.isfinite(summed).all()):
            return math.inf
        # each Gram entry errs by gamma(inner) times the same sum of absolute products; the
        # sum over j and t of those is at most (the row channel's sum of |k|) (all |k|)
        mass = absolute.flatten(1).sum(dim=1)  # per channel of this side
        terms = n * rows.shape[2] + 4
        value = math.inf
        for q in _perron_candidates(summed, iterations):
            sums = (summed @ q) / q
            error = mass * (mass @ q) / q * gamma(inner)
            value = min(value, float((sums + error).max()) * (1 + gamma(terms)))
        if not math.isfinite(value):
            return math.inf
        best = max(best, value)
    return math.sqrt(best) * (1 + 2 * UNIT)


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
    """max over DFT frequencies of sigma_1 of the kernel's frequency response, all groups.

    A real kernel's response at ``-omega`` is the conjugate of that at ``omega``, with the
    same singular values: the last dimension's frequencies ``0 .. n // 2`` cover every
    conjugate pair, half the SVDs."""
    groups, c_out, c_in = blocks.shape[:3]
    kernel = blocks.shape[3:]
    # phase of tap a at frequency w along one dimension: exp(-2 pi i w d a / n)
    phases = None
    real = {"dtype": torch.float64, "device": blocks.device}
    last = len(torus) - 1
    for axis, (n, k, d) in enumerate(zip(torus, kernel, dilation, strict=True)):
        count = n // 2 + 1 if axis == last and not blocks.is_complex() else n
        w = torch.arange(count, **real)[:, None]
        a = torch.arange(k, **real)[None, :] * d
        e = torch.polar(torch.ones(count, k, **real), -2 * math.pi * w * a / n)
        phases = e if phases is None else (phases[:, None, :, None] * e[None, :, None, :]).reshape(
            phases.shape[0] * count, phases.shape[1] * k
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
