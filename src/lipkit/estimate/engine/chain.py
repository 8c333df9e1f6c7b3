"""The dense chain every bound of the engine is computed on.

``f(x) = W_L phi_{L-1}(... phi_1(W_1 x + b_1) ...) + b_L``: :meth:`Network.chain` with
consecutive affine nodes multiplied out, each activation wrapped in its relaxation object
(:mod:`lipkit.estimate.engine.relaxations`). Tensors are float64; a batch dimension comes
first everywhere in the engine (one box, one branch of a branch and bound, one image per
entry).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from lipkit.estimate.engine.relaxations import Relaxation, relaxation_of
from lipkit.estimate.network import NotApplicableError, dense_chain

#: operators whose dense matrix would hold more entries than this are refused
MAX_ENTRIES = 4_000_000
#: a chain with no layer wider than this is bounded on one torch thread (:func:`few_threads`)
THREADED_WIDTH = 512


@contextlib.contextmanager
def few_threads(widest: int):
    """One torch thread while computing on layers no wider than ``widest`` when that is below
    :data:`THREADED_WIDTH`: bounding a narrow chain is thousands of small tensor operations,
    and waking a thread pool for each costs more than it saves (on two busy cores, 15 ms
    instead of 5 us for an elementwise square root of 8,000 entries; compositional's
    recursion on 784-100x4-10 went from 0.06 s to 1.4 s on two threads)."""
    previous = torch.get_num_threads()
    small = widest < THREADED_WIDTH
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(previous)


@dataclass(eq=False)
class DenseLayer:
    """``z -> weight z + bias``, then ``activation`` (None: the output layer)."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,)
    activation: Relaxation | None

    def __post_init__(self):
        self.absolute = self.weight.abs()

    @property
    def inputs(self) -> int:
        return self.weight.shape[1]

    @property
    def outputs(self) -> int:
        return self.weight.shape[0]


