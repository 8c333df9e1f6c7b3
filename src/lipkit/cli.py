"""The ``lipkit`` command line: thin commands over the public API.

Errors that lipkit raises on purpose print one line, ``error: ...``, and exit with status 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from lipkit import __version__
from lipkit.errors import LipkitError
from lipkit.io import claim_output_folder

# the files each command writes into its --out folder: an existing one lipkit did not write
# is refused (lipkit.io.claim_output_folder), never overwritten
GAN_OUTPUTS = ["checkpoint.pt", "metrics.json", "losses.png", "samples.png"]
MI_OUTPUTS = ["metrics.json", "mi.png"]
RL_OUTPUTS = ["metrics.json", "report.md", "compounding_error.png", "returns.png"]
CERTIFY_OUTPUTS = ["checkpoint.pt", "metrics.json", "model.onnx", "model.safetensors",
                   "report.md", "certified_accuracy.png"]

app = typer.Typer(
    name="lipkit",
    help="Lipschitz continuity of neural networks: measure it, enforce it, use it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lipkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Lipschitz continuity of neural networks: measure it, enforce it, use it."""


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit."""
    typer.echo(f"error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


def _nothing() -> None:
    """What a command finishes with before it claims its output folder."""


def _stderr_is_terminal() -> bool:
    """Progress bars only on a terminal: in a pipe or a log they would be stray lines around
    an error's one line."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


def _valid(check, name: str, value):
    """``check(name, value)`` from :mod:`lipkit.errors`, its error printed as one line."""
    try:
        return check(name, value)
    except LipkitError as error:
        fail(str(error))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the report.")] = Path("lipkit-demo"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quick: Annotated[bool, typer.Option(help="A few epochs only (a smoke run).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Run every lipkit capability on built-in data and write a report folder."""
    from lipkit.demo import run_demo
    from lipkit.errors import check_seed

    _valid(check_seed, "--seed", seed)
    try:
        metrics = run_demo(out, seed=seed, quick=quick,
                           progress=not as_json and _stderr_is_terminal())
    except (LipkitError, FloatingPointError, OSError) as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, default=str))
        return
    _summarize(metrics, out)


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
    time_limit: Annotated[
        float | None, typer.Option(help="Seconds per method (methods that can stop early).")
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
                                 "values or a .npy file (exact-mip, exact-bab, lp-jacobian).")
    ] = None,
    radius: Annotated[
        float | None, typer.Option(help="Radius of the l-inf ball around --center.")
    ] = None,
) -> None:
    """Bound the Lipschitz constant of a network: every method's bound and the interval."""
    from lipkit.errors import check_positive, check_seed, check_time_limit
    from lipkit.estimate import estimate as run_estimate

    time_limit = _valid(check_time_limit, "--time-limit", time_limit)
    _valid(check_seed, "--seed", seed)
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
    extra = {}
    for name, value in (("workers", workers), ("split", split)):
        if value is not None:
            if value < 1:
                fail(f"--{name} must be a positive integer, got {value}")
            extra[name] = value
    if radius is not None and center is None:
        fail("--radius needs --center (the point the local constant is taken around)")
    network = _read_network(path, shape)
    if center is not None:
        extra["center"] = _read_center(center, network)
        extra["radius"] = 1.0 if radius is None else _valid(check_positive, "--radius", radius)
    try:
        report = _with_progress(
            lambda progress, status: run_estimate(
                network, methods=method or None, norm=norm, input_shape=shape,
                time_limit=time_limit, seed=seed, progress=progress, status=status, **extra),
            enabled=not as_json,
        )
        if plot is not None:
            from lipkit.estimate.plot import plot_report

            plot_report(report, plot, title=f"{path.name}: {report.network.summary()}")
    except LipkitError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write the plot {plot}: {error.strerror or error}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_report(report)
    if plot is not None:
        typer.echo(f"plot written to {plot}")


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


