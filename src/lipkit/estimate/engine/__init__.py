"""The one bound-propagation engine of :mod:`lipkit.estimate`.

- :mod:`~lipkit.estimate.engine.relaxations`: one object per activation with every
  bounding mode (interval, linear lines for CROWN, derivative ranges, MIP rows);
- :mod:`~lipkit.estimate.engine.chain`: the dense chain the bounds are computed on;
- :mod:`~lipkit.estimate.engine.forward`: pre-activation bounds over batches of boxes
  (interval and CROWN, with branch-and-bound splits) and lower bounds of linear functions of
  the output (CROWN / alpha-CROWN);
- :mod:`~lipkit.estimate.engine.gradient`: bounds on the backward graph of the Clarke
  Jacobian (local Lipschitz constants);
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

__all__ = ["DenseChain", "GradientBounds", "LayerBounds", "Relaxation", "backward_lower",
           "box_tensors", "interval_affine", "layer_bounds", "relaxation_of", "spec_lower"]
