"""Training: a killed run resumes to the same weights; bad input is a one-line error."""

import pytest
import torch

from lipkit.certify import TrainingConfig, lipschitz_mlp, train_certified
from lipkit.errors import InvalidArgumentError, LipkitError, UnknownMethodError


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(96, 6, generator=generator)
    return x, (x[:, 0] > x[:, 1]).long()


def _model():
    torch.manual_seed(0)
    return lipschitz_mlp(6, 2, hidden=(8,), layer="spectral")


class KilledError(Exception):
    pass


@pytest.mark.parametrize("loss", ["margin-ce", "hkr", "gloro"])
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, loss):
    x, y = _data()
    options = {"gloro": {"eps": 0.1}}.get(loss)
    config = TrainingConfig(loss=loss, loss_options=options, epochs=4, batch_size=32)
    reference = _model()
    full = train_certified(reference, x, y, config)

    def kill(event):
        if event.step == 2:
            raise KilledError

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(KilledError):
        train_certified(_model(), x, y, config, checkpoint=checkpoint, progress=kill)
    resumed_model = _model()
    resumed = train_certified(resumed_model, x, y, config, checkpoint=checkpoint)
    assert [row["epoch"] for row in resumed["epochs"]] == [1, 2, 3, 4]
    for (name, a), b in zip(reference.state_dict().items(), resumed_model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name  # bit for bit
    assert [r["loss"] for r in resumed["epochs"]] == [r["loss"] for r in full["epochs"]]


def test_checkpoint_errors(tmp_path):
    x, y = _data()
    checkpoint = tmp_path / "checkpoint.pt"
    train_certified(_model(), x, y, TrainingConfig(epochs=1), checkpoint=checkpoint)
    with pytest.raises(LipkitError, match=r"another run.*epochs"):
        train_certified(_model(), x, y, TrainingConfig(epochs=2), checkpoint=checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(LipkitError, match="cannot read checkpoint"):
        train_certified(_model(), x, y, TrainingConfig(epochs=1), checkpoint=checkpoint)


def test_nan_and_bad_config_are_errors():
    x, y = _data()
    x[0, 0] = float("nan")
    with pytest.raises(InvalidArgumentError, match=r"x_train holds a non-finite value"):
        train_certified(_model(), x, y, TrainingConfig(epochs=1, batch_size=96))
    with pytest.raises(UnknownMethodError):
        TrainingConfig(loss="nope")
    with pytest.raises(InvalidArgumentError):
        TrainingConfig(epochs=0)


def test_a_nan_loss_stops_training_naming_the_epoch_and_the_checkpoint_kept(tmp_path):
    x, y = _data()
    checkpoint = tmp_path / "checkpoint.pt"
    config = TrainingConfig(epochs=3, batch_size=32)
    from lipkit.training import TrainingDivergedError

    def evaluate(model):  # after epoch 1 every weight becomes NaN
        if len(evaluate.calls) == 0:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.fill_(float("nan"))
        evaluate.calls.append(1)
        return {}

    evaluate.calls = []
    with pytest.raises(TrainingDivergedError, match=r"epoch 2: the margin-ce loss \(nan\)") as e:
        train_certified(_model(), x, y, config, checkpoint=checkpoint, evaluate=evaluate)
    assert f"{checkpoint} (epoch 1)" in str(e.value)