def _with_progress(run, enabled: bool):
    if not enabled or not _stderr_is_terminal():
        return run(None, None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("estimating", total=None)

        def progress(name: str, index: int, count: int) -> None:
            bar.update(task, description=f"running {name}", completed=index, total=count)

        def status(message: str) -> None:  # a method's own steps (LipSDP's sub-networks)
            bar.update(task, description=f"running {message}")

        return run(progress, status)


def _print_report(report) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"l{report.norm} Lipschitz bounds: {report.network.summary()}")
    for column in ("method", "kind", "value", "seconds", "status"):
        table.add_column(column, justify="right" if column in ("value", "seconds") else "left")
    for bound in report.bounds:
        value = f"{bound.value:.6g}" if math.isfinite(bound.value) else "-"
        table.add_row(bound.method, bound.kind, value, f"{bound.seconds:.2f}", bound.status)
    console.print(table)
    low, high = report.interval
    lower = report.lower.method if report.lower else "none"
    upper = report.upper.method if report.upper else "none"
    console.print(f"||f||_L in [{low:.6g}, {high:.6g}]  (lower: {lower}, upper: {upper}, "
                  f"gap {report.gap:.3g}x)")
    if not report.consistent:
        console.print("[bold red]inconsistent: a lower bound exceeds an upper bound; "
                      "please report this network[/]")


