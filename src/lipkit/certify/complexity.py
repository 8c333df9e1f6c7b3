"""``spectral_complexity(model, reference=...)``: Bartlett, Foster & Telgarsky's spectral
complexity (NeurIPS 2017, "Spectrally-normalized margin bounds for neural networks").

``R_A = (prod_i rho_i ||A_i||_2) (sum_i ||A_i^T - M_i^T||_{2,1}^(2/3) / ||A_i||_2^(2/3))^(3/2)``

with ``A_i`` the layers' linear maps, ``M_i`` the reference (e.g. initial) weights, ``rho_i``
the Lipschitz constants of the nonlinearities and ``||B||_{2,1}`` the sum of the l2 norms of
the columns of ``B`` (so ``||A^T - M^T||_{2,1}`` sums the row norms of ``A - M``). Their
generalization bound scales with ``R_A / gamma`` for a margin ``gamma``.

Convolutions are taken as operators: ``||A||_2`` is lipkit's certified operator norm on the
input size the layer last saw (or a bound for every size), and the (2,1) norm of the
unrolled operator is counted as ``positions x sum_k ||(K - K_0)_k||_2`` over output channels
``k`` (each output position is one row of the operator holding the kernel of its channel;
exact without padding, an upper bound with zero padding, which truncates rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn.constraint import CONV_TYPES, LAYER_TYPES, lipkit_constraint
from lipkit.nn.operator_norm import ConvGeometry, conv_operator_norm_upper


@dataclass
class SpectralComplexity:
    """``R_A`` (``value``) and its factors, per layer."""

    value: float
    spectral_product: float
    distance_sum: float
    layers: list[dict] = field(default_factory=list)

    def normalized(self, margin: float) -> float:
        """The margin-normalized complexity ``R_A / gamma``."""
        return self.value / margin if margin > 0 else math.inf


def _leaves(model: nn.Module, path: str = ""):
    if isinstance(model, nn.Sequential):
        for name, child in model.named_children():
            yield from _leaves(child, f"{path}.{name}" if path else name)
    else:
        yield path, model


def _weight(layer: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return layer.weight.detach().to(torch.float64)


def _spectral_norm(layer: nn.Module, weight: torch.Tensor, input_size) -> float:
    if isinstance(layer, nn.Linear):
        return float(torch.linalg.matrix_norm(weight, ord=2))
    constraint = lipkit_constraint(layer)
    geometry = constraint.geometry if constraint is not None and constraint.geometry else None
    geometry = geometry or ConvGeometry.of(layer, input_size)
    return conv_operator_norm_upper(weight, geometry)


def _distance(layer: nn.Module, difference: torch.Tensor, output_positions: int) -> float:
    rows = difference.flatten(1).norm(dim=1).sum()
    return float(rows) * (output_positions if isinstance(layer, CONV_TYPES) else 1)


def spectral_complexity(model: nn.Module, reference: nn.Module | None = None,
                        example_input: torch.Tensor | None = None) -> SpectralComplexity:
    """``R_A`` of a (nested) ``nn.Sequential`` against ``reference``'s weights (zeros when
    None); ``example_input`` fixes convolution sizes (module docstring).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(3, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]))
        >>> round(spectral_complexity(torch.nn.Sequential(layer)).value, 6)  # row norms 5 + 1
        6.0
    """
    from lipkit.nn import lipschitz_bound

    if not isinstance(model, nn.Sequential):
        model = nn.Sequential(model)
        reference = nn.Sequential(reference) if reference is not None else None
    references = dict(_leaves(reference)) if reference is not None else {}
    sizes, positions = _conv_sizes(model, example_input)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        layers, product, rho = [], 1.0, 1.0
        for path, module in _leaves(model):
            if isinstance(module, LAYER_TYPES):
                weight = _weight(module)
                base = references.get(path)
                if reference is not None and not isinstance(base, LAYER_TYPES):
                    raise InvalidArgumentError(
                        f"reference has no layer like '{path}' ({type(module).__name__})")
                if isinstance(module, CONV_TYPES) and path not in positions:
                    raise InvalidArgumentError(
                        f"convolution '{path}': pass example_input= to fix its input size")
                base_weight = _weight(base) if base is not None else torch.zeros_like(weight)
                if base_weight.shape != weight.shape:
                    raise InvalidArgumentError(
                        f"reference layer '{path}' has shape {tuple(base_weight.shape)}, "
                        f"the model's {tuple(weight.shape)}")
                norm = _spectral_norm(module, weight, sizes.get(path))
                distance = _distance(module, weight - base_weight, positions.get(path, 1))
                layers.append({"layer": path, "spectral_norm": norm, "distance": distance,
                               "rho": rho})
                product *= rho * norm
                rho = 1.0
            else:
                if any(True for _ in module.parameters()):
                    raise UnsupportedModuleError(path, module, "spectral complexity needs "
                                                 "dense / conv layers and parameter-free "
                                                 "activations")
                rho *= lipschitz_bound(module)
    finally:
        for module, mode in modes.items():
            module.training = mode
    product *= rho
    total = sum((row["distance"] ** (2 / 3)) / (row["spectral_norm"] ** (2 / 3))
                for row in layers if row["spectral_norm"] > 0)
    distance_sum = total ** 1.5
    return SpectralComplexity(product * distance_sum, product, distance_sum, layers)


def _conv_sizes(model: nn.Module, example_input) -> tuple[dict, dict]:
    sizes, positions = {}, {}
    if example_input is None:
        return sizes, positions
    handles = []
    for path, module in _leaves(model):
        if isinstance(module, CONV_TYPES):
            def record(mod, args, output, path=path):
                dims = len(mod.kernel_size)
                sizes[path] = tuple(args[0].shape[-dims:])
                positions[path] = math.prod(output.shape[-dims:])

            handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return sizes, positions


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``f_y - max_{j != y} f_j`` per input (negative when misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return true - logits.scatter(1, labels[:, None], -math.inf).max(1).values

