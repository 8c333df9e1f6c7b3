"""What every command shares: one-line errors, option checks, and one progress display.

Errors a user can cause print ONE line on stderr, ``error: ...``, and exit with status 2
(:func:`fail`); in a group of processes started by ``torchrun`` only rank 0 prints them
(:func:`speaks`: every rank fails alike on a user's input, and one line is enough).
:class:`Progress` is the one progress display of the CLI and the demo: a rich
progress bar on stderr when it is a terminal, nothing otherwise (in a pipe or a log, bars
would be stray lines around an error's one line, and ``--json`` output stays clean).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import typer

from lipkit.errors import LipkitError


def one_line(message) -> str:
    """A message on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(str(message).split())


def speaks() -> bool:
    """Whether this process prints errors: always, but for ranks other than 0 of a
    ``torchrun`` group (``RANK`` and ``WORLD_SIZE`` set)."""
    return "WORLD_SIZE" not in os.environ or os.environ.get("RANK", "0") == "0"


def click_error(error) -> int:
    """One line for a usage error (click would draw a box of six); returns the exit code."""
    if type(error).__name__ == "NoArgsIsHelpError":  # `lipkit` or a group alone: the help
        error.show()
        return 2
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    context = getattr(error, "ctx", None)
    where = f"{context.command_path}: " if context is not None else ""
    if speaks():
        typer.echo(f"error: {where}{one_line(message)}", err=True)
    return getattr(error, "exit_code", 2)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error (rank 0 of a group alone) and exit."""
    if speaks():
        typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def valid(check, name: str, value):
    """``check(name, value)`` from :mod:`lipkit.errors`, its error printed as one line."""
    try:
        return check(name, value)
    except LipkitError as error:
        fail(str(error))


def nothing() -> None:
    """What a command finishes with before it claims its output folder."""


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (progress bars are drawn only there)."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


class Progress:
    """A rich progress display on stderr, or nothing (``enabled`` False, or stderr is not a
    terminal). ``task(description, total)`` adds a bar and returns ``advance(status="")``;
    ``bar(description, total)`` returns ``update(completed, status="", total=None)`` for
    loops that report where they are rather than one step at a time; ``events(description)``
    returns a :class:`lipkit.training.ProgressEvent` callback that draws a bar of the
    events' total with their ``status`` figure."""

    def __init__(self, enabled: bool = True, transient: bool = False):
        self.enabled = enabled and stderr_is_terminal()
        self.transient = transient
        self._progress = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                console=Console(stderr=True), transient=self.transient,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int | None) -> Callable[..., None]:
        """Start a task; returns ``advance(status="")``."""
        if self._progress is None:
            return lambda status="": None
        task_id = self._progress.add_task(description, total=total, status="")
        return lambda status="": self._progress.update(task_id, advance=1, status=status)

    def bar(self, description: str, total: int | None = None) -> Callable[..., None]:
        """Start a task; returns ``update(completed, status="", total=None,
        description=None)``."""
        if self._progress is None:
            return lambda completed, status="", total=None, description=None: None
        task_id = self._progress.add_task(description, total=total, status="")

        def update(completed, status: str = "", total=None, description=None) -> None:
            fields = {"completed": completed, "status": status}
            if total is not None:
                fields["total"] = total
            if description is not None:
                fields["description"] = description
            self._progress.update(task_id, **fields)

        return update

    def events(self, description: str) -> Callable[..., None]:
        """A callback for :class:`lipkit.training.ProgressEvent` s: a bar of ``event.total``,
        at ``event.step``, showing ``event.figures["status"]`` when there is one."""
        update = None

        def report(event) -> None:
            nonlocal update
            if update is None:
                update = self.bar(description, event.total)
            update(event.step, status=str(event.figures.get("status", "")))

        return report
