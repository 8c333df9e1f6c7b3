"""The ``lipkit`` command line: thin commands over the public API, one module per command
group (:mod:`~lipkit.cli.estimate`, :mod:`~lipkit.cli.demo_command`, :mod:`~lipkit.cli.gan`,
:mod:`~lipkit.cli.mi`, :mod:`~lipkit.cli.rl`, :mod:`~lipkit.cli.certify`), one shared console
and progress helper (:mod:`~lipkit.cli.console`) and one renderer of estimation reports
(:mod:`~lipkit.cli.render`). Commands import the library lazily, so ``lipkit --help`` and a
small ``lipkit estimate`` start fast.

Errors that lipkit raises on purpose print one line, ``error: ...``, and exit with status 2.
"""

from __future__ import annotations

import sys
import warnings

import typer

# importing the command modules registers their commands on the app
from lipkit.cli import certify, demo_command, estimate, gan, mi, rl  # noqa: F401
from lipkit.cli.app import app, certify_app
from lipkit.cli.console import click_error, one_line, speaks
from lipkit.errors import LipkitError, LipkitWarning

__all__ = ["app", "certify_app", "run"]


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if speaks():  # under torchrun, rank 0 only
        typer.echo(f"warning: {one_line(message)}", err=True)


def run(argv: list[str] | None = None) -> None:
    """The console script: every error a user can cause prints ONE line on stderr and exits
    2 (usage errors too, without click's box); Ctrl-C exits 130. lipkit's own warnings
    (:class:`~lipkit.errors.LipkitWarning`) print one line each, ``warning: ...``; those of
    the libraries underneath (torch's, onnx's) are not the user's business here and are
    silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", LipkitWarning)
        warnings.showwarning = _one_line_warning
        try:
            code = app(args=argv, prog_name="lipkit", standalone_mode=False)
        except typer.TyperException as error:
            code = click_error(error)
        except (KeyboardInterrupt, typer.Abort):
            typer.echo("interrupted", err=True)
            code = 130
        except LipkitError as error:
            if speaks():
                typer.echo(f"error: {one_line(error)}", err=True)
            code = 2
    code = code if isinstance(code, int) else 0
    if "lipkit.distributed" in sys.modules:  # never imported by a command without a group
        from lipkit import distributed

        if distributed.launched():  # a process torchrun started: see distributed.exit
            distributed.exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