def _summarize(metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, section in metrics["sections"].items():
        if not any(isinstance(v, dict) and "variant" in v for v in section.values()):
            continue
        table = Table(title=title)
        for column in ("variant", "test accuracy", "guaranteed bound", "largest observed"):
            table.add_column(column)
        for value in section.values():
            if isinstance(value, dict) and "variant" in value:
                table.add_row(
                    value["variant"], f"{value['test_accuracy']:.3f}",
                    f"{value['lipschitz_bound']:.4f}",
                    f"{max(value['largest_observed_ratio'], value['largest_jacobian_norm']):.4f}",
                )
        console.print(table)
    for title, section in metrics["sections"].items():
        for name, value in section.items():
            if isinstance(value, dict) and "interval" in value:
                interval = value["interval"]
                upper = interval["upper"]
                upper = f"{upper:.4f}" if isinstance(upper, float) else upper
                console.print(f"{title} — {name}: ||f||_L in [{interval['lower']:.4f}, "
                              f"{upper}] ({interval['lower_method']} / "
                              f"{interval['upper_method']})")
    console.print(f"report: {out / 'report.md'}  ({metrics['seconds']:.1f} s)")


@app.command()
def rl(
    env: Annotated[str, typer.Option("--env", help="Pendulum-v1 or CartPole-v1.")] = "Pendulum-v1",
    lipschitz: Annotated[
        str, typer.Option(help="Constants K of the model, comma separated.")
    ] = "0.25,0.5,1,2,4",
    method: Annotated[
        str, typer.Option(help="Constraint: clip (the paper's), spectral, orthogonal, aol, "
                               "bjorck, or none (unconstrained).")
    ] = "spectral",
    seeds: Annotated[int, typer.Option(help="Number of seeds (0, 1, ...).")] = 1,
    planner: Annotated[str, typer.Option(help="MPC planner: cem or random-shooting.")] = "cem",
    episodes: Annotated[int | None, typer.Option(help="Planning episodes per model.")] = None,
    unconstrained: Annotated[
        bool, typer.Option(help="Also train an unconstrained model (K from lipkit.estimate).")
    ] = True,
    out: Annotated[Path, typer.Option(help="Output folder for the report.")] = Path("lipkit-rl"),
    quick: Annotated[bool, typer.Option(help="Small sizes (a smoke run of seconds).")] = False,
    threads: Annotated[
        int, typer.Option(help="torch threads (small models run fastest on one).")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Lipschitz transition models: compounding error vs the theorem, value error, planning."""
    from lipkit.demo import Progress
    from lipkit.errors import check_positive
    from lipkit.rl import Settings, parse_constants, run_sweep
    from lipkit.rl.experiment import check_sweep

    finish = _nothing
    try:
        constants = parse_constants(lipschitz)
        settings = Settings.quick() if quick else Settings()
        settings.planner = planner
        if episodes is not None:
            settings.episodes = int(check_positive("--episodes", episodes))
        if seeds < 1:
            fail(f"--seeds must be at least 1, got {seeds}")
        check_sweep(env, method, planner)
        import torch

        torch.set_num_threads(int(check_positive("--threads", threads)))
        finish = claim_output_folder(out, "rl", RL_OUTPUTS)
        with Progress(not as_json and _stderr_is_terminal()) as bar:
            metrics = run_sweep(env, constants, method, tuple(range(seeds)), settings, out, bar,
                                unconstrained=unconstrained)
    except (LipkitError, FloatingPointError, OSError) as error:
        fail(str(error))
    finally:
        finish()
    if as_json:
        from lipkit.io import json_safe

        typer.echo(json.dumps(json_safe(metrics), indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lipkit rl: {metrics['environment']} ({metrics['method']})")
    for column in ("model", "K_hat", "Delta", "W1 n=1", "W1 n=H", "bound n=H", "return",
                   "bound held"):
        table.add_column(column)
    for row in metrics["summary"]:
        if "delta" not in row:
            table.add_row(row["model"], "", "", "", "", "", f"{row['return_mean']:.1f}", "")
            continue
        last = max(row["wasserstein"])
        table.add_row(row["model"], f"{row['state_lipschitz']:.4g}", f"{row['delta']:.4g}",
                      f"{row['wasserstein'][1]:.4g}", f"{row['wasserstein'][last]:.4g}",
                      f"{row['bound'][last]:.4g}", f"{row['return_mean']:.1f}",
                      "yes" if row["bound_held"] else "NO")
    console = Console()
    console.print(table)
    console.print(f"report: {out / 'report.md'}  ({metrics['seconds']:.1f} s)")
def _parse_options(pairs: list[str] | None) -> dict:
    """``key=value`` pairs: numbers, ``a,b`` pairs of numbers, ``none``, else strings."""
    options = {}
    for pair in pairs or []:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            fail(f"--option must look like key=value, got {pair!r}")
        key = key.strip().replace("-", "_")
        text = text.strip()
        try:
            parts = [float(part) for part in text.split(",")]
            options[key] = parts[0] if len(parts) == 1 else tuple(parts)
            if key in ("n_power_iterations",):
                options[key] = int(parts[0])
        except ValueError:
            options[key] = None if text.lower() == "none" else text
    return options


@app.command()
def gan(
    data: Annotated[str, typer.Option(help="8gaussians, 25gaussians, swissroll or digits.")]
    = "8gaussians",
    lipschitz: Annotated[str, typer.Option(
        help="Lipschitz method: clip, gp, gp-one-sided, lp, alp, spectral, orthogonal, "
             "unconstrained-alpha, none.")] = "gp",
    loss: Annotated[str, typer.Option(
        help="wasserstein, or a Lipschitz GAN loss: logistic, hinge, exponential, "
             "least-squares.")] = "wasserstein",
    steps: Annotated[int, typer.Option(help="Generator steps.")] = 2000,
    n_critic: Annotated[int, typer.Option(help="Critic steps per generator step.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 256,
    hidden: Annotated[int, typer.Option(help="Width of both networks (paper: 512).")] = 512,
    depth: Annotated[int, typer.Option(help="Hidden layers of both networks.")] = 3,
    constant: Annotated[float, typer.Option(help="Target Lipschitz constant lambda.")] = 1.0,
    weight: Annotated[float | None, typer.Option(
        help="Penalty weight (default: the paper's).")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="Method option key=value, repeatable (e.g. epsilon=0.01,1).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Learning rate (default: the paper's for the method).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    eval_every: Annotated[int, typer.Option(help="Generator steps between evaluations.")]
    = 100,
    eval_samples: Annotated[int, typer.Option(help="Samples for the exact W1.")] = 1000,
    checkpoint_every: Annotated[int, typer.Option(help="Generator steps between "
                                                       "checkpoints.")] = 100,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("lipkit-gan"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = False,
    threads: Annotated[int, typer.Option(
        help="torch CPU threads (small networks run fastest on one).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train a WGAN / Lipschitz GAN on toy data; write checkpoint, metrics.json and plots."""
    import torch

    from lipkit.errors import UnknownMethodError, check_seed
    from lipkit.gan import GanConfig, train_gan
    from lipkit.gan.trainer import DATASETS

    if threads < 1:
        fail(f"--threads must be >= 1, got {threads}")
    _valid(check_seed, "--seed", seed)
    torch.set_num_threads(threads)

    config = GanConfig(data=data, lipschitz=lipschitz, loss=loss, steps=steps,
                       n_critic=n_critic, batch_size=batch_size, hidden=hidden, depth=depth,
                       lipschitz_constant=constant, weight=weight,
                       method_options=_parse_options(option), lr=lr, seed=seed,
                       eval_every=eval_every, eval_samples=eval_samples,
                       checkpoint_every=checkpoint_every)
    finish = _nothing
    try:
        config.check()  # bad input fails before a progress bar is drawn
        if config.data not in DATASETS:
            raise UnknownMethodError("GAN data set", config.data, DATASETS)
        finish = claim_output_folder(out, "gan", GAN_OUTPUTS)
        if as_json or not _stderr_is_terminal():
            result = train_gan(config, out, resume=resume)
        else:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TimeRemainingColumn(),
                          TextColumn("{task.fields[status]}"),
                          console=Console(stderr=True)) as bar:
                task = bar.add_task(f"{loss} GAN, {lipschitz}, {data}", total=steps,
                                    status="")

                def progress(step: int, total: int, info: dict) -> None:
                    status = f"W1 {info['w1_exact']:.4f}" if info else ""
                    bar.update(task, completed=step, status=status)

                result = train_gan(config, out, resume=resume, progress=progress)
    except (LipkitError, OSError) as error:
        fail(str(error))
    finally:
        finish()
    if as_json:
        typer.echo(json.dumps(result.metrics, indent=2))
        return
    final = result.metrics["final"]
    typer.echo(f"step {final['step']}: exact W1 {final['w1_exact']:.4f}, critic's estimate "
               f"{final['w1_critic']:.4f}, critic's ||f||_L >= {final['lipschitz_lower']:.3f}; "
               f"{1e3 * result.metrics['seconds_per_critic_step']:.2f} ms per critic step")
    bounds = result.metrics["critic_bounds"]
    if "lower" in bounds:
        upper = f"{bounds['upper']:.4g}" if bounds["upper"] is not None else "inf"
        typer.echo(f"critic's ||f||_L in [{bounds['lower']:.4g}, {upper}] (lipkit.estimate: "
                   f"{bounds['lower_method']} / {bounds['upper_method']})")
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'losses.png'}, {out / 'samples.png'}, "
               f"{out / 'checkpoint.pt'}")


