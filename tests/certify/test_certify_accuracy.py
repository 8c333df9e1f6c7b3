"""Certified accuracy: VRA <= PGD accuracy <= clean accuracy, and PGD never breaks a sound
certificate (but does break a wrong one)."""

import math

import torch

from lipkit.certify import (
    LogitConstants,
    certified_accuracy,
    logit_constants,
    pgd_attack,
    plot_certified_accuracy,
)
from lipkit.certify.attack import broken_certificates
from lipkit.nn import lipschitz_bound


def test_sound_certificates_survive_pgd_and_bracket_robust_accuracy(trained, digits, tmp_path):
    eps = [0.0, 0.1, 0.3, 0.6]
    results = {}
    for form in ("global", "per-logit", "pairwise"):
        result = certified_accuracy(trained, digits.x_test, digits.y_test, eps, form=form,
                                    steps=10)
        assert result.broken == {"2": 0, "inf": 0}, form
        assert result.certified_accuracy[0] == result.clean_accuracy > 0.6
        for vra, pgd in zip(result.certified_accuracy, result.pgd_accuracy, strict=True):
            assert vra <= pgd + 1e-12 <= result.clean_accuracy + 1e-12
        assert result.certified_accuracy == sorted(result.certified_accuracy, reverse=True)
        assert result.constants.source == "lipkit.nn.lipschitz_bound"
        results[form] = result
    for first, second in zip(results["pairwise"].certified_accuracy,
                             results["global"].certified_accuracy, strict=True):
        assert first >= second
    plot_certified_accuracy(results, tmp_path / "vra.png")
    assert (tmp_path / "vra.png").read_bytes()[:4] == b"\x89PNG"


def test_an_unsound_constant_is_caught_by_pgd(trained, digits):
    """A constant 20x too small gives radii PGD can cross: the check is not vacuous."""
    true = logit_constants(trained)
    wrong = LogitConstants.from_whole(true.whole / 20, 10, "wrong on purpose")
    result = certified_accuracy(trained, digits.x_test[:120], digits.y_test[:120], [0.5],
                                constants=wrong, form="global", steps=20)
    assert result.broken["2"] > 0


def test_pgd_stays_in_its_ball_and_finds_the_linear_boundary():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    target = layer(x).argmax(1)
    for norm, p in (("2", 2), ("inf", math.inf)):
        radius = torch.full((10,), 0.3, dtype=torch.float64)
        adversarial = pgd_attack(layer, x, target, radius, norm, steps=10)
        assert bool(((adversarial - x).norm(dim=1, p=p) <= 0.3 + 1e-9).all())
    # a linear model: the exact l2 radius is crossable just beyond it, so PGD with twice the
    # radius flips every certified point
    constants = LogitConstants.from_last_linear(1.0, layer.weight, "linear")
    from lipkit.certify import certified_radius

    radius = certified_radius(layer(x).detach(), constants, "pairwise")
    assert broken_certificates(layer, x, radius, "2", steps=30) == 0
    assert broken_certificates(layer, x, radius * 1.05, "2", steps=30) == int((radius > 0).sum())


def test_constants_of_the_trained_model_are_its_guarantee(trained):
    constants = logit_constants(trained)
    assert abs(constants.whole - lipschitz_bound(trained)) < 1e-9
    assert constants.whole <= 1 + 1e-4
    # the rows of an orthonormal last layer are sqrt(2) apart
    off_diagonal = constants.pairwise[~torch.eye(10, dtype=torch.bool)]
    torch.testing.assert_close(off_diagonal, torch.full_like(off_diagonal, math.sqrt(2)),
                               atol=1e-3, rtol=0)


def test_convnet_certificates_survive_pgd():
    from lipkit.certify import lipschitz_convnet

    torch.manual_seed(0)
    model = lipschitz_convnet(1, 8, 4, "small", layer="orthogonal").eval()
    x = torch.rand(24, 1, 8, 8)
    with torch.no_grad():
        labels = model(x).argmax(1)
    result = certified_accuracy(model, x, labels, [0.0, 0.01], steps=10)
    assert result.clean_accuracy == 1.0 and result.broken == {"2": 0, "inf": 0}
    assert result.constants.whole <= 1 + 1e-4
    assert float(result.radius.min()) > 0
