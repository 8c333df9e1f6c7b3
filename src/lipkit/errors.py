"""The exception types of lipkit.

Every error names what went wrong and where (the layer's path and type, the file, the
argument), so that a CLI can print it as one line.
"""

import math
import numbers


class LipkitError(Exception):
    """Base class of every error lipkit raises on purpose."""


class InvalidArgumentError(LipkitError, ValueError):
    """An argument is out of its domain (a non-positive constant, a bad group size, ...)."""


class CheckpointError(LipkitError):
    """A checkpoint that cannot be resumed: missing, unreadable, corrupt (its checksum does
    not match), or written by another run (another configuration or data set)."""


class UnsupportedModuleError(LipkitError, TypeError):
    """A module whose Lipschitz constant lipkit cannot bound or constrain.

    The message names the module's path inside the model and its type. ``module`` may be
    the module itself or a string naming the type (an ONNX operator, a torch function).
    """

    def __init__(self, path: str, module: object, reason: str = ""):
        self.path = path or "<root>"
        self.module_type = module if isinstance(module, str) else type(module).__name__
        detail = f": {reason}" if reason else ""
        super().__init__(f"unsupported module '{self.path}' of type {self.module_type}{detail}")


class LipkitWarning(UserWarning):
    """A warning lipkit gives on purpose (a setting that does not do what its name suggests,
    a renormalization the user should know about); the CLI prints it as one line."""


class UnknownMethodError(LipkitError, KeyError):
    """A method name that is not in a registry; the message lists the choices."""

    def __init__(self, kind: str, name: str, choices):
        self.name = name
        self.choices = sorted(choices)
        super().__init__(f"unknown {kind} '{name}'; choose from: {', '.join(self.choices)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)`` or raise InvalidArgumentError when it is not a finite number > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise InvalidArgumentError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_positive_integer(name: str, value) -> int:
    """Return ``value`` as an int or raise InvalidArgumentError unless it is an integer >= 1
    (steps, epochs, points, sizes)."""
    if isinstance(value, bool) or not isinstance(value, int | numbers.Integral) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_seed(name: str, value) -> int:
    """Return ``value`` as an int or raise InvalidArgumentError unless ``0 <= value < 2**63``
    (the seeds torch's generators take)."""
    if isinstance(value, bool) or not isinstance(value, int | numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < 2**63:
        raise InvalidArgumentError(f"{name} must be an integer in [0, 2**63), got {value}")
    return int(value)


def check_time_limit(name: str, value) -> float | None:
    """Return ``None`` (no limit) or ``float(value)``; raise InvalidArgumentError unless it
    is a finite number of seconds > 0."""
    if value is None:
        return None
    return check_positive(name, value)


def check_radii(name: str, values) -> list[float]:
    """Return a number or a sequence of numbers as a list of floats; raise
    InvalidArgumentError when it is empty or holds a negative or non-finite value (a radius
    of 0 is allowed: the certified accuracy at 0 is the clean accuracy)."""
    items = list(values) if isinstance(values, list | tuple) else [values]
    if not items:
        raise InvalidArgumentError(f"{name} must hold at least one radius, got {values!r}")
    radii = []
    for item in items:
        try:
            radius = float(item)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{name} must be numbers, got {item!r}") from None
        if not (math.isfinite(radius) and radius >= 0):
            raise InvalidArgumentError(f"{name} must be finite numbers >= 0, got {item!r}")
        radii.append(radius)
    return radii


def check_finite_tensor(name: str, tensor):
    """Return ``tensor`` or raise InvalidArgumentError naming ``name`` and the first entry
    that is NaN or infinite."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise InvalidArgumentError(f"{name} must be a tensor, got {type(tensor).__name__}")
    if tensor.is_floating_point() or tensor.is_complex():
        bad = (~torch.isfinite(tensor)).nonzero()
        if len(bad):
            index = tuple(int(i) for i in bad[0])
            raise InvalidArgumentError(f"{name} holds a non-finite value "
                                       f"({float(tensor[index])}) at index {list(index)}")
    return tensor


def check_labels(name: str, labels, classes: int | None, length: int | None = None):
    """Return ``labels`` as a 1-D int64 tensor or raise InvalidArgumentError: labels must be
    integers (an integer dtype, or floats with integral values), one per input (``length``),
    in ``[0, classes)`` (the model's output width; ``None``: any label >= 0)."""
    import torch

    if not isinstance(labels, torch.Tensor):
        raise InvalidArgumentError(f"{name} must be a tensor, got {type(labels).__name__}")
    if labels.ndim != 1:
        raise InvalidArgumentError(f"{name} must be 1-D (one label per input), got shape "
                                   f"{tuple(labels.shape)}")
    if length is not None and len(labels) != length:
        raise InvalidArgumentError(f"{name} holds {len(labels)} labels for {length} inputs")
    if labels.is_floating_point():
        check_finite_tensor(name, labels)
        if not torch.equal(labels, labels.round()):
            raise InvalidArgumentError(f"{name} must be integers, got non-integral values")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise InvalidArgumentError(f"{name} must be integers, got dtype {labels.dtype}")
    labels = labels.long()
    if classes is None:
        bad = (labels < 0).nonzero().flatten()
        if len(bad):
            raise InvalidArgumentError(f"{name}: label {int(labels[bad[0]])} of item "
                                       f"{int(bad[0])} is negative")
        return labels
    bad = ((labels < 0) | (labels >= classes)).nonzero().flatten()
    if len(bad):
        raise InvalidArgumentError(f"{name}: label {int(labels[bad[0]])} of item {int(bad[0])} "
                                   f"is outside [0, {classes}) (the model has {classes} "
                                   "outputs)")
    return labels
