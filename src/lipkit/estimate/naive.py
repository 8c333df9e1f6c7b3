"""Upper bounds by composition: the naive product, and AutoLip (Virmaux & Scaman, 2018).

``||g o h||_L <= ||g||_L ||h||_L`` and ``||g + h||_L <= ||g||_L + ||h||_L``: walking the
network's graph, every node's constant (with respect to the network input) is its own
constant times its input's, and a residual join adds the constants of its branches.

- ``naive``: each node's own certified constant — operator norms of affine maps
  (exact for matrices, the sound DFT bound for convolutions and transposed convolutions),
  the largest slope of an activation — multiplied along the graph.
- ``autolip``: AutoLip's graph algorithm, with the norms certified (the paper's power
  iteration estimates from below, which does not give an upper bound) and runs of
  consecutive affine maps merged before taking the norm, ``||A_2 A_1|| <= ||A_2|| ||A_1||``:
  dense products are multiplied out, a per-channel scaling (folded BatchNorm) is folded into
  the preceding (transposed) convolution's kernel, reshapes disappear.
"""

from __future__ import annotations

import time

import torch

from lipkit.estimate.bound import Bound, norm_value
from lipkit.estimate.network import (
    Activation,
    Add,
    Affine,
    Convolution,
    Diagonal,
    LinearOperator,
    Matrix,
    Network,
    Reshape,
    TransposedConvolution,
)
from lipkit.estimate.registry import NoOptions, Options, register_method

_DENSE_LIMIT = 4_000_000  # entries of a merged matrix worth materializing
# bounded as operators (the DFT bound), never merged into dense products
_CONVOLUTIONS = (Convolution, TransposedConvolution)


def compose(network: Network, affine_constant, runs: list[list[int]] | None = None) -> float:
    """Compose constants along the graph. ``affine_constant(indices)`` gives the constant of
    a run of affine nodes (by index); ``runs`` groups consecutive affine nodes (default: each
    node alone)."""
    run_of = {}
    for run in runs or [[i] for i, n in enumerate(network.nodes) if isinstance(n.op, Affine)]:
        for i in run:
            run_of[i] = run
    constants: list[float] = []
    for index, node in enumerate(network.nodes):
        inputs = [1.0 if i == -1 else constants[i] for i in node.inputs]
        if isinstance(node.op, Affine):
            run = run_of[index]
            if index == run[-1]:
                start = run[0]
                before = network.nodes[start].inputs[0]
                incoming = 1.0 if before == -1 else constants[before]
                constants.append(affine_constant(run) * incoming)
            else:
                constants.append(float("nan"))  # inside a merged run: never read
        elif isinstance(node.op, Activation):
            constants.append(node.op.lipschitz * inputs[0])
        elif isinstance(node.op, Add):
            constants.append(sum(inputs))
        else:  # pragma: no cover - the Network only holds these three
            raise TypeError(type(node.op).__name__)
    return constants[-1] if constants else 1.0


@register_method("naive", kind="upper", norms=("2", "1", "inf"), cost="instant",
                 options=NoOptions)
def naive(network, options: Options) -> Bound:
    """Product of each layer's certified operator norm and each activation's slope."""
    started = time.perf_counter()
    p = norm_value(options.norm)
    value = compose(network, lambda run: network.nodes[run[0]].op.operator.norm(p))
    return Bound(value, "upper", options.norm, "naive", time.perf_counter() - started)


def affine_runs(network: Network) -> list[list[int]]:
    """Maximal runs of consecutive affine nodes, each reading only the previous one."""
    runs: list[list[int]] = []
    consumers: dict[int, int] = {}
    for node in network.nodes:
        for i in node.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    for index, node in enumerate(network.nodes):
        if not isinstance(node.op, Affine):
            continue
        previous = node.inputs[0]
        if (runs and runs[-1][-1] == previous and consumers.get(previous, 0) == 1):
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def merged_norm(operators: list[LinearOperator], p: float) -> float:
    """A certified norm of the composition ``A_k ... A_1`` (merging what is cheap)."""
    merged: list[LinearOperator] = []
    for operator in operators:
        if isinstance(operator, Reshape):
            continue
        last = merged[-1] if merged else None
        if (isinstance(operator, Diagonal) and isinstance(last, _CONVOLUTIONS)
                and _per_channel(operator)):
            merged[-1] = last.scaled(operator.scale.reshape(operator.scale.shape[0], -1)[:, 0])
            continue
        if (last is not None and not isinstance(last, _CONVOLUTIONS)
                and not isinstance(operator, _CONVOLUTIONS)
                and operator.out_features * last.in_features <= _DENSE_LIMIT):
            merged[-1] = Matrix(operator.matrix() @ last.matrix(), last.in_shape,
                                operator.out_shape)
            continue
        merged.append(operator)
    value = 1.0
    for operator in merged:
        value *= operator.norm(p)
    return value


def _per_channel(diagonal: Diagonal) -> bool:
    scale = diagonal.scale.reshape(diagonal.scale.shape[0], -1)
    return bool(torch.all(scale == scale[:, :1]))


@register_method("autolip", kind="upper", norms=("2", "1", "inf"), cost="instant",
                 options=NoOptions)
def autolip(network, options: Options) -> Bound:
    """AutoLip: the graph composition with consecutive affine maps merged."""
    started = time.perf_counter()
    p = norm_value(options.norm)
    value = compose(
        network,
        lambda run: merged_norm([network.nodes[i].op.operator for i in run], p),
        affine_runs(network),
    )
    return Bound(value, "upper", options.norm, "autolip", time.perf_counter() - started)
