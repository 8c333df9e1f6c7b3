"""Float64 rounding made explicit: forward error bounds hold against exact rational
arithmetic, lower bounds never exceed the exact ratio of their witness pair, spectral norms
are bounded from above, and every time limit is honoured."""

import math
import time
from fractions import Fraction

import highspy
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.estimate import estimate, load_network
from lipkit.estimate.reference import ModelReference
from lipkit.estimate.rounding import forward_error, spectral_norm_upper
from lipkit.estimate.solvers import SolverError, feasible, mip_status_usable, new_highs


def _exact_forward(model: nn.Sequential, x: list[float]) -> list[Fraction]:
    """The model in exact rational arithmetic (Linear, ReLU, LeakyReLU only)."""
    value = [Fraction(v) for v in x]
    for layer in model:
        if isinstance(layer, nn.Linear):
            weight = layer.weight.detach().double().tolist()
            bias = layer.bias.detach().double().tolist()
            value = [sum((Fraction(w) * v for w, v in zip(row, value, strict=True)),
                         Fraction(b)) for row, b in zip(weight, bias, strict=True)]
        elif isinstance(layer, nn.LeakyReLU):
            slope = Fraction(layer.negative_slope)
            value = [v if v > 0 else slope * v for v in value]
        else:
            value = [max(v, Fraction(0)) for v in value]
    return value


def _model(seed: int, scale: float, leaky: bool) -> nn.Sequential:
    torch.manual_seed(seed)
    activation = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 6), activation, nn.Linear(6, 5), activation,
                          nn.Linear(5, 2)).double()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(scale)
                layer.bias.normal_()
    return model


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.sampled_from([1e-6, 1.0, 1e4]), st.booleans())
def test_forward_error_bounds_the_exact_error(seed, scale, leaky):
    model = _model(seed, scale, leaky)
    network = load_network(model)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y, error, total = forward_error(network, x)
    for point, computed, bound, norm_bound in zip(x, y, error, total, strict=True):
        exact = _exact_forward(model, point.tolist())
        squared = Fraction(0)
        for value, approx, slack in zip(exact, computed.tolist(), bound.tolist(), strict=True):
            assert abs(Fraction(approx) - value) <= Fraction(slack), (approx, float(value))
            squared += (Fraction(approx) - value) ** 2
        assert squared <= Fraction(float(norm_bound)) ** 2, (float(squared), norm_bound)


@pytest.mark.parametrize("method", ["lower-jacobian", "lower-adversarial"])
@pytest.mark.parametrize("norm", ["inf", "1"])
def test_lower_bounds_never_exceed_the_exact_ratio_of_their_pair(method, norm):
    """Tiny weights and ordinary biases: the float64 ratio of a close pair is mostly
    rounding noise; the reported value must still be at most the exact ratio."""
    for seed in range(3):
        model = _model(seed, 1e-6, leaky=seed % 2 == 1)
        report = estimate(model, methods=[method, "naive"], norm=norm)
        lower = next(b for b in report.bounds if b.method == method)
        naive = next(b for b in report.bounds if b.method == "naive")
        assert lower.value <= naive.value, (lower.value, naive.value)
        if lower.value == 0:  # nothing certifiable above the rounding: a true lower bound
            continue
        x1 = lower.details["witness"]["x1"].tolist()
        x2 = lower.details["witness"]["x2"].tolist()
        y1, y2 = _exact_forward(model, x1), _exact_forward(model, x2)
        if norm == "inf":
            numerator = max(abs(a - b) for a, b in zip(y1, y2, strict=True))
            denominator = max(abs(Fraction(a) - Fraction(b)) for a, b in zip(x1, x2,
                                                                           strict=True))
        else:
            numerator = sum(abs(a - b) for a, b in zip(y1, y2, strict=True))
            denominator = sum(abs(Fraction(a) - Fraction(b)) for a, b in zip(x1, x2,
                                                                           strict=True))
        assert Fraction(lower.value) <= numerator / denominator, (seed, lower.value)


def test_spectral_norm_upper_is_an_upper_bound():
    generator = torch.Generator().manual_seed(0)
    for shape in [(3, 7), (40, 40), (200, 30), (1, 5)]:
        matrix = torch.randn(*shape, generator=generator, dtype=torch.float64)
        exact = float(torch.linalg.svdvals(matrix)[0])
        bound = spectral_norm_upper(matrix)
        assert exact <= bound <= exact * (1 + 1e-9), (shape, exact, bound)
    # exactly known: a permuted diagonal
    matrix = torch.zeros(4, 4, dtype=torch.float64)
    matrix[0, 2], matrix[1, 0], matrix[2, 3], matrix[3, 1] = 3.0, -5.0, 0.5, 2.0
    assert 5.0 <= spectral_norm_upper(matrix) <= 5.0 * (1 + 1e-12)


def test_a_witness_not_attained_on_the_users_model_is_failed():
    """A network that does not match the model it came from (as a dropped parameter would
    make it): the witness's ratio is not attained on the model, so the bound is refused."""
    def model(slope):
        net = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1)).double()
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor([[slope, 0.5]]))
            net[0].bias.fill_(1.0)
            net[2].weight.fill_(1.0)
            net[2].bias.zero_()
        return net

    report = estimate(model(3.0), methods=["lower-jacobian"], norm="2")
    bound = report.bounds[0]
    assert bound.usable and bound.value > 3.0
    x1, x2 = bound.details["witness"]["x1"], bound.details["witness"]["x2"]
    reason = ModelReference(model(1.0), report.network).check(x1, x2, bound.value, "2")
    assert reason is not None and "does not match" in reason
    assert ModelReference(model(3.0), report.network).check(x1, x2, bound.value, "2") is None


