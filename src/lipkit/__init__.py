"""lipkit: Lipschitz continuity of neural networks — measure it, enforce it, use it.

The seminar's two questions (Terjék, 2020), for real users: how to measure ``||f||_L`` of a
network and how to enforce ``||f||_L <= lambda``. Subpackages, one per question:
:mod:`lipkit.nn` (enforce by construction), and the packages the later issues add.
"""

__all__ = ["__version__"]


def __getattr__(name: str):
    """``__version__``, read from the installed metadata on first use (not at import: the
    metadata look-up costs start-up time)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("lipkit")
    except PackageNotFoundError:  # running from a source tree without installation
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
