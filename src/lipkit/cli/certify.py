"""``lipkit certify train | protocol | check | generalization``: robustness certificates."""

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from lipkit.cli.app import certify_app
from lipkit.cli.console import Progress, fail, nothing, valid
from lipkit.errors import LipkitError
from lipkit.io import claim_output_folder

CERTIFY_OUTPUTS = ["checkpoint.pt", "metrics.json", "model.onnx", "model.safetensors",
                   "report.md", "certified_accuracy.png"]


def _eps_list(text: str) -> list[float]:
    from lipkit.errors import check_radii

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--eps must be numbers separated by commas, got {text!r}")
    return valid(check_radii, "--eps", values)


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
    valid(check_seed, "--seed", seed)
    options = dict(DEFAULT_LOSS_OPTIONS.get(loss, {}))
    for name, value in (("offset", offset), ("temperature", temperature), ("alpha", alpha)):
        if value is not None:
            if name not in options:
                fail(f"--{name} does not apply to the {loss} loss")
            options[name] = value
    try:
        config = TrainingConfig(loss, options, epochs, batch_size, lr, seed)
    except LipkitError as error:
        fail(str(error))
    metrics = _on_every_rank(out, "certify train", CERTIFY_OUTPUTS, lambda main: (
        _with_epoch_progress(
            lambda progress: train_and_certify(out, data, model, size, layer, last, config,
                                               radii, norm, progress=progress),
            epochs, enabled=not as_json and main)))
    if metrics is None:  # a rank other than 0: rank 0 reports
        return
    if as_json:
        _echo_metrics(metrics)
        return
    _print_certification(metrics)
    typer.echo(f"report: {out / 'report.md'}")


@certify_app.command("protocol")
def certify_protocol(
    data: Annotated[str, typer.Option(help="cifar10:DIR: the folder of CIFAR-10's binary "
                                      "batches (data_batch_1..5.bin, test_batch.bin).")],
    hours: Annotated[float, typer.Option(help="Wall-clock training budget in hours.")],
    layer: Annotated[str, typer.Option(help="Layer under test: aoc, aol, bcop, cayley, soc, "
                                       "sll or cpl.")] = "aol",
    size: Annotated[str, typer.Option(help="Comparison ConvNet: small or medium.")] = "small",
    epochs: Annotated[int | None, typer.Option(
        help="Epochs of the one-cycle schedule (default: as many as fit --hours, timed "
        "before training).")] = None,
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 256,
    lr: Annotated[float | None, typer.Option(
        help="Peak learning rate (default: the paper's for the layer and size).")] = None,
    weight_decay: Annotated[float | None, typer.Option(
        help="Weight decay (default: the paper's for the layer and size).")] = None,
    attack: Annotated[bool, typer.Option(help="Also run PGD inside the certified radii.")
                      ] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder (resumes from its checkpoint).")] = (
        Path("lipkit-protocol")),
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Prach et al.'s CIFAR-10 protocol: train for --hours, report VRA at 36/255, 72/255,
    108/255 and clean accuracy (metrics.json, report.md)."""
    from lipkit.certify.protocol import (
        PROTOCOL_OUTPUTS,
        check_protocol_arguments,
        cifar10_protocol,
    )

    try:
        check_protocol_arguments(layer, size, hours, epochs, batch_size, lr, weight_decay,
                                 seed)
    except LipkitError as error:
        fail(str(error))
    if not data.startswith("cifar10:"):
        fail(f"--data must be cifar10:DIR (the protocol trains on CIFAR-10), got {data!r}")
    def protocol(main: bool):
        with Progress(not as_json and main, transient=True) as display:
            return cifar10_protocol(
                out, data, layer, size, hours, epochs, batch_size, lr, weight_decay, seed,
                attack, progress=_budget_progress(display, hours) if display.enabled else None)

    metrics = _on_every_rank(out, "certify protocol", PROTOCOL_OUTPUTS, protocol)
    if metrics is None:  # a rank other than 0: rank 0 reports
        return
    if as_json:
        _echo_metrics(metrics)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"CIFAR-10, {layer} ({size}): clean accuracy "
                  f"{metrics['clean_accuracy']:.4f}, L <= {metrics['lipschitz_bound']:.6g}")
    for column in ("eps (l2)", "certified (VRA)"):
        table.add_column(column, justify="right")
    for radius, vra in zip(metrics["eps_255"], metrics["certified_accuracy"].values(),
                           strict=True):
        table.add_row(f"{radius}/255", f"{vra:.4f}")
    Console().print(table)
    typer.echo(f"{metrics['epochs_done']}/{metrics['epochs_planned']} epochs in "
               f"{metrics['train_seconds'] / 3600:.4g} h, {metrics['images_per_second']:.1f} "
               f"images/s; report: {out / 'report.md'}")


def _budget_progress(display: Progress, hours: float):
    """A progress callback: a bar of the planned epochs, with the loss and the budget."""
    update = None

    def report(event) -> None:
        nonlocal update
        if update is None:
            update = display.bar("training", event.total)
        row = event.figures
        update(event.step, status=f"loss {row['loss']:.4f}, train accuracy "
               f"{row['train_accuracy']:.3f}, budget {hours:g} h")

    return report


def _on_every_rank(out, command: str, outputs, work):
    """``work(main)`` on this process (under torchrun: after joining its process group;
    ``main`` for rank 0 or a single process), with the output folder claimed by rank 0; a
    LipkitError or OSError ends the command with its one line; the group is left always."""
    from lipkit import distributed

    finish = nothing
    try:
        group = distributed.from_environment()
        finish = _claim_on_rank_zero(out, command, outputs)
        return work(group is None or group.is_main)
    except (LipkitError, OSError) as error:
        fail(str(error))
    finally:
        finish()
        distributed.leave()


def _echo_metrics(metrics: dict) -> None:
    """A run's metrics as JSON, without the per-epoch history."""
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2,
                          default=str))


