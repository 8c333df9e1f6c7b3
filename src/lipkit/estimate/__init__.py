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
(``exact-bab``, also l2), and local constants over a box or ball by bound propagation through
the Clarke Jacobian with branch and bound (``local-crown``). Every bound over a box comes
from one engine (:mod:`lipkit.estimate.engine`: per-activation relaxations, interval /
CROWN / alpha-CROWN, one rounding policy). :func:`lipkit.estimate.plot.plot_report` draws
a report as a PNG.

Each method's own settings are a frozen dataclass registered with it (``MipOptions``,
``LipSDPOptions``, ...: ``METHODS[name].options``), given as ``estimate(model,
options={"exact-mip": MipOptions(time_limit=5)})`` or ``lipkit estimate -o
exact-mip.time_limit=5``; :func:`options_for` builds the Options of one method called
directly.
"""

from lipkit.estimate.bound import Bound
from lipkit.estimate.importers import load_network
from lipkit.estimate.network import Network
from lipkit.estimate.registry import METHODS, MethodOptions, Options, register_method
from lipkit.estimate.report import Report, estimate, options_for

# the method modules register themselves when first looked up in METHODS (registry.py)

__all__ = ["METHODS", "Bound", "MethodOptions", "Network", "Options", "Report", "estimate",
           "load_network", "options_for", "register_method"]
