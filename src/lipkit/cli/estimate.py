"""``lipkit estimate``: bound the Lipschitz constant of a network file."""

import json
from pathlib import Path
from typing import Annotated

import typer

from lipkit.cli.app import app
from lipkit.cli.console import Progress, fail, valid
from lipkit.errors import LipkitError


@app.command()
def estimate(
    path: Annotated[Path, typer.Argument(help="An ONNX file (.onnx) or LipSDP weights (.mat).")],
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="Method id, repeatable (default: all that fit)."),
    ] = None,
    norm: Annotated[str, typer.Option(help="Norm on inputs and outputs: 2, 1 or inf.")] = "2",
    input_shape: Annotated[
        str | None, typer.Option(help="Input shape without batch, e.g. 3,32,32.")
    ] = None,
    budget: Annotated[
        str, typer.Option(help="Wall-clock seconds for the whole run, or 'none'. Methods run "
                          "cheapest first; what does not fit is listed as skipped.")
    ] = "60",
    time_limit: Annotated[
        float | None, typer.Option(help="Seconds per method at most (within the budget).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the lower-bound searches.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Also write a PNG of every method's value and time.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes for LipSDP's sub-networks (--split).")
    ] = None,
    split: Annotated[
        int | None, typer.Option(help="LipSDP: weight matrices per sub-network.")
    ] = None,
    center: Annotated[
        str | None, typer.Option(help="Local constant around this input: comma-separated "
                                 "values or a .npy file. Every method is then local or "
                                 "skipped (global upper bounds bound it too).")
    ] = None,
    radius: Annotated[
        float | None, typer.Option(help="Radius of the l-inf ball around --center.")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(
            "--option", "-o", help="A method's own option, METHOD.FIELD=VALUE, repeatable "
            "(e.g. lower-jacobian.points=1024); an unknown one lists the method's options.")
    ] = None,
) -> None:
    """Bound the Lipschitz constant of a network: every method's bound and the interval.

    The running best interval is shown while the methods run; Ctrl-C stops the run, prints
    the best interval found (valid JSON with --json) and exits with status 130."""
    from lipkit.errors import check_positive, check_seed, check_time_limit
    from lipkit.estimate import estimate as run_estimate
    from lipkit.estimate.report import check_budget

    time_limit = valid(check_time_limit, "--time-limit", time_limit)
    budget_seconds = valid(check_budget, "--budget", _number_or_none(budget))
    valid(check_seed, "--seed", seed)
    if plot is not None and plot.exists():
        fail(f"--plot {plot} exists: lipkit does not overwrite it; remove it or choose another "
             "name")
    shape = None
    if input_shape:
        try:
            shape = tuple(int(part) for part in input_shape.replace("x", ",").split(","))
        except ValueError:
            fail(f"--input-shape must be integers separated by commas, got {input_shape!r}")
        if any(size < 1 for size in shape):
            fail(f"--input-shape must be positive integers, got {input_shape!r}")
    keywords = {}  # LipSDP's options (for every lipsdp-* method of the run) and the domain
    for name, value in (("workers", workers), ("split", split)):
        if value is not None:
            if value < 1:
                fail(f"--{name} must be a positive integer, got {value}")
            keywords[name] = value
    if radius is not None and center is None:
        fail("--radius needs --center (the point the local constant is taken around)")
    network = _read_network(path, shape)
    if center is not None:
        keywords["center"] = _read_center(center, network)
        keywords["radius"] = 1.0 if radius is None else valid(check_positive, "--radius",
                                                              radius)
    try:
        with Progress(not as_json, transient=True) as display:
            update_bar = display.bar("estimating")

            def progress(name: str, index: int, count: int) -> None:
                update_bar(index, total=count, description=f"running {name}")

            def status(message: str) -> None:  # a method's own steps (LipSDP's pieces)
                update_bar(None, description=f"running {message}")

            def update(report) -> None:  # the running best interval
                low, high = report.interval
                update_bar(len({b.method for b in report.bounds}),
                           status=f"best so far [{low:.4g}, {high:.4g}]")

            report = run_estimate(network, methods=method or None, norm=norm,
                                  input_shape=shape, time_limit=time_limit, seed=seed,
                                  budget=budget_seconds, progress=progress, status=status,
                                  update=update, options=_method_options(option), **keywords)
        if plot is not None:
            from lipkit.estimate.plot import plot_report

            plot_report(report, plot, title=f"{path.name}: {report.network.summary()}")
    except LipkitError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write the plot {plot}: {error.strerror or error}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        from lipkit.cli.render import print_report

        print_report(report)
        if plot is not None:
            typer.echo(f"plot written to {plot}")
    if report.interrupted:
        raise typer.Exit(130)


def _method_options(pairs: list[str] | None) -> dict:
    """``--option METHOD.FIELD=VALUE`` pairs as ``{method: {field: text}}`` (each method's
    options dataclass reads the text as its field's type)."""
    options: dict = {}
    for pair in pairs or []:
        key, separator, value = pair.partition("=")
        method, dot, field = key.strip().rpartition(".")
        if not separator or not dot or not method or not field:
            fail(f"--option must look like METHOD.FIELD=VALUE, got {pair!r}")
        options.setdefault(method, {})[field] = value.strip()
    return options


def _number_or_none(text: str):
    """``--budget``: a number of seconds, or ``none``; other text is passed on to be refused
    by name."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _read_network(path: Path, shape):
    """The model file as a Network; a file lipkit cannot read is one line naming it."""
    from lipkit.estimate import load_network
    from lipkit.io import MAX_MODEL_BYTES, check_input_file

    try:
        check_input_file(path, "model", MAX_MODEL_BYTES)
        return load_network(path, shape)
    except LipkitError as error:
        fail(str(error))
    except Exception as error:  # protobuf, scipy: many types for a corrupt file
        fail(f"model {path}: not a readable {path.suffix or 'model'} file "
             f"({type(error).__name__})")


def _read_center(text: str, network):
    """``--center``: comma-separated numbers, or a ``.npy`` file (read without pickle); finite,
    one value per input of the network."""
    import math

    import numpy as np

    if text.endswith(".npy"):
        try:
            center = np.load(text, allow_pickle=False).astype(float).reshape(-1)
        except (OSError, ValueError, TypeError) as error:
            fail(f"--center: cannot read {text} as a NumPy array: {error}")
    else:
        try:
            center = np.array([float(part) for part in text.split(",")])
        except ValueError:
            fail(f"--center must be numbers separated by commas or a .npy file, got {text!r}")
    inputs = math.prod(network.input_shape) if network.input_shape else None
    if inputs is not None and center.size != inputs:
        fail(f"--center has {center.size} values; the model has {inputs} inputs "
             f"(shape {tuple(network.input_shape)})")
    if not np.isfinite(center).all():
        fail(f"--center must be finite numbers, got {text if len(text) < 80 else text[:77]!r}")
    return center
