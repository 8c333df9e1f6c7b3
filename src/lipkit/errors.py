"""The exception types of lipkit.

Every error names what went wrong and where (the layer's path and type, the file, the
argument), so that a CLI can print it as one line.
"""


class LipkitError(Exception):
    """Base class of every error lipkit raises on purpose."""


class InvalidArgumentError(LipkitError, ValueError):
    """An argument is out of its domain (a non-positive constant, a bad group size, ...)."""


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


def check_time_limit(name: str, value) -> float | None:
    """``None`` (no limit) or a finite number of seconds > 0; else InvalidArgumentError."""
    if value is None:
        return None
    return check_positive(name, value)


def check_seed(name: str, value) -> int:
    """An integer seed in ``[0, 2**63)`` (what torch's and numpy's generators accept)."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgumentError(f"{name} must be an integer, got {value!r}") from None
        if number != value:
            raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
        value = number
    if not 0 <= value < 2 ** 63:
        raise InvalidArgumentError(f"{name} must be an integer in [0, 2**63), got {value}")
    return value
