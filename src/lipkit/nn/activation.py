"""1-Lipschitz, gradient norm preserving activations: GroupSort, MaxMin, FullSort.

GroupSort (Anil, Lucas & Grosse, ICML 2019) splits the features into groups of
``group_size`` consecutive channels and sorts each group. Sorting only permutes the entries
of a vector, piecewise, so the Jacobian is a permutation matrix almost everywhere: the map
is 1-Lipschitz in l2 (and every lp) and preserves gradient norms. ``MaxMin`` is GroupSort
with groups of 2, ``FullSort`` sorts all features at once. With orthogonal weights these
activations give networks that approximate every 1-Lipschitz function (the paper's
universality result), which ReLU networks with norm-constrained weights cannot.
"""

from __future__ import annotations

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError


class GroupSort(nn.Module):
    """Sort each group of ``group_size`` features (along ``dim``) in descending order.

    Example:
        >>> import torch
        >>> GroupSort(2)(torch.tensor([[1.0, 3.0, -2.0, -5.0]]))
        tensor([[ 3.,  1., -2., -5.]])
    """

    def __init__(self, group_size: int = 2, dim: int = 1):
        super().__init__()
        if int(group_size) < 1:
            raise InvalidArgumentError(f"GroupSort group_size must be >= 1, got {group_size}")
        self.group_size = int(group_size)
        self.dim = dim

    def _size(self, features: int) -> int:
        return self.group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim % x.ndim
        features = x.shape[dim]
        size = self._size(features)
        if features % size:
            raise InvalidArgumentError(
                f"{type(self).__name__}: group size {size} does not divide the {features} "
                f"features of dimension {dim} (input shape {tuple(x.shape)})"
            )
        if size == 1:
            return x
        grouped = x.unflatten(dim, (features // size, size))
        if size == 2:  # max/min is much faster than sort
            first, second = grouped.unbind(dim + 1)
            result = torch.stack((torch.maximum(first, second), torch.minimum(first, second)),
                                 dim=dim + 1)
        else:
            result = grouped.sort(dim=dim + 1, descending=True).values
        return result.flatten(dim, dim + 1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, dim={self.dim}"


class MaxMin(GroupSort):
    """GroupSort with groups of two: ``(max(a, b), min(a, b))`` for each feature pair."""

    def __init__(self, dim: int = 1):
        super().__init__(2, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class FullSort(GroupSort):
    """Sort all features along ``dim`` (GroupSort with one group)."""

    def __init__(self, dim: int = 1):
        super().__init__(1, dim)

    def _size(self, features: int) -> int:
        return features

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
