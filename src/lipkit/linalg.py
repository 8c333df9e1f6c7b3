"""The float64 rounding model and the proven spectral norm, shared by :mod:`lipkit.nn`
(certified bounds of layers) and :mod:`lipkit.estimate` (whose
:mod:`~lipkit.estimate.rounding` builds its error analysis on them): a leaf module, importing
only NumPy and torch.

``gamma(k) = k u / (1 - k u)`` (``u = 2^-53``) bounds the relative error of a sum or dot
product of ``k`` terms computed in float64 in any order (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., Lemma 3.1 and eq. 3.5).
"""

from __future__ import annotations

import math

import numpy as np
import torch

UNIT = 2.0 ** -53  # the unit roundoff of float64

#: the largest side of a matrix whose spectral norm is computed from its Gram matrix
GRAM_LIMIT = 4096


def gamma(k: int) -> float:
    """``k u / (1 - k u)``: the relative error bound of a ``k``-term float64 dot product."""
    return k * UNIT / (1 - k * UNIT)


def round_up(value: float) -> float:
    """The next float64 above ``value`` (a computed bound made safe)."""
    return float(np.nextafter(value, np.inf))


def spectral_norm_upper(matrix: torch.Tensor) -> float:
    """A proven upper bound on ``||A||_2`` in float64: the top eigenvalue of the smaller Gram
    matrix plus its rounding (the Gram's entries err by at most ``gamma(k) (|A| |A|^T)``,
    ``k`` the inner size, and a backward-stable symmetric eigensolver by ``gamma(4 n)``
    times the Gram's norm, both at most ``||A||_F^2``). Above :data:`GRAM_LIMIT` on the
    smaller side, ``min(||A||_F, sqrt(||A||_1 ||A||_inf))`` (cheap, looser)."""
    matrix = matrix.detach().to(torch.float64)
    if matrix.numel() == 0:
        return 0.0
    rows, columns = matrix.shape
    frobenius_squared = float(matrix.pow(2).sum()) * (1 + gamma(matrix.numel() + 1))
    if min(rows, columns) > GRAM_LIMIT:
        l1 = float(matrix.abs().sum(dim=0).max()) * (1 + gamma(rows + 1))
        linf = float(matrix.abs().sum(dim=1).max()) * (1 + gamma(columns + 1))
        return round_up(math.sqrt(min(frobenius_squared, l1 * linf)) * (1 + 4 * UNIT))
    gram = matrix @ matrix.T if rows <= columns else matrix.T @ matrix
    inner, side = max(rows, columns), min(rows, columns)
    top = float(torch.linalg.eigvalsh(gram)[-1])
    error = (gamma(inner + 1) + gamma(4 * side + 4)) * frobenius_squared
    return round_up(math.sqrt(max(top, 0.0) + error) * (1 + 4 * UNIT))
