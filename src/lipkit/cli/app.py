"""The ``lipkit`` typer application and its command groups (commands live one module per
group: :mod:`lipkit.cli.estimate`, :mod:`lipkit.cli.demo`, ...)."""

from typing import Annotated

import typer

import lipkit

app = typer.Typer(
    name="lipkit",
    help="Lipschitz continuity of neural networks: measure it, enforce it, use it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
certify_app = typer.Typer(
    help="Robustness certificates: train a certifiably robust classifier, or certify a "
    "model you bring.",
    no_args_is_help=True,
)
app.add_typer(certify_app, name="certify")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lipkit {lipkit.__version__}")  # the metadata is read only here
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Lipschitz continuity of neural networks: measure it, enforce it, use it."""
