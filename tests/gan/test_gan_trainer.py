"""lipkit.gan.trainer: resume reproduces the run, divergence stops it, bad input is refused."""

import json

import pytest
import torch

from lipkit.errors import InvalidArgumentError, LipkitError, UnknownMethodError
from lipkit.gan import LOSSES, GanConfig, TrainingDivergedError, load_checkpoint, train_gan
from lipkit.penalty import METHODS, LipschitzMethod

LOSSES_CYCLE = list(LOSSES)


def _small(**changes) -> GanConfig:
    values = dict(data="8gaussians", steps=6, n_critic=2, batch_size=32, hidden=16, depth=2,
                  eval_every=3, checkpoint_every=3, eval_samples=64, lr=1e-3)
    values.update(changes)
    return GanConfig(**values)


class _KilledError(Exception):
    pass


def _kill_at(step):
    def progress(event):
        if event.step == step:
            raise _KilledError
    return progress


@pytest.mark.parametrize("method", ["alp", "spectral", "clip"])
def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path, method):
    straight = train_gan(_small(lipschitz=method), tmp_path / "straight")
    with pytest.raises(_KilledError):  # killed after step 4; the checkpoint of step 3 survives
        train_gan(_small(lipschitz=method), tmp_path / "killed", progress=_kill_at(4))
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 3
    resumed = train_gan(_small(lipschitz=method), tmp_path / "killed", resume=True)
    assert resumed.metrics["resumed_from_step"] == 3
    for name in ("generator", "critic"):
        ours = getattr(resumed, name).state_dict()
        theirs = getattr(straight, name).state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), (name, key)
    drop = {"seconds"}
    assert ([{k: v for k, v in e.items() if k not in drop} for e in resumed.metrics["evaluations"]]
            == [{k: v for k, v in e.items() if k not in drop}
                for e in straight.metrics["evaluations"]])


def test_outputs_are_written(tmp_path):
    result = train_gan(_small(lipschitz="gp"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["final"]["step"] == 6 and metrics["critic_steps"] == 12
    assert metrics["final"]["w1_exact"] > 0 and metrics["final"]["lipschitz_lower"] > 0
    for name in ("losses.png", "samples.png", "checkpoint.pt"):
        assert (tmp_path / name).read_bytes()[:4] in (b"\x89PNG", b"PK\x03\x04"), name
    assert result.metrics["optimizer"]["lr"] == 1e-4  # the paper's, overridden by config.lr


@pytest.mark.parametrize("method", ["orthogonal", "spectral"])
def test_construction_methods_report_their_guaranteed_bound_above_the_lower_bound(method):
    result = train_gan(_small(lipschitz=method, steps=3))
    for evaluation in result.metrics["evaluations"]:
        assert evaluation["lipschitz_lower"] <= evaluation["lipschitz_upper"] * (1 + 1e-5)
        assert evaluation["lipschitz_upper"] == pytest.approx(1.0, rel=1e-3)
    bounds = result.metrics["critic_bounds"]  # lipkit.estimate's interval at the end
    assert result.metrics["final"]["lipschitz_lower"] <= bounds["upper"] * (1 + 1e-5)
    assert bounds["lower"] <= bounds["upper"] <= 1.0 + 1e-3, bounds


def test_penalized_critic_gets_an_estimated_interval():
    bounds = train_gan(_small(lipschitz="gp", steps=2)).metrics["critic_bounds"]
    assert 0 < bounds["lower"] <= bounds["upper"] < float("inf"), bounds
    assert bounds["upper_method"] in ("naive", "seqlip"), bounds


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = LipschitzMethod.penalty

    def poisoned(self, critic, real, fake, generator=None):
        calls["n"] += 1
        value = original(self, critic, real, fake, generator)
        return value * float("nan") if calls["n"] > 9 else value  # generator step 5

    monkeypatch.setattr(LipschitzMethod, "penalty", poisoned)
    with pytest.raises(TrainingDivergedError) as error:
        train_gan(_small(lipschitz="gp", steps=8), tmp_path)
    message = str(error.value)
    assert "generator step 5" in message and "not finite" in message
    assert str(tmp_path / "checkpoint.pt") in message and "step 3" in message
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


def test_divergence_threshold(tmp_path):
    with pytest.raises(TrainingDivergedError, match="divergence threshold"):
        train_gan(_small(lipschitz="none", lr=1.0, divergence_threshold=1e-3, steps=3))


def test_checkpoints_are_not_overwritten_nor_mixed_up(tmp_path):
    train_gan(_small(steps=3), tmp_path)
    with pytest.raises(LipkitError, match="exists"):
        train_gan(_small(steps=3), tmp_path)
    with pytest.raises(LipkitError, match=r"another run.*lipschitz"):
        train_gan(_small(steps=3, lipschitz="alp"), tmp_path, resume=True)


def test_corrupt_and_unsafe_checkpoints_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(LipkitError, match="cannot read checkpoint"):
        train_gan(_small(), tmp_path, resume=True)
    torch.save({"step": 1, "payload": _KilledError()}, path)  # needs pickle to load: refused
    with pytest.raises(LipkitError, match="cannot read checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("changes, error, message", [
    ({"lipschitz": "weight-decay"}, UnknownMethodError, "choose from"),
    ({"loss": "wasserstien"}, UnknownMethodError, "wasserstein"),
    ({"data": "mnist"}, UnknownMethodError, "8gaussians"),
    ({"steps": 0}, InvalidArgumentError, "steps"),
    ({"batch_size": 2.5}, InvalidArgumentError, "batch_size"),
    ({"lr": -1.0}, InvalidArgumentError, "lr"),
])
def test_bad_configurations_raise_one_line_errors(changes, error, message):
    with pytest.raises(error, match=message):
        train_gan(_small(**changes))


def test_real_data_with_nan_is_refused():
    real = torch.randn(10, 3)
    real[2, 1] = float("nan")
    with pytest.raises(InvalidArgumentError, match="NaN"):
        train_gan(_small(), real=real)


@pytest.mark.parametrize("method, loss", [("gp", "wasserstein"), ("spectral", "logistic")])
def test_a_short_run_moves_the_generator_towards_the_data(method, loss):
    # a blob away from the generator's initial outputs: W1 must drop well below its start;
    # (spectral, logistic) is a Lipschitz GAN of Zhou et al. with a non-Wasserstein loss
    real = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0)) * 0.5 + 2.0
    config = _small(lipschitz=method, loss=loss, steps=60, n_critic=5, hidden=32, batch_size=64,
                    eval_every=60, eval_samples=256, checkpoint_every=100)
    final = train_gan(config, real=real).metrics["final"]["w1_exact"]
    config.steps = 1  # the same networks and evaluation samples after one generator step
    start = train_gan(config, real=real).metrics["final"]["w1_exact"]
    assert final < 0.6 * start, (final, start)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_loss_trains_end_to_end(method):
    loss = LOSSES_CYCLE[METHODS.index(method) % len(LOSSES_CYCLE)]
    result = train_gan(_small(lipschitz=method, loss=loss, steps=2, eval_every=2,
                              checkpoint_every=2))
    final = result.metrics["final"]
    assert final["w1_exact"] > 0 and final["lipschitz_lower"] >= 0, final
    assert all(isinstance(v, float) for k, v in final.items()
               if k not in ("step", "lipschitz_upper")), final
