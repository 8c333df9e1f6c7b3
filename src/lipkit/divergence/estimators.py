"""The estimators by name: what each maximizes, what it reports, and which data it takes.

===============  =====================================================  =========  =======
name             objective (maximized) / estimate                        data       units
===============  =====================================================  =========  =======
``w1``           KR dual ``E_p f - E_q f``; estimate divided by lambda   p, q       distance
``w-alpha``      ``W^alpha`` dual (penalty ``unconstrained-alpha``)      p, q       distance
``dv``           Donsker-Varadhan ``E_p f - log E_q e^f``                p, q / MI  nats
``mine``         DV with MINE's moving-average corrected gradient        p, q / MI  nats
``nwj``          NWJ ``E_p f - e^{-1} E_q e^f``                           p, q / MI  nats
``d-lambda``     DV over ``||f||_L <= lambda``: Moreau-Yosida KL         p, q / MI  nats
``infonce``      InfoNCE (at most ``log(batch)``)                        MI         nats
``wpc``          InfoNCE with a Lipschitz critic (Ozair et al.'s WPC)    MI         nats
``wdm``          Wasserstein dependency ``W1(p(x,y), p(x)p(y))``         MI         distance
===============  =====================================================  =========  =======

``w1``, ``d-lambda``, ``wpc`` and ``wdm`` need a Lipschitz method other than ``none``;
``w-alpha`` needs ``unconstrained-alpha``. For MI, "p" is the batch's pairs (the diagonal of
the score matrix) and "q" the mismatched pairs (its off-diagonal entries).
"""

from __future__ import annotations

from dataclasses import dataclass

from lipkit.errors import InvalidArgumentError, UnknownMethodError


@dataclass(frozen=True)
class Estimator:
    """One estimator: its name, the data it applies to and the constraint it needs."""

    name: str
    description: str
    divergence: bool  # between two distributions p, q
    mutual_information: bool  # on pairs (x, y)
    units: str = "nats"
    needs_constraint: bool = False

    def check(self, method_name: str, mutual_information: bool) -> None:
        """Raise InvalidArgumentError when the estimator cannot run on this data / method."""
        if mutual_information and not self.mutual_information:
            raise InvalidArgumentError(f"estimator '{self.name}' compares two distributions; "
                                       f"for mutual information choose from: "
                                       f"{', '.join(MUTUAL_INFORMATION)}")
        if not mutual_information and not self.divergence:
            raise InvalidArgumentError(f"estimator '{self.name}' needs pairs (x, y): it "
                                       f"estimates mutual information only")
        if self.name == "w-alpha" and method_name != "unconstrained-alpha":
            raise InvalidArgumentError("estimator 'w-alpha' needs the Lipschitz method "
                                       f"'unconstrained-alpha', got '{method_name}'")
        if self.needs_constraint and method_name in ("none", "unconstrained-alpha"):
            raise InvalidArgumentError(f"estimator '{self.name}' needs a critic with a target "
                                       f"Lipschitz constant: choose a Lipschitz method other "
                                       f"than '{method_name}'")


ESTIMATORS = {
    e.name: e for e in (
        Estimator("w1", "Kantorovich-Rubinstein dual", True, False, "distance", True),
        Estimator("w-alpha", "unconstrained W^alpha dual", True, False, "distance"),
        Estimator("dv", "Donsker-Varadhan", True, True),
        Estimator("mine", "MINE (DV, bias-corrected gradient)", True, True),
        Estimator("nwj", "Nguyen-Wainwright-Jordan", True, True),
        Estimator("d-lambda", "Moreau-Yosida KL (DV, Lipschitz critic)", True, True,
                  needs_constraint=True),
        Estimator("infonce", "InfoNCE", False, True),
        Estimator("wpc", "Wasserstein predictive coding (InfoNCE, Lipschitz critic)", False,
                  True, needs_constraint=True),
        Estimator("wdm", "Wasserstein dependency measure (KR dual on pairs)", False, True,
                  "distance", True),
    )
}
MUTUAL_INFORMATION = tuple(name for name, e in ESTIMATORS.items() if e.mutual_information)
DIVERGENCES = tuple(name for name, e in ESTIMATORS.items() if e.divergence)


def get_estimator(name: str) -> Estimator:
    """The :class:`Estimator` called ``name``; an unknown name lists the choices."""
    if name not in ESTIMATORS:
        raise UnknownMethodError("estimator", name, ESTIMATORS)
    return ESTIMATORS[name]
