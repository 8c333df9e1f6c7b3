"""lipkit.training: a killed run resumes bit for bit; divergence stops it; checkpoints are
tied to their run; one progress event per step."""

import math

import pytest
import torch

from lipkit.errors import CheckpointError
from lipkit.training import (
    Checkpoint,
    ProgressEvent,
    TrainingDivergedError,
    check_finite,
    train,
)


class _KilledError(Exception):
    pass


def _run(path, steps=6, kill_at=None, config=None, resume=True, poison_at=None):
    """A noisy regression trained by SGD with momentum: draws from its own generator AND
    from torch's global random state, so both must be restored for a bit-exact resume."""
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(2)
    torch.manual_seed(3)
    history = []
    events = []

    def step(index):
        x = torch.randn(16, 3, generator=generator)
        noise = torch.randn(16, 1)  # global random state
        loss = (model(x) - x.sum(1, keepdim=True) - 0.1 * noise).square().mean()
        if index == poison_at:
            loss = loss * math.nan
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        return {"losses": {"loss": loss.item()}}

    def progress(event):
        events.append(event)
        if event.step == kill_at:
            raise _KilledError

    def state():
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "history": list(history)}

    def restore(saved):
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history[:] = saved["history"]

    checkpoint = Checkpoint(path, config or {"lr": 0.05}) if path is not None else None
    run = train(step, steps, state=state, restore=restore, generators={"data": generator},
                checkpoint=checkpoint, checkpoint_every=2, resume=resume, progress=progress,
                evaluate=lambda index: {"weight": model.weight.sum().item()},
                evaluate_every=3)
    return model, history, events, run


def test_a_killed_run_resumes_bit_for_bit(tmp_path):
    straight, history, _, run = _run(None)
    assert run.resumed_from is None and run.steps_done == 6
    with pytest.raises(_KilledError):  # killed after step 5: the checkpoint of step 4 is kept
        _run(tmp_path / "c.pt", kill_at=5)
    resumed, resumed_history, resumed_events, run = _run(tmp_path / "c.pt")
    assert run.resumed_from == 4 and run.last_checkpoint == (tmp_path / "c.pt", 6)
    assert [e.step for e in resumed_events] == [5, 6]
    assert resumed_history == history  # every loss equal, not close
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_progress_events_carry_the_losses_and_the_evaluations():
    _, history, events, _ = _run(None)
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(e, ProgressEvent) and e.total == 6 for e in events)
    assert [e.figures["losses"]["loss"] for e in events] == history
    assert [e.step for e in events if "evaluation" in e.figures] == [3, 6]


def test_divergence_stops_the_run_and_names_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDivergedError) as error:
        _run(tmp_path / "c.pt", poison_at=5)
    message = str(error.value)
    assert "step 5" in message and "loss (nan) is not finite" in message
    assert f"{tmp_path / 'c.pt'} (step 4)" in message
    from lipkit.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "c.pt")["step"] == 4


def test_threshold_and_lists_of_losses_are_checked():
    assert check_finite(torch.tensor(2.5), "loss", 1) == 2.5
    with pytest.raises(TrainingDivergedError, match="exceeds the divergence threshold 10"):
        check_finite(-11.0, "loss", 3, threshold=10.0)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2: the critic loss \(inf\)"):
        train(lambda i: {"losses": {"critic loss": [1.0, math.inf if i == 2 else 0.0]}}, 3,
              unit="epoch")


def test_checkpoints_of_another_run_or_an_unasked_resume_are_refused(tmp_path):
    _run(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="differs in lr"):
        _run(tmp_path / "c.pt", config={"lr": 0.1})
    with pytest.raises(CheckpointError, match="exists: resume it"):
        _run(tmp_path / "c.pt", resume=False)