@dataclass(eq=False)
class DenseChain:
    """The layers of a network, last one without activation."""

    layers: list[DenseLayer]

    @classmethod
    def of(cls, network, max_entries: int = MAX_ENTRIES) -> DenseChain:
        """The chain of ``network``; NotApplicableError for residual joins, GroupSort or
        operators too large to materialize."""
        layers, reason = dense_chain(network, max_entries)
        if layers is None:
            raise NotApplicableError(reason)
        return cls.from_layers(layers)

    @classmethod
    def from_layers(cls, layers) -> DenseChain:
        """The chain of :meth:`Network.chain`'s layers."""
        result = []
        for layer in layers:
            weight = layer.weight.detach().to(torch.float64)
            bias = torch.zeros(weight.shape[0], dtype=torch.float64) if layer.bias is None \
                else layer.bias.detach().to(torch.float64).reshape(-1)
            activation = None if layer.activation is None else relaxation_of(layer.activation)
            result.append(DenseLayer(weight, bias, activation))
        return cls(result)

    @property
    def hidden(self) -> list[DenseLayer]:
        return self.layers[:-1]

    @property
    def inputs(self) -> int:
        return self.layers[0].inputs

    @property
    def outputs(self) -> int:
        return self.layers[-1].outputs

    @property
    def piecewise_linear(self) -> bool:
        return all(layer.activation.piecewise_linear for layer in self.hidden)

    def threads(self):
        """:func:`few_threads` for this chain's widest layer."""
        return few_threads(max([self.inputs] + [layer.outputs for layer in self.layers]))

    def forward(self, x: torch.Tensor, pre_activations: bool = False):
        """The outputs at a batch of points (and every hidden pre-activation)."""
        values = []
        for layer in self.hidden:
            z = x @ layer.weight.T + layer.bias
            values.append(z)
            x = layer.activation(z)
        out = x @ self.layers[-1].weight.T + self.layers[-1].bias
        return (out, values) if pre_activations else out

    def interior_point(self, signs: list[torch.Tensor], lower, upper):
        """``(x, margin)``: the point of the box ``[lower, upper]`` deepest inside the region
        where every hidden pre-activation has the sign ``signs[k]`` gives (+1 or -1 per
        neuron), by a margin LP (HiGHS): each pre-activation, affine in ``x`` on the region,
        at least ``margin`` (in l2 distance) on its side, the box's faces too. ``None`` when
        the region has no interior point. Not proven: its caller checks what it does with
        the point (a witness's ratio is certified)."""
        import highspy

        from lipkit.estimate.solvers import feasible, new_highs

        n = self.inputs
        affine = torch.eye(n, dtype=torch.float64)
        offset = torch.zeros(n, dtype=torch.float64)
        rows, constants = [], []
        for layer, sign in zip(self.hidden, signs, strict=True):
            z_affine = layer.weight @ affine
            z_offset = layer.weight @ offset + layer.bias
            sign = sign.to(torch.float64)
            rows.append(sign[:, None] * z_affine)
            constants.append(sign * z_offset)
            p, q = layer.activation.below, layer.activation.above
            slope = torch.where(sign > 0, torch.full_like(sign, q), torch.full_like(sign, p))
            affine, offset = slope[:, None] * z_affine, slope * z_offset
        if rows:
            rows, constants = torch.cat(rows).numpy(), torch.cat(constants).numpy()
        else:  # no hidden unit: the region is the whole box
            rows, constants = np.zeros((0, n)), np.zeros(0)
        scale = np.sqrt((rows ** 2).sum(axis=1))
        keep = scale > 0  # a pre-activation constant on the region moves no gradient
        if (constants[~keep] < 0).any():
            return None
        rows, constants, scale = rows[keep], constants[keep], scale[keep]
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        eye = np.eye(n)
        # variables (x, margin): rows x - margin scale >= -constants; x - margin >= lower;
        # -x - margin >= -upper
        matrix = np.vstack([np.hstack([rows, -scale[:, None]]),
                            np.hstack([eye, -np.ones((n, 1))]),
                            np.hstack([-eye, -np.ones((n, 1))])])
        row_lower = np.concatenate([-constants, lower, -upper])
        highs = new_highs()
        highs.addVars(n + 1, np.append(lower, 0.0), np.append(upper, 1.0))
        nonzero = np.nonzero(matrix)
        starts = np.searchsorted(nonzero[0], np.arange(matrix.shape[0])).astype(np.int32)
        highs.addRows(matrix.shape[0], row_lower, np.full(matrix.shape[0], np.inf),
                      len(nonzero[0]), starts, nonzero[1].astype(np.int32),
                      matrix[nonzero].astype(float))
        highs.changeColCost(n, 1.0)
        highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
        highs.run()
        if not feasible(highs, "interior-point LP"):
            return None
        solution = np.asarray(highs.getSolution().col_value)
        if not solution[n] > 1e-9 * (1.0 + np.abs(solution[:n]).max()):
            return None
        return torch.from_numpy(solution[:n].copy()), float(solution[n])

    def pattern_gradient(self, x: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """``spec @ J(x)`` with each neuron's slope that of its side of 0 (the gradient
        where no pre-activation is 0): ``(batch, rows, inputs)``."""
        _, pre = self.forward(x, pre_activations=True)
        g = spec.expand(x.shape[0], *spec.shape[-2:]) @ self.layers[-1].weight
        for layer, z in zip(reversed(self.hidden), reversed(pre), strict=True):
            p, q = layer.activation.below, layer.activation.above
            slope = torch.where(z > 0, torch.full_like(z, q), torch.full_like(z, p))
            g = (g * slope[:, None, :]) @ layer.weight
        return g


def box_tensors(lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    """A box (or a batch of boxes) as float64 tensors ``(batch, n)``."""
    lower = torch.as_tensor(np.asarray(lower) if not isinstance(lower, torch.Tensor) else lower,
                            dtype=torch.float64)
    upper = torch.as_tensor(np.asarray(upper) if not isinstance(upper, torch.Tensor) else upper,
                            dtype=torch.float64)
    return lower.reshape(-1, lower.shape[-1]), upper.reshape(-1, upper.shape[-1])
