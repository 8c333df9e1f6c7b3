"""``python -m lipkit.cli``: the console script."""

from lipkit.cli import run

run()
