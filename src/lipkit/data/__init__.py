"""Offline data: nothing here downloads anything.

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images).
- :func:`sample_toy` (``TOYS``: ``8gaussians``, ``25gaussians``, ``swissroll``): the 2-D toy
  distributions of WGAN-GP with the paper's parameters.
- :func:`load_image_folder`: a local folder of images (class sub-folders optional).
- :func:`load_mnist`, :func:`load_idx`: MNIST-style idx files a user already has.
- :func:`load_cifar10`, :func:`load_cifar10_batch`: the binary version of CIFAR-10 a user
  already has (never unpickled).
- :func:`crop_flip`, :func:`draw_crop_flip`: random crops of zero-padded images and
  horizontal flips, the CIFAR-10 training augmentation.
"""

from lipkit.data.augment import AUGMENTATIONS, crop_flip, draw_crop_flip
from lipkit.data.cifar import CifarSplit, load_cifar10, load_cifar10_batch
from lipkit.data.digits import load_digits
from lipkit.data.images import ImageSet, load_image_folder
from lipkit.data.mnist import MnistSplit, load_idx, load_mnist
from lipkit.data.toys import TOYS, eight_gaussians, sample_toy, swiss_roll, twenty_five_gaussians

__all__ = ["AUGMENTATIONS", "TOYS", "CifarSplit", "ImageSet", "MnistSplit", "crop_flip",
           "draw_crop_flip", "eight_gaussians",
           "load_cifar10", "load_cifar10_batch", "load_digits", "load_idx",
           "load_image_folder", "load_mnist", "sample_toy", "swiss_roll",
           "twenty_five_gaussians"]
