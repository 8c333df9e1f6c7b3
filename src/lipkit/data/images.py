"""A local folder of images, as one tensor (nothing is downloaded).

Images directly in the folder form one class; sub-folders are classes (named after them, in
sorted order), as torchvision's ``ImageFolder`` does. Files are read with Pillow.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError, LipkitError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


class ImageSet(NamedTuple):
    """Images (n, channels, h, w) in [0, 1], integer labels (n,) and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def load_image_folder(folder: str | Path, size: tuple[int, int] | None = None,
                      grayscale: bool = False) -> ImageSet:
    """Every image under ``folder`` (one level of class sub-folders).

    Args:
        folder: the folder.
        size: ``(height, width)`` to resize every image to; without it all images must
            already share one size.
        grayscale: one channel instead of RGB.

    Raises:
        LipkitError: no folder, no images, an unreadable file or mixed sizes (named).
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise LipkitError(f"image folder {folder} does not exist")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    groups = [("", folder)] if not classes else []
    groups += [(name, folder / name) for name in classes]
    names = [name for name, _ in groups]
    arrays, labels = [], []
    for label, (_, directory) in enumerate(groups):
        for path in sorted(p for p in directory.iterdir()
                           if p.is_file() and p.suffix.lower() in EXTENSIONS):
            try:
                with Image.open(path) as image:
                    image = image.convert("L" if grayscale else "RGB")
                    if size is not None:
                        image = image.resize((int(size[1]), int(size[0])), Image.BILINEAR)
                    array = np.asarray(image, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError, ValueError) as error:
                raise LipkitError(f"cannot read image {path}: {error}") from None
            if arrays and array.shape != arrays[0].shape:
                raise InvalidArgumentError(
                    f"image {path} has size {array.shape[:2]}, others {arrays[0].shape[:2]}: "
                    "pass size=(height, width)")
            arrays.append(array)
            labels.append(label)
    if not arrays:
        raise LipkitError(f"no images ({', '.join(EXTENSIONS)}) in {folder}")
    images = torch.from_numpy(np.stack(arrays))
    images = images.unsqueeze(1) if grayscale else images.permute(0, 3, 1, 2)
    return ImageSet(images.contiguous(), torch.tensor(labels), names)
