"""Offline data: nothing here downloads anything.

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images).
"""

from lipkit.data.digits import load_digits

__all__ = ["load_digits"]