@app.command()
def mi(
    estimator: Annotated[str, typer.Option(help="dv, mine, nwj, infonce, wpc, wdm or d-lambda.")
                         ] = "infonce",
    lipschitz: Annotated[str, typer.Option(help="Lipschitz method of the critic (none, clip, "
                                                "spectral, orthogonal, gp, gp-one-sided, lp, "
                                                "alp, unconstrained-alpha).")] = "none",
    constant: Annotated[float, typer.Option(help="The critic's Lipschitz constant lambda.")
                        ] = 1.0,
    weight: Annotated[float | None, typer.Option(help="Penalty weight (default: the paper's).")
                      ] = None,
    critic: Annotated[str, typer.Option(help="joint or separable.")] = "separable",
    levels: Annotated[str, typer.Option(help="True MI staircase in nats, comma-separated.")
                      ] = "2,4,6,8,10",
    steps: Annotated[int, typer.Option(help="Steps per MI level (Poole et al.: 4000).")] = 1000,
    dim: Annotated[int, typer.Option(help="Dimension of x and of y.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch.")] = 64,
    hidden: Annotated[int, typer.Option(help="Hidden width of the critic.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder (metrics.json, mi.png).")
                   ] = Path("lipkit-mi"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Estimate mutual information of correlated Gaussians against the truth (Poole et al.)."""
    from lipkit.divergence import MiConfig, train_mutual_information
    from lipkit.errors import check_seed

    _valid(check_seed, "--seed", seed)

    try:
        mi_levels = tuple(float(part) for part in levels.split(","))
    except ValueError:
        fail(f"--levels must be numbers separated by commas, got {levels!r}")
    config = MiConfig(estimator=estimator, lipschitz=lipschitz, lipschitz_constant=constant,
                      weight=weight, critic=critic, dim=dim, mi=mi_levels, steps=steps,
                      batch_size=batch_size, hidden=hidden, lr=lr, seed=seed)
    finish = _nothing
    try:
        config.check()
        finish = claim_output_folder(out, "mi", MI_OUTPUTS)
        result = _with_mi_steps(lambda progress: train_mutual_information(config, out,
                                                                       progress=progress),
                             f"{estimator} ({lipschitz}, {critic})", enabled=not as_json)
    except (LipkitError, OSError) as error:
        fail(str(error))
    finally:
        finish()
    metrics = result.metrics
    if as_json:
        typer.echo(json.dumps({k: v for k, v in metrics.items()
                               if k not in ("estimates", "true_mi")}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metrics['estimator']}, {lipschitz} critic ({critic}); "
                        f"log(batch) = {metrics['log_batch']:.3f}")
    for column in ("true MI", "mean estimate", "bias", "variance"):
        table.add_column(column, justify="right")
    for row in metrics["levels"]:
        table.add_row(f"{row['true_mi']:g}", f"{row['mean']:.3f}", f"{row['bias']:+.3f}",
                      f"{row['variance']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"{out / 'metrics.json'}, {out / 'mi.png'} ({metrics['seconds']:.1f} s)")


def _with_mi_steps(run, description: str, enabled: bool):
    if not enabled or not _stderr_is_terminal():
        return run(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None, status="")

        def progress(step: int, total: int, info: dict) -> None:
            if step % 10 == 0 or step == total:
                bar.update(task, completed=step, total=total,
                           status=f"MI {info['mi']:g}: {info['estimate']:.3f}")

        return run(progress)


certify_app = typer.Typer(
    help="Robustness certificates: train a certifiably robust classifier, or certify a "
    "model you bring.",
    no_args_is_help=True,
)
app.add_typer(certify_app, name="certify")


def _eps_list(text: str) -> list[float]:
    from lipkit.errors import check_radii

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--eps must be numbers separated by commas, got {text!r}")
    return _valid(check_radii, "--eps", values)


@certify_app.command("train")
def certify_train(
    out: Annotated[Path, typer.Option(help="Output folder (resumes from its checkpoint).")] = Path(
        "lipkit-certify"),
    data: Annotated[str, typer.Option(help="digits; mnist:DIR, fashion-mnist:DIR (idx files) "
                                      "or cifar10:DIR (binary batches); or a .safetensors "
                                      "file with x_train, y_train, x_test, y_test.")] = "digits",
    model: Annotated[str, typer.Option(help="Preset: mlp or convnet.")] = "mlp",
    size: Annotated[str, typer.Option(help="small, medium or large.")] = "medium",
    layer: Annotated[str, typer.Option(help="Layer method: bjorck, orthogonal, aol, spectral, "
                                       "clip, bcop.")] = "bjorck",
    last: Annotated[str, typer.Option(help="Last layer: orthonormal or unit-rows.")] = (
        "orthonormal"),
    loss: Annotated[str, typer.Option(help="margin-ce, hkr, hinge, gloro or ce.")] = "margin-ce",
    offset: Annotated[float | None, typer.Option(help="margin-ce offset.")] = None,
    temperature: Annotated[float | None, typer.Option(help="margin-ce temperature.")] = None,
    alpha: Annotated[float | None, typer.Option(help="HKR hinge weight.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 150,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle Adam).")] = 3e-3,
    eps: Annotated[str, typer.Option(help="Radii, comma-separated.")] = "0.1,0.3,0.5,1.0",
    norm: Annotated[str, typer.Option(help="Perturbation norm: 2 or inf.")] = "2",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train a 1-Lipschitz preset and certify it: metrics.json, model.onnx, report.md, PNG."""
    from lipkit.certify.experiment import DEFAULT_LOSS_OPTIONS, train_and_certify
    from lipkit.certify.train import TrainingConfig
    from lipkit.errors import check_seed

    radii = _eps_list(eps)
    _valid(check_seed, "--seed", seed)
    options = dict(DEFAULT_LOSS_OPTIONS.get(loss, {}))
    for name, value in (("offset", offset), ("temperature", temperature), ("alpha", alpha)):
        if value is not None:
            if name not in options:
                fail(f"--{name} does not apply to the {loss} loss")
            options[name] = value
    finish = _nothing
    try:
        config = TrainingConfig(loss, options, epochs, batch_size, lr, seed)
        finish = claim_output_folder(out, "certify train", CERTIFY_OUTPUTS)
        metrics = _with_epoch_progress(
            lambda progress: train_and_certify(out, data, model, size, layer, last, config,
                                               radii, norm, progress=progress),
            epochs, enabled=not as_json)
    except (LipkitError, OSError) as error:
        fail(str(error))
    finally:
        finish()
    if as_json:
        typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2,
                              default=str))
        return
    _print_certification(metrics)
    typer.echo(f"report: {out / 'report.md'}")


