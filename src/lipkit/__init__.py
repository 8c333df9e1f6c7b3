"""lipkit: Lipschitz continuity of neural networks — measure it, enforce it, use it.

The seminar's two questions (Terjék, 2020), for real users: how to measure ``||f||_L`` of a
network and how to enforce ``||f||_L <= lambda``. Subpackages, one per question:
:mod:`lipkit.nn` (enforce by construction), and the packages the later issues add.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lipkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