def _claim_on_rank_zero(out: Path, command: str, outputs: list[str]):
    """:func:`lipkit.io.claim_output_folder` by the one process that writes the folder (rank
    0 of a group); every rank learns whether it could, and stops with it when not."""
    from lipkit import distributed

    failure, finish = None, nothing
    if distributed.is_main():
        try:
            finish = claim_output_folder(out, command, outputs)
        except LipkitError as error:
            failure = error
    if not distributed.agree(failure is None):
        fail(str(failure) if failure else f"rank 0 could not claim the output folder {out}")
    return finish


def _print_local(console, metrics: dict) -> None:
    from rich.table import Table

    table = Table(title="local certificates (images certified / images)")
    for column in ("eps", "local constant", "direct bound", "either", "global form",
                   "s / image"):
        table.add_column(column, justify="right")
    for radius, counts in metrics["local"].items():
        images = counts["images"]
        global_share = metrics["global_certified_accuracy"][radius]
        table.add_row(radius, f"{counts['by_local_constant']}/{images}",
                      f"{counts['by_direct_bound']}/{images}",
                      f"{counts['certified']}/{images}",
                      f"{round(global_share * images)}/{images}",
                      f"{counts['seconds_per_image']:.2f}")
    console.print(table)


def _with_epoch_progress(run, total: int, enabled: bool):
    with Progress(enabled, transient=True) as display:
        update = display.bar("training", total)

        def progress(event) -> None:
            row = event.figures
            update(event.step, description=(
                f"training: loss {row['loss']:.4f}, test accuracy "
                f"{row.get('test_accuracy', float('nan')):.3f}"))

        return run(progress if display.enabled else None)


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
    if "local" in metrics:
        _print_local(console, metrics)
    console.print(f"domain: {metrics.get('domain', 'R^n')}")
    broken = metrics.get("broken_certificates") or {}
    console.print(f"||f||_L <= {constants['whole']:.6g} from {constants['source']}; "
                  f"certificates broken by PGD: l2 {broken.get('2', '-')}, "
                  f"l-inf {broken.get('inf', '-')}"
                  + (f", local {broken['local']}" if "local" in broken else ""))


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
    local: Annotated[bool, typer.Option(
        "--local", help="Certify each image with local constants and the direct bound over "
        "its eps-ball clipped to --domain (dense ReLU-type chains).")] = False,
    domain: Annotated[str | None, typer.Option(
        help="The inputs' data domain LOW,HIGH (balls and PGD are clipped to it), or none; "
        "default 0,1 for the image data sets, none for a .safetensors file.")] = None,
    time_limit: Annotated[float, typer.Option(help="Seconds per image and eps for --local.")
                          ] = 10.0,
    restarts: Annotated[int, typer.Option(help="PGD restarts.")] = 1,
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
    valid(check_seed, "--seed", seed)
    if local and any(not value > 0 for value in radii):
        fail(f"--eps must be > 0 with --local, got {eps!r}")
    if not (time_limit > 0 and math.isfinite(time_limit)):
        fail(f"--time-limit must be a finite number > 0, got {time_limit!r}")
    if restarts < 1:
        fail(f"--restarts must be >= 1, got {restarts}")
    data_domain = _data_domain(domain, data)
    try:
        classifier = load_classifier(model, activation)
        dataset = load_data(data, test_only=True)
        x = fit_inputs(classifier, dataset.x_test)
        labels = check_labels_fit(classifier, x, dataset.y_test, data)
        constants = logit_constants(classifier, methods=method or None)
        with Progress(not as_json and local, transient=True) as display:
            update = display.bar("local certificates", len(x) * len(radii)) \
                if display.enabled else None
            done = [0]

            def progress(index: int, count: int) -> None:
                done[0] += 1
                update(done[0], description=f"local certificates: image {index + 1}/{count}")

            result = certified_accuracy(classifier, x, labels, radii, norm, form,
                                        constants=constants, attack=attack, seed=seed,
                                        local=local, data_domain=data_domain,
                                        time_limit=time_limit, restarts=restarts,
                                        progress=progress if update else None)
    except (LipkitError, OSError) as error:
        fail(str(error))
    metrics = result.to_dict()
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, default=str))
        return
    _print_certification(metrics)


IMAGE_DATA = ("digits", "mnist:", "fashion-mnist:", "cifar10:")


def _data_domain(text: str | None, data: str):
    """``(low, high)`` from ``--domain`` (default ``[0, 1]`` for the image data sets)."""
    if text is None:
        return (0.0, 1.0) if data.startswith(IMAGE_DATA) else None
    if text.strip().lower() == "none":
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        fail(f"--domain must be LOW,HIGH or none, got {text!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        fail(f"--domain must be finite numbers LOW < HIGH, got {text!r}")
    return low, high


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
    valid(check_seed, "--seed", seed)
    finish = nothing
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
    with Progress(enabled, transient=True) as display:
        return run(display.events("training") if display.enabled else None)