def _with_epoch_progress(run, total: int, enabled: bool):
    if not enabled or not _stderr_is_terminal():
        return run(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("training", total=total)

        def progress(epoch: int, epochs: int, row: dict) -> None:
            bar.update(task, completed=epoch, description=(
                f"training: loss {row['loss']:.4f}, test accuracy "
                f"{row.get('test_accuracy', float('nan')):.3f}"))

        return run(progress)


def _print_certification(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    constants = metrics["constants"]
    table = Table(title=f"certified accuracy ({metrics['form']} certificate, "
                  f"l{metrics['norm']}; clean accuracy {metrics['clean_accuracy']:.3f})")
    for column in ("eps", "certified (VRA)", "PGD (upper bound)"):
        table.add_column(column, justify="right")
    for radius, vra in metrics["certified_accuracy"].items():
        pgd = metrics["pgd_accuracy"][radius] if metrics.get("pgd_accuracy") else None
        table.add_row(radius, f"{vra:.3f}", "-" if pgd is None else f"{pgd:.3f}")
    console.print(table)
    broken = metrics.get("broken_certificates") or {}
    console.print(f"||f||_L <= {constants['whole']:.6g} from {constants['source']}; "
                  f"certificates broken by PGD: l2 {broken.get('2', '-')}, "
                  f"l-inf {broken.get('inf', '-')}")


@certify_app.command("check")
def certify_check(
    model: Annotated[Path, typer.Argument(help="A model: .onnx, or a dense-chain state dict "
                                          "(.pt/.pth, read with weights_only; .safetensors).")],
    data: Annotated[str, typer.Option(help="digits (its 20 % test split); the test set of "
                                      "mnist:DIR, fashion-mnist:DIR or cifar10:DIR; or a "
                                      ".safetensors file with x, y tensors.")] = "digits",
    eps: Annotated[str, typer.Option(help="Radii, comma-separated.")] = "0.1,0.3,0.5,1.0",
    norm: Annotated[str, typer.Option(help="Perturbation norm: 2 or inf.")] = "2",
    form: Annotated[str, typer.Option(help="Certificate: pairwise, per-logit or global.")] = (
        "pairwise"),
    activation: Annotated[str, typer.Option(help="Activation between the layers of a state "
                                            "dict: maxmin, relu or tanh.")] = "maxmin",
    method: Annotated[list[str] | None, typer.Option(
        "--method", "-m", help="Upper-bound method for imported models, repeatable "
        "(default: naive, autolip, seqlip).")] = None,
    attack: Annotated[bool, typer.Option(help="Run PGD (accuracy and soundness).")] = True,
    seed: Annotated[int, typer.Option(help="Random seed of the attacks.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Certify a model you bring: VRA at each eps, PGD accuracy, broken certificates."""
    from lipkit.certify import certified_accuracy, logit_constants
    from lipkit.certify.experiment import (
        check_labels_fit,
        fit_inputs,
        load_classifier,
        load_data,
    )
    from lipkit.errors import check_seed

    radii = _eps_list(eps)
    _valid(check_seed, "--seed", seed)
    try:
        classifier = load_classifier(model, activation)
        dataset = load_data(data)
        x = fit_inputs(classifier, dataset.x_test)
        labels = check_labels_fit(classifier, x, dataset.y_test, data)
        constants = logit_constants(classifier, methods=method or None)
        result = certified_accuracy(classifier, x, labels, radii, norm, form,
                                    constants=constants, attack=attack, seed=seed)
    except (LipkitError, OSError) as error:
        fail(str(error))
    metrics = result.to_dict()
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, default=str))
        return
    _print_certification(metrics)


@certify_app.command("generalization")
def certify_generalization(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("lipkit-generalization"),
    epochs: Annotated[int, typer.Option(help="Training epochs per run.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Spectral complexity vs generalization gap on digits with 0/50/100 % random labels."""
    from lipkit.certify.generalization import label_noise_experiment, plot_label_noise
    from lipkit.errors import check_seed
    from lipkit.io import atomic_write_json

    if epochs < 1:
        fail(f"--epochs must be >= 1, got {epochs}")
    _valid(check_seed, "--seed", seed)
    finish = _nothing
    try:
        finish = claim_output_folder(out, "certify generalization",
                                     ["generalization.json", "generalization.png"])
        rows = _with_steps(lambda progress: label_noise_experiment(epochs=epochs, seed=seed,
                                                                   progress=progress),
                           total=6, enabled=not as_json)
        summary = [{k: v for k, v in row.items() if k != "normalized_margins"} for row in rows]
        atomic_write_json(out / "generalization.json", summary)
        plot_label_noise(rows, out / "generalization.png")
    except (LipkitError, OSError) as error:
        fail(str(error))
    finally:
        finish()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="digits with random labels: R_A / gamma against the gap")
    for column in ("network", "random labels", "train acc", "test acc", "gap", "R_A",
                   "gamma", "R_A / gamma"):
        table.add_column(column)
    for row in summary:
        table.add_row(row["network"], f"{row['random_labels']:.0%}",
                      f"{row['train_accuracy']:.3f}", f"{row['test_accuracy']:.3f}",
                      f"{row['generalization_gap']:.3f}", f"{row['spectral_complexity']:.4g}",
                      f"{row['margin']:.4g}", f"{row['normalized_complexity']:.4g}")
    Console().print(table)
    typer.echo(f"figure: {out / 'generalization.png'}")


def _with_steps(run, total: int, enabled: bool):
    if not enabled or not _stderr_is_terminal():
        return run(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("training", total=total)
        return run(lambda message: bar.update(task, advance=1, description=message))


def run(argv: list[str] | None = None) -> None:
    """The console script: every error a user can cause prints ONE line on stderr and exits
    2 (usage errors too, without click's box); Ctrl-C exits 130. Warnings of the libraries
    underneath (torch's, onnx's) are not the user's business here and are silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = app(args=argv, prog_name="lipkit", standalone_mode=False)
        except typer.TyperException as error:
            code = _click_error(error)
        except (KeyboardInterrupt, typer.Abort):
            typer.echo("interrupted", err=True)
            code = 130
        except LipkitError as error:
            typer.echo(f"error: {_one_line(error)}", err=True)
            code = 2
    sys.exit(code if isinstance(code, int) else 0)


def _click_error(error) -> int:
    """One line for a usage error (click would draw a box of six)."""
    if type(error).__name__ == "NoArgsIsHelpError":  # `lipkit` or a group alone: the help
        error.show()
        return 2
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    context = getattr(error, "ctx", None)
    where = f"{context.command_path}: " if context is not None else ""
    typer.echo(f"error: {where}{_one_line(message)}", err=True)
    return getattr(error, "exit_code", 2)


def _one_line(message) -> str:
    return " ".join(str(message).split())


if __name__ == "__main__":  # pragma: no cover
    run()