def test_a_lower_bound_is_what_the_users_model_attains_not_the_import():
    """Softplus(threshold=14): torch computes x where x > 14, the imported network the exact
    softplus, 8e-7 above. A pair straddling the threshold does a little less on the module
    (within the 1e-6 agreement asked of an import): the value becomes the module's ratio,
    deflated as the network's was (fuzz seed 259 found this with lower-gradient)."""
    model = nn.Sequential(nn.Linear(1, 1), nn.Softplus(threshold=14.0), nn.Linear(1, 1))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    network = load_network(model, (1,))
    x1, x2 = torch.tensor([13.0], dtype=torch.float64), torch.tensor([15.0], dtype=torch.float64)
    imported = float((network.forward(x2[None]) - network.forward(x1[None])).abs().sum()) / 2
    softplus13 = math.log1p(math.exp(13.0))
    on_model = (15.0 - softplus13) / 2  # torch: 15 is above the threshold, 13 is not
    assert on_model < imported < on_model * (1 + 1e-6)  # the case the agreement lets through
    claimed = imported * (1 - 1e-15)  # as a method reports it, deflated by its rounding
    reason, value = ModelReference(model, network).attained(x1, x2, claimed, "inf")
    assert reason is None
    assert value <= on_model * (1 - 1e-12) and value >= on_model * (1 - 1e-9)
    # a pair away from the threshold keeps its value
    y1, y2 = torch.tensor([1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    plain = float((network.forward(y2[None]) - network.forward(y1[None])).abs().sum()) * 0.999
    assert ModelReference(model, network).attained(y1, y2, plain, "inf") == (None, plain)


def test_solver_statuses_are_read_strictly():
    highs = new_highs()
    highs.addVars(1, np.array([0.0]), np.array([1.0]))
    highs.addRows(1, np.array([2.0]), np.array([np.inf]), 1, np.array([0], np.int32),
                  np.array([0], np.int32), np.array([1.0]))  # x >= 2 with x <= 1
    highs.run()
    assert feasible(highs, "test LP") is False
    unbounded = new_highs()
    unbounded.addVars(1, np.array([0.0]), np.array([np.inf]))
    unbounded.changeColCost(0, -1.0)
    unbounded.run()
    with pytest.raises(SolverError, match="status"):
        feasible(unbounded, "test LP")
    with pytest.raises(SolverError, match="status"):
        mip_status_usable(unbounded, "test MIP")


def test_an_unknown_mip_status_makes_the_bound_failed(monkeypatch):
    model = _model(0, 1.0, leaky=False)
    monkeypatch.setattr(highspy.Highs, "getModelStatus",
                        lambda self: highspy.HighsModelStatus.kUnknown)
    report = estimate(model, methods=["exact-mip"], norm="inf", center=[0.0, 0.0, 0.0],
                      radius=0.1)
    assert all(not b.usable and b.status.startswith("failed") for b in report.bounds)


def test_time_limits_are_honoured():
    torch.manual_seed(0)
    deep = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    started = time.perf_counter()
    report = estimate(deep, methods=["exact-bab"], norm="inf", time_limit=1.0)
    assert time.perf_counter() - started < 8.0
    assert "time limit" in report.bounds[0].status
    wide = nn.Sequential(nn.Linear(1200, 1200), nn.ReLU(), nn.Linear(1200, 1200))
    started = time.perf_counter()
    report = estimate(wide, methods=["lower-jacobian"], norm="2", time_limit=0.5)
    assert time.perf_counter() - started < 8.0
    assert report.bounds[0].usable and math.isfinite(report.bounds[0].value)


def test_highs_thread_counts_never_turn_an_lp_failure_into_a_pruned_region():
    """HiGHS sizes one thread scheduler per process: an instance asking for another count
    fails to run. A multi-threaded MIP first, then exact-bab's margin LPs: still exact."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 1))
    first = estimate(model, methods=["exact-mip"], norm="inf", threads=2)
    second = estimate(model, methods=["exact-bab"], norm="inf")
    values = [b.value for b in first.bounds + second.bounds if b.kind == "exact"]
    assert len(values) == 2 and math.isclose(*values, rel_tol=1e-6), (first.bounds,
                                                                       second.bounds)


def test_onnx_witnesses_are_checked_with_onnxruntime(tmp_path):
    """Lower bounds of an ONNX file keep their status when onnxruntime agrees with the
    imported network at the witness, and a file that disagrees is named."""
    import warnings

    def export(model, path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.float().eval(), (torch.randn(1, 3),), str(path),
                              dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        return path

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    path = export(model, tmp_path / "model.onnx")
    report = estimate(path, methods=["lower-jacobian", "naive"], norm="2")
    lower = next(b for b in report.bounds if b.method == "lower-jacobian")
    assert lower.usable and report.consistent
    with torch.no_grad():
        model[2].weight.mul_(3.0)
    other = export(model, tmp_path / "other.onnx")
    witness = lower.details["witness"]
    reason = ModelReference(other, report.network).check(witness["x1"], witness["x2"],
                                                         lower.value, "2")
    assert reason is not None and "onnxruntime" in reason
