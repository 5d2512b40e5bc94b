"""Step rules and learning-rate schedules: the registry every list of rules is read from.

A rule is one class (its name, parameters with defaults, named state slots, and its update in
NumPy: ``first_order.py`` for the rules that step from the current gradient, ``curvature.py``
for the line-search, secant, quasi-Newton and Newton rules). ``RULES`` maps every name that
``gs.fit`` takes to its class; tests, the CLI, the plots and the docs iterate over it.

Adding a first-order rule: its class in first_order.py (with ``code`` = the next number, and
``step_scale``, the step per unit gradient that scales its proximal L1 step) and ``RULES``
below, ``step_<name>`` in cpp/include/gradstep/rules.hpp and ``_step_<name>`` in
_backends/numba_rules.py. Adding a curvature rule: its class in curvature.py and ``RULES``
(``supports_l1`` when its ``iterate`` takes ``l1`` and ``penalized``).
"""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np

from .base import HYPER_A, HYPER_B, HYPER_EPS, HYPER_LR, HYPER_SCHED, N_HYPER, StepRule
from .curvature import BB, LBFGS, Armijo, Newton
from .first_order import SGD, AdaDelta, AdaGrad, Adam, Momentum, Normalized, RMSProp
from .schedules import (
    SCHEDULE_PARAMS,
    SCHEDULES,
    Constant,
    Cosine,
    Exponential,
    InversePower,
    InverseTime,
    Schedule,
    make_schedule,
    schedule_value,
)

__all__ = [
    "BB", "DEFAULT_LR", "HYPER_A", "HYPER_B", "HYPER_EPS", "HYPER_LR", "HYPER_SCHED", "LBFGS",
    "N_HYPER", "RULES", "SCHEDULES", "SCHEDULE_PARAMS", "SGD", "AdaDelta", "AdaGrad", "Adam",
    "Armijo", "Constant", "Cosine", "Exponential", "InversePower", "InverseTime", "Momentum",
    "Newton", "Normalized", "RMSProp", "Schedule", "StepRule", "compiled_codes", "default_lr",
    "encode_runs", "make_rule", "make_schedule", "schedule_value",
]

RULES: dict[str, type[StepRule]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Momentum,  # Momentum(nesterov=True)
    "normalized": Normalized,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "adadelta": AdaDelta,
    "adam": Adam,
    "armijo": Armijo,
    "bb": BB,
    "lbfgs": LBFGS,
    "newton": Newton,
}

# The learning rate a rule gets when the caller gives none: one table for gs.fit, GDClassifier
# and the CLI. "auto" is 1/L (L the Lipschitz constant of the gradient): the rate for which
# vanilla steps have the largest guaranteed decrease; the momentum rules use it with mu = 0.9.
# Every other rule keeps its class default (the adaptive rules' literature values; the
# curvature rules need no rate: theirs is only the first trial step).
DEFAULT_LR: dict[str, str | float | None] = {"sgd": "auto", "momentum": "auto",
                                                   "nesterov": "auto"}


def default_lr(name: str) -> str | float | None:
    """The lr a rule named ``name`` runs with when none is given ("auto", or None for the
    class default)."""
    return DEFAULT_LR.get(name)


def _instance(name: str) -> StepRule:
    return RULES[name](nesterov=True) if name == "nesterov" else RULES[name]()  # type: ignore[call-arg]


def compiled_codes() -> dict[str, int]:
    """{name: code} of the rules the compiled drivers implement (the Python side of the
    contract with ``_core.rule_codes()`` and ``_backends.numba_rules.RULE_CODES``)."""
    codes = {}
    for name in RULES:
        rule = _instance(name)
        if rule.compiled:
            codes[name] = rule.code
    return codes


def make_rule(rule: object, lr: float | None, schedule: Schedule,
              rule_params: dict) -> StepRule:
    """A rule object from a name or an object; a non-None lr replaces the rule's default."""
    if isinstance(rule, StepRule):
        if rule_params:
            raise ValueError(
                f"rule parameters {sorted(rule_params)} given with a rule object; "
                "set them on the object instead"
            )
        return rule if lr is None else replace(rule, lr=lr)
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(
            f"unknown rule {rule!r}; valid names: {', '.join(RULES)} "
            "(or a rule object such as gradstep.Adam(lr=0.01))"
        )
    cls = RULES[rule]
    allowed = {f.name for f in fields(cls)} - {"lr", "schedule"} - set(cls.fixed_params)
    unknown = sorted(set(rule_params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for rule {rule!r}; "
            f"it takes {sorted(allowed) or 'no parameters'}"
        )
    kwargs = dict(rule_params, schedule=schedule)
    if lr is not None:
        kwargs["lr"] = lr
    if rule == "nesterov":
        kwargs["nesterov"] = True
    made: StepRule = cls(**kwargs)
    return made


def encode_runs(rules: list[StepRule]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rule codes (K,), schedule codes (K,), hyper table (K, N_HYPER)) for the compiled
    drivers; rules without a compiled version get code -1 (the drivers never see them)."""
    k = len(rules)
    rule_code = np.empty(k, dtype=np.int64)
    sched_code = np.empty(k, dtype=np.int64)
    hyper = np.zeros((k, N_HYPER), dtype=np.float64)
    for i, r in enumerate(rules):
        rule_code[i] = r.code
        sched_code[i] = r.schedule.code
        a, b, eps = r.params()
        hyper[i] = (float(r.lr or 0.0), r.schedule.param(), a, b, eps)
    return rule_code, sched_code, hyper
