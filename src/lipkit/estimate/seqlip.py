"""SeqLip (Virmaux & Scaman, NeurIPS 2018): an upper bound that sees pairs of layers.

For a chain ``f = W_K s(... s(W_1 x))`` with activation slopes in ``[alpha, beta]``, the
Jacobian is ``W_K D_{K-1} W_{K-1} ... D_1 W_1`` with diagonal ``D_i`` in ``[alpha, beta]``.
With the SVDs ``W_i = U_i S_i V_i^T`` and ``S~_i = S_i^(1/2)`` for the middle layers
(``S~_1 = S_1``, ``S~_K = S_K``, the outer orthogonal factors dropping out),

    ||f||_L <= prod_i max_{D_i} || S~_{i+1} V_{i+1}^T D_i U_i S~_i ||.

The maximum of a convex function of ``D_i`` over the box is attained at a vertex
``D_i in {alpha, beta}^n``. For hidden widths up to ``exact_width`` (default 14) lipkit
enumerates every vertex (the paper's exact SeqLip); for wider layers it uses the sound
relaxation ``D = m I + r S`` with ``m = (alpha + beta)/2``, ``r = (beta - alpha)/2``,
``|S| <= I``: ``||A D B|| <= |m| ||A B|| + r ||A|| ||B||`` (the paper's greedy search for
wide layers gives no bound, so lipkit does not use it). l2 norm, chains only.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch

from lipkit.estimate.bound import Bound
from lipkit.estimate.network import dense_chain
from lipkit.estimate.registry import MethodOptions, Options, register_method


def _chain_fits(network) -> str | None:
    layers, reason = dense_chain(network, 4_000_000)
    if reason is not None:
        return reason
    if any(layer.weight.shape[0] * layer.weight.shape[1] > 4_000_000 for layer in layers):
        return "a merged layer has more than 4M entries"
    return None


def _vertex_max(left: torch.Tensor, right: torch.Tensor, alpha: float, beta: float) -> float:
    """max over D in {alpha, beta}^n of ||left diag(D) right||_2, by enumeration."""
    width = left.shape[1]
    best = 0.0
    patterns = torch.tensor(list(itertools.product((alpha, beta), repeat=width)),
                            dtype=left.dtype)
    for chunk in patterns.split(1024):
        products = (left.unsqueeze(0) * chunk.unsqueeze(1)) @ right
        best = max(best, float(torch.linalg.matrix_norm(products, ord=2).max()))
    return best


def _relaxed_max(left: torch.Tensor, right: torch.Tensor, alpha: float, beta: float) -> float:
    middle, radius = (alpha + beta) / 2, (beta - alpha) / 2
    product = float(torch.linalg.matrix_norm(left @ right, ord=2))
    return abs(middle) * product + radius * float(torch.linalg.matrix_norm(left, ord=2)) * \
        float(torch.linalg.matrix_norm(right, ord=2))


@dataclass(frozen=True)
class SeqLipOptions(MethodOptions):
    """Options of ``seqlip``."""

    #: hidden widths up to which the vertex maximization is exact (0: never)
    exact_width: int = field(default=14, metadata={"minimum": 0})


@register_method("seqlip", kind="upper", norms=("2",), fits=_chain_fits, cost="cheap",
                 options=SeqLipOptions)
def seqlip(network, options: Options) -> Bound:
    """SeqLip: exact vertex maximization for narrow layers, a sound relaxation otherwise."""
    started = time.perf_counter()
    exact_width = options.own(SeqLipOptions).exact_width
    layers = network.chain()
    if len(layers) == 1:
        value = float(torch.linalg.matrix_norm(layers[0].weight, ord=2))
        return Bound(value, "upper", "2", "seqlip", time.perf_counter() - started)
    factors = []
    for weight in (layer.weight for layer in layers):
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        factors.append((u, s, vh))
    value, exact_layers = 1.0, 0
    count = len(layers)
    for i in range(count - 1):
        u_i, s_i, _ = factors[i]
        _, s_next, vh_next = factors[i + 1]
        right_scale = s_i if i == 0 else s_i.sqrt()
        left_scale = s_next if i + 1 == count - 1 else s_next.sqrt()
        right = u_i * right_scale  # U_i S~_i   (n_i x r_i)
        left = left_scale[:, None] * vh_next  # S~_{i+1} V_{i+1}^T   (r_{i+1} x n_i)
        alpha, beta = layers[i].activation.slope
        if left.shape[1] <= exact_width:
            value *= _vertex_max(left, right, alpha, beta)
            exact_layers += 1
        else:
            value *= _relaxed_max(left, right, alpha, beta)
    return Bound(value, "upper", "2", "seqlip", time.perf_counter() - started,
                 details={"exact_layers": exact_layers, "relaxed_layers": count - 1 -
                          exact_layers})
