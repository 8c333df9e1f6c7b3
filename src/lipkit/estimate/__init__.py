"""Measure ``||f||_L``: import any network into one description, run estimation methods,
and report the tightest interval ``[best lower, best upper]`` they prove.

    from lipkit.estimate import estimate
    report = estimate(model, norm=2)
    low, high = report.interval

Methods (``METHODS``, kebab-case ids): lower bounds with witnesses (``lower-jacobian``,
``lower-gradient``, ``lower-adversarial``), cheap upper bounds (``naive``, ``autolip``,
``seqlip``, ``compositional`` — layer-by-layer LipSDP-Neuron, tighter than ECLipsE-Fast in
its time), SDP upper bounds (``lipsdp-*``, sub-networks optionally in worker processes) and
an LP bound for the l-infinity and l1 norms (``lp-jacobian``), Shor's SDP relaxation for the
l-infinity norm of one-hidden-layer networks (``shor``), exact l1 / l-inf values by
MIP (``exact-mip``) or, for networks with few inputs, by branch and bound over input boxes
(``exact-bab``, also l2). :func:`lipkit.estimate.plot.plot_report` draws a report as a PNG.
"""

# importing the method modules registers them
from lipkit.estimate import adversarial, gradient_ascent, jacobian, naive, seqlip  # noqa: F401
from lipkit.estimate.bound import Bound
from lipkit.estimate.importers import load_network
from lipkit.estimate.network import Network
from lipkit.estimate.registry import METHODS, Options, register_method
from lipkit.estimate.report import Report, estimate

try:  # the MIP needs highspy (the "all" extra)
    from lipkit.estimate import bab, mip, shor  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the installation
    if "highspy" not in str(_error):
        raise

try:  # LipSDP needs cvxpy (the "all" extra)
    from lipkit.estimate import compositional, lipsdp, lp_jacobian  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the installation
    if "cvxpy" not in str(_error) and "lipsdp" not in str(_error):
        raise

__all__ = ["METHODS", "Bound", "Network", "Options", "Report", "estimate", "load_network",
           "register_method"]
