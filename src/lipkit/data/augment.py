"""Training-time augmentation of image batches, drawn from a generator a run checkpoints.

:func:`crop_flip` is the augmentation of CIFAR-10 training since ResNets (He et al. 2016)
and of Prach et al.'s comparison (CVPR 2024): pad each image with ``padding`` zeros on
every side, cut a random window of the original size, and mirror it left-right with
probability 1/2. The draws (:func:`draw_crop_flip`) are separate from their application so
that the processes of a group draw them for the whole global batch from one seeded
generator and each applies its share: the augmented batch is the one a single process
would see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lipkit.errors import InvalidArgumentError

AUGMENTATIONS = ("crop-flip",)


def draw_crop_flip(count: int, padding: int = 4,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``(count, 3)`` integers per image: the window's top row and left column in the padded
    image (each uniform in ``0 .. 2 padding``) and whether it is mirrored (0 or 1)."""
    if padding < 0:
        raise InvalidArgumentError(f"padding must be >= 0, got {padding}")
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator)
    flips = (torch.rand(count, generator=generator) < 0.5).long()
    return torch.cat([offsets, flips[:, None]], 1)


def crop_flip(images: torch.Tensor, draws: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The windows ``draws`` (:func:`draw_crop_flip`) of ``images`` ``(n, C, H, W)``
    zero-padded by ``padding``, mirrored where drawn.

    Example:
        >>> image = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> crop_flip(image, torch.tensor([[1, 1, 1]]), padding=1)  # the image, mirrored
        tensor([[[[1., 0.],
                  [3., 2.]]]])
    """
    if images.ndim != 4:
        raise InvalidArgumentError(f"crop-flip augments image batches (n, C, H, W), got "
                                   f"shape {tuple(images.shape)}")
    if len(draws) != len(images):
        raise InvalidArgumentError(f"{len(draws)} draws for {len(images)} images")
    count, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    draws = draws.to(images.device)
    rows = draws[:, :1] + torch.arange(height, device=images.device)  # (n, H)
    columns = draws[:, 1:2] + torch.arange(width, device=images.device)  # (n, W)
    columns = torch.where(draws[:, 2:3].bool(), columns.flip(1), columns)
    index = torch.arange(count, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], columns[:, None, None, :]]
