"""``logit_constants(model)``: sound Lipschitz constants of a classifier's logits.

Two sources, recorded in :attr:`LogitConstants.source`:

- ``"lipkit.nn.lipschitz_bound"``: the bound a torch model's construction guarantees
  (:func:`lipkit.nn.lipschitz_bound`: certified layer norms composed);
- ``"lipkit.estimate:<method>"``: the smallest *proven* upper bound among the estimation
  methods run on an imported network (an ONNX file, a torch model ``lipschitz_bound`` cannot
  read). Only :class:`~lipkit.estimate.Bound` records of kind ``upper`` or ``exact`` with
  status ``ok`` are used; estimates (kind ``estimate``) never are.

When the model ends with a dense layer ``f = W g + b``, the body ``g`` is bounded on its own
and the constants of the differences are ``L_yj = ||w_y - w_j||_2 ||g||_L``.
"""

from __future__ import annotations

import torch
from torch import nn

from lipkit.certify.radius import LogitConstants
from lipkit.errors import InvalidArgumentError, LipkitError, UnsupportedModuleError

# cheap methods that prove upper bounds; LipSDP may be added by the caller
DEFAULT_UPPER_METHODS = ("naive", "autolip", "seqlip")


def logit_constants(model, classes: int | None = None, input_shape=None,
                    example_input: torch.Tensor | None = None,
                    methods=None) -> LogitConstants:
    """Sound l2 constants of ``model``'s logits (see the module docstring).

    Args:
        model: an ``nn.Module`` (bounded by ``lipschitz_bound``, else imported and estimated),
            a path to an ONNX file, or a :class:`lipkit.estimate.Network`.
        classes: the number of logits (read from the last layer when it is dense).
        input_shape: the input shape without batch, for convolutional imports.
        example_input: a batch that fixes convolution input sizes for ``lipschitz_bound``.
        methods: estimation methods to run on imported networks (default: naive, autolip,
            seqlip); each must prove upper bounds.
    """
    if isinstance(model, nn.Module):
        try:
            return _from_lipkit(model, classes, example_input)
        except UnsupportedModuleError:
            pass  # not a composition lipschitz_bound knows: estimate it instead
    return _from_estimate(model, classes, input_shape, methods)


def _from_lipkit(model: nn.Module, classes, example_input) -> LogitConstants:
    from lipkit.nn import lipschitz_bound

    source = "lipkit.nn.lipschitz_bound"
    modes = {m: m.training for m in model.modules()}
    model.eval()  # reading a constrained weight in training mode would advance its state
    try:
        whole = lipschitz_bound(model, example_input)
        if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear) and len(model) > 1:
            body = lipschitz_bound(model[:-1], example_input)
            with torch.no_grad():
                weight = model[-1].weight.detach().clone()
            return LogitConstants.from_last_linear(body, weight, source, whole=whole)
    finally:
        for module, mode in modes.items():
            module.training = mode
    if classes is None:
        raise InvalidArgumentError("classes is needed when the model does not end with "
                                   "an nn.Linear")
    return LogitConstants.from_whole(whole, classes, source)


def _best_upper(network, methods) -> tuple[float, str, list]:
    from lipkit.estimate import METHODS, estimate

    names = list(methods or DEFAULT_UPPER_METHODS)
    for name in names:
        if name in METHODS and METHODS[name].kind not in ("upper", "exact"):
            raise InvalidArgumentError(
                f"estimation method '{name}' gives a {METHODS[name].kind} bound; a "
                "certificate needs a proven upper bound"
            )
    report = estimate(network, methods=names, norm="2")
    best = report.upper  # the smallest usable bound of kind upper / exact
    tried = [(b.method, b.kind, b.value, b.status) for b in report.bounds]
    if best is None:
        raise LipkitError("no estimation method proved an upper bound on the Lipschitz "
                          f"constant (tried: {', '.join(names)}); cannot certify")
    return best.value, best.method, tried


def _from_estimate(model, classes, input_shape, methods) -> LogitConstants:
    from lipkit.estimate import Network, load_network
    from lipkit.estimate.network import Affine, Matrix

    network = load_network(model, input_shape)
    whole, method, tried = _best_upper(network, methods)
    last = network.nodes[-1] if network.nodes else None
    if (last is not None and len(network.nodes) > 1 and isinstance(last.op, Affine)
            and isinstance(last.op.operator, Matrix) and last.inputs == [len(network.nodes) - 2]):
        body_network = Network(network.input_shape, network.nodes[:-1], network.source)
        body, body_method, body_tried = _best_upper(body_network, methods)
        constants = LogitConstants.from_last_linear(
            body, last.op.operator.weight, f"lipkit.estimate:{body_method}", whole=whole)
        constants.details.update(whole_method=method, tried=tried, body_tried=body_tried)
        return constants
    classes = classes or network.out_features
    constants = LogitConstants.from_whole(whole, classes, f"lipkit.estimate:{method}")
    constants.details["tried"] = tried
    return constants

