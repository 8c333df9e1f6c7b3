"""Use Lipschitz bounds: robustness certificates, certified training, generalization.

- :func:`certified_radius`: the radius within which a prediction cannot change, in its
  global, per-logit and pairwise forms (l2, l-infinity), from :class:`LogitConstants`;
- :func:`logit_constants`: sound constants of any classifier, from the guarantee of a lipkit
  model (``lipkit.nn.lipschitz_bound``) or the best proven upper bound of
  ``lipkit.estimate`` (ONNX and other models); the record says which;
- :func:`certified_accuracy`: verified robust accuracy at several eps, PGD accuracy beside
  it, and the count of certificates PGD broke (must be 0);
- losses (:func:`margin_cross_entropy`, :func:`multiclass_hinge`, :func:`hkr`,
  :func:`gloro_cross_entropy`), presets (:func:`lipschitz_mlp`, :func:`lipschitz_convnet`,
  :func:`comparison_convnet`, :func:`liresnet`)
  and :func:`train_certified`;
- :func:`cifar10_protocol`: Prach et al.'s CIFAR-10 comparison (a time budget, VRA at
  36/255, 72/255, 108/255);
- :func:`spectral_complexity`: Bartlett, Foster & Telgarsky's spectral complexity.
"""

from lipkit.certify.accuracy import Certification, certified_accuracy, plot_certified_accuracy
from lipkit.certify.attack import broken_certificates, empirical_robust_accuracy, pgd_attack
from lipkit.certify.complexity import spectral_complexity
from lipkit.certify.constants import logit_constants
from lipkit.certify.losses import (
    LOSSES,
    gloro_cross_entropy,
    hkr,
    margin_cross_entropy,
    multiclass_hinge,
    multiclass_kantorovich_rubinstein,
)
from lipkit.certify.presets import (
    LAST_LAYERS,
    UnitRows,
    comparison_convnet,
    lipschitz_convnet,
    lipschitz_mlp,
    liresnet,
)
from lipkit.certify.protocol import cifar10_protocol
from lipkit.certify.radius import FORMS, LogitConstants, certified_radius
from lipkit.certify.train import TrainingConfig, train_certified

__all__ = [
    "FORMS",
    "LAST_LAYERS",
    "LOSSES",
    "Certification",
    "LogitConstants",
    "TrainingConfig",
    "UnitRows",
    "broken_certificates",
    "certified_accuracy",
    "certified_radius",
    "cifar10_protocol",
    "comparison_convnet",
    "empirical_robust_accuracy",
    "gloro_cross_entropy",
    "hkr",
    "lipschitz_convnet",
    "lipschitz_mlp",
    "liresnet",
    "logit_constants",
    "margin_cross_entropy",
    "multiclass_hinge",
    "multiclass_kantorovich_rubinstein",
    "pgd_attack",
    "plot_certified_accuracy",
    "spectral_complexity",
    "train_certified",
]
