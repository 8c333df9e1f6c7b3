"""Measure ``||f||_L``: import any network into one description, run estimation methods,
and report the tightest interval ``[best lower, best upper]`` they prove.
"""

from lipkit.estimate.bound import Bound
from lipkit.estimate.importers import load_network
from lipkit.estimate.network import Network
from lipkit.estimate.registry import METHODS, Options, register_method

__all__ = ["METHODS", "Bound", "Network", "Options", "load_network", "register_method"]
