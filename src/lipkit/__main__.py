"""``python -m lipkit``: the console script (and ``torchrun ... -m lipkit certify train``)."""

from lipkit.cli import run

run()
