"""The one bound-propagation engine of :mod:`lipkit.estimate`.

- :mod:`~lipkit.estimate.engine.relaxations`: one object per activation with every
  bounding mode (interval, linear lines for CROWN, derivative ranges, MIP rows);
- :mod:`~lipkit.estimate.engine.chain`: the dense chain the bounds are computed on;
- :mod:`~lipkit.estimate.engine.gates`: the same chain as piecewise-linear gates (ReLU,
  leaky ReLU, GroupSort's compare-exchanges), the form of the exact methods, and its
  linear bounds over boxes in homogenized coordinates ``(x, t)`` (the global constant's
  domain); exact-mip's big-M constants and exact-bab's boxes start from them;
- :mod:`~lipkit.estimate.engine.forward`: pre-activation bounds over batches of boxes
  (interval and CROWN, with branch-and-bound splits, which also constrain the inputs: the
  minima are taken over their region by Lagrangian duality) and lower bounds of linear
  functions of the output (CROWN / alpha-CROWN);
- :mod:`~lipkit.estimate.engine.gradient`: bounds on the backward graph of the Clarke
  Jacobian (local Lipschitz constants);
- :mod:`~lipkit.estimate.engine.branching`: branch and bound on neurons' signs for lower
  bounds of linear functions of the output (the direct local certificate);
- :mod:`~lipkit.estimate.engine.margin_mip`: the exact MIP of a linear function of the
  output over a box, on the relaxations' MIP rows.

Every number the engine calls a bound is proven in float64, rounding included
(:mod:`lipkit.estimate.rounding`). Methods (lp-jacobian, exact-mip, exact-bab, local-crown,
the local certificates of :mod:`lipkit.certify`) are search strategies on top of it.
"""

from lipkit.estimate.engine.chain import DenseChain, box_tensors
from lipkit.estimate.engine.forward import (
    LayerBounds,
    backward_lower,
    interval_affine,
    layer_bounds,
    spec_lower,
)
from lipkit.estimate.engine.gradient import GradientBounds
from lipkit.estimate.engine.relaxations import Relaxation, relaxation_of


def box_pre_activation_bounds(network, lower, upper):
    """Per hidden layer ``(low, high)`` (NumPy, ``(boxes, width)``) of the pre-activations
    over a batch of boxes, or None when the engine does not apply (GroupSort, residual
    joins, operators too large): what exact-mip and exact-bab intersect their own bounds
    with over a local box."""
    import numpy as np
    import torch

    from lipkit.estimate.network import NotApplicableError

    try:
        chain = DenseChain.of(network)
    except NotApplicableError:
        return None
    lower = torch.as_tensor(np.atleast_2d(lower), dtype=torch.float64)
    upper = torch.as_tensor(np.atleast_2d(upper), dtype=torch.float64)
    bounds = layer_bounds(chain, lower, upper)
    return [(low.numpy(), high.numpy()) for low, high in zip(bounds.lower, bounds.upper,
                                                             strict=True)]

def gate_bounds(network, layers, low, high):
    """Per layer of the gate form (:mod:`~lipkit.estimate.engine.gates`), ``(low, high)``
    of its gates' inputs over each box in ``(x, t)`` (``(boxes, n + 1)``):
    :func:`~lipkit.estimate.engine.gates.gate_ranges`, intersected with the dense chain's
    bounds (:func:`box_pre_activation_bounds`) on layers whose gates are the
    pre-activations, when ``network`` is given (None: a homogenized domain, a rescaled chain,
    or a chain whose gate layers are not one per activation)."""
    import numpy as np

    from lipkit.estimate.engine.gates import gate_ranges

    ranges = gate_ranges(layers, low, high)
    if network is None:
        return ranges
    dense = box_pre_activation_bounds(network, low[:, :-1], high[:, :-1])
    if dense is None:
        return ranges
    return [(np.maximum(bottom, d_low), np.minimum(top, d_high))
            if d_low.shape == bottom.shape and np.array_equal(layer.gate,
                                                              np.eye(bottom.shape[-1]))
            else (bottom, top)
            for (bottom, top), (d_low, d_high), layer in zip(ranges, dense, layers,
                                                             strict=True)]


__all__ = ["DenseChain", "GradientBounds", "LayerBounds", "Relaxation", "backward_lower",
           "box_pre_activation_bounds", "box_tensors", "gate_bounds", "interval_affine",
           "layer_bounds", "relaxation_of", "spec_lower"]
