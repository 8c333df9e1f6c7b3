"""``lipkit gan``: Wasserstein and Lipschitz GANs on toy data."""

import json
from pathlib import Path
from typing import Annotated

import typer

from lipkit.cli.app import app
from lipkit.cli.console import Progress, fail, nothing, valid
from lipkit.errors import LipkitError
from lipkit.io import claim_output_folder

GAN_OUTPUTS = ["checkpoint.pt", "metrics.json", "losses.png", "samples.png"]


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
             "unconstrained-alpha, max-gp, none.")] = "gp",
    loss: Annotated[str, typer.Option(
        help="wasserstein, or a Lipschitz GAN loss: logistic, hinge, exponential, "
             "least-squares, sqrt.")] = "wasserstein",
    generator_objective: Annotated[str, typer.Option(
        help="The generator's psi: linear (-f, Zhou et al.'s default), non-saturating "
             "(phi(-f)) or minimax (-phi(f)).")] = "linear",
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
    valid(check_seed, "--seed", seed)
    torch.set_num_threads(threads)

    config = GanConfig(data=data, lipschitz=lipschitz, loss=loss,
                       generator_objective=generator_objective, steps=steps,
                       n_critic=n_critic, batch_size=batch_size, hidden=hidden, depth=depth,
                       lipschitz_constant=constant, weight=weight,
                       method_options=_parse_options(option), lr=lr, seed=seed,
                       eval_every=eval_every, eval_samples=eval_samples,
                       checkpoint_every=checkpoint_every)
    finish = nothing
    try:
        config.check()  # bad input fails before a progress bar is drawn
        if config.data not in DATASETS:
            raise UnknownMethodError("GAN data set", config.data, DATASETS)
        finish = claim_output_folder(out, "gan", GAN_OUTPUTS)
        with Progress(not as_json) as display:
            update = display.bar(f"{loss} GAN, {lipschitz}, {data}", steps)

            def progress(event) -> None:
                info = event.figures
                update(event.step, status=f"W1 {info['w1_exact']:.4f}" if info else "")

            result = train_gan(config, out, resume=resume,
                               progress=progress if display.enabled else None)
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


