"""Step rules and learning-rate schedules: the one place their defaults live.

Each rule and schedule is a small frozen dataclass. The backends never see these objects:
``encode_runs`` turns a list of rules into flat integer codes and a float parameter table that
the NumPy, Numba and C++ fit loops all read the same way (see ``_backends/reference.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, Union

import numpy as np

# --------------------------------------------------------------------------------------------
# Schedules: lr_t for the update counter t = 1, 2, ...; every schedule gives the base lr at t = 1.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    """lr_t = lr."""

    code: ClassVar[int] = 0
    name: ClassVar[str] = "constant"

    def param(self) -> float:
        return 0.0


@dataclass(frozen=True)
class InverseTime:
    """lr_t = lr / (1 + decay (t - 1))."""

    decay: float = 0.01
    code: ClassVar[int] = 1
    name: ClassVar[str] = "inverse_time"

    def __post_init__(self) -> None:
        _check_finite_nonneg("decay", self.decay)

    def param(self) -> float:
        return float(self.decay)


@dataclass(frozen=True)
class InversePower:
    """lr_t = lr / t^power."""

    power: float = 0.5
    code: ClassVar[int] = 2
    name: ClassVar[str] = "inverse_power"

    def __post_init__(self) -> None:
        _check_finite_nonneg("power", self.power)

    def param(self) -> float:
        return float(self.power)


@dataclass(frozen=True)
class Exponential:
    """lr_t = lr * gamma^(t - 1)."""

    gamma: float = 0.99
    code: ClassVar[int] = 3
    name: ClassVar[str] = "exponential"

    def __post_init__(self) -> None:
        if not (isinstance(self.gamma, (int, float)) and 0.0 < self.gamma <= 1.0):
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")

    def param(self) -> float:
        return float(self.gamma)


@dataclass(frozen=True)
class Cosine:
    """lr_t = lr * (1 + cos(pi (t - 1) / T)) / 2, T = the run's total number of updates."""

    code: ClassVar[int] = 4
    name: ClassVar[str] = "cosine"

    def param(self) -> float:
        return 0.0


Schedule = Union[Constant, InverseTime, InversePower, Exponential, Cosine]
SCHEDULES: dict[str, type] = {
    cls.name: cls for cls in (Constant, InverseTime, InversePower, Exponential, Cosine)
}
SCHEDULE_PARAMS = {"decay": "inverse_time", "power": "inverse_power", "gamma": "exponential"}


def schedule_value(code: int, lr: float, param: float, t: int, total_updates: int) -> float:
    """The schedule's learning rate at update t (scalar form, the specification)."""
    if code == 0:
        return lr
    if code == 1:
        return lr / (1.0 + param * (t - 1))
    if code == 2:
        return lr / t**param
    if code == 3:
        return lr * param ** (t - 1)
    if code == 4:
        progress = min(t - 1, total_updates) / max(total_updates, 1)
        return lr * (1.0 + math.cos(math.pi * progress)) / 2.0
    raise ValueError(f"unknown schedule code {code}")


# --------------------------------------------------------------------------------------------
# Step rules
# --------------------------------------------------------------------------------------------

# Column layout of the per-run parameter table handed to every backend.
HYPER_LR, HYPER_SCHED, HYPER_A, HYPER_B, HYPER_EPS = range(5)
N_HYPER = 5

# Integer codes shared by all backends.
RULE_CODES = {
    "sgd": 0,
    "momentum": 1,
    "nesterov": 2,
    "normalized": 3,
    "adagrad": 4,
    "rmsprop": 5,
    "adadelta": 6,
    "adam": 7,
}


def _check_finite_nonneg(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_lr(lr: object) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(
            f"lr must be a positive finite number (or 'auto'), got {lr!r}; "
            "try lr=0.1 or lr='auto'"
        )


def _check_beta(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class StepRule:
    """Base class: a learning rate, a schedule and the rule's own parameters."""

    lr: float = 0.1
    schedule: Schedule = field(default_factory=Constant)
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        if not isinstance(self.schedule, tuple(SCHEDULES.values())):
            raise ValueError(
                f"schedule must be one of {sorted(SCHEDULES)} or a schedule object, "
                f"got {self.schedule!r}"
            )

    @property
    def code(self) -> int:
        return RULE_CODES[self.name]

    def params(self) -> tuple[float, float, float]:
        """(a, b, eps) in the backends' table; unused entries are 0."""
        return (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SGD(StepRule):
    """Vanilla gradient descent: p -= lr_t g."""

    lr: float = 0.1
    name: ClassVar[str] = "sgd"


@dataclass(frozen=True)
class Momentum(StepRule):
    """Heavy ball: v = mu v + g; p -= lr_t v.  Nesterov: p -= lr_t (g + mu v)."""

    lr: float = 0.01
    mu: float = 0.9
    nesterov: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return "nesterov" if self.nesterov else "momentum"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_beta("mu", self.mu)

    def params(self) -> tuple[float, float, float]:
        return (float(self.mu), 0.0, 0.0)


@dataclass(frozen=True)
class Normalized(StepRule):
    """p -= lr_t g / max(||g||, eps): every step has length lr_t; g = 0 gives no step."""

    lr: float = 0.1
    eps: float = 1e-12
    name: ClassVar[str] = "normalized"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_finite_nonneg("eps", self.eps)

    def params(self) -> tuple[float, float, float]:
        return (0.0, 0.0, float(self.eps))


@dataclass(frozen=True)
class AdaGrad(StepRule):
    """G += g^2; p -= lr_t g / (sqrt(G) + eps)."""

    lr: float = 0.01
    eps: float = 1e-10
    name: ClassVar[str] = "adagrad"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_finite_nonneg("eps", self.eps)

    def params(self) -> tuple[float, float, float]:
        return (0.0, 0.0, float(self.eps))


@dataclass(frozen=True)
class RMSProp(StepRule):
    """v = rho v + (1 - rho) g^2; p -= lr_t g / (sqrt(v) + eps)."""

    lr: float = 0.01
    rho: float = 0.99
    eps: float = 1e-8
    name: ClassVar[str] = "rmsprop"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_beta("rho", self.rho)
        _check_finite_nonneg("eps", self.eps)

    def params(self) -> tuple[float, float, float]:
        return (float(self.rho), 0.0, float(self.eps))


@dataclass(frozen=True)
class AdaDelta(StepRule):
    """E = rho E + (1-rho) g^2; d = sqrt(D+eps)/sqrt(E+eps) g; D = rho D + (1-rho) d^2; p -= lr_t d."""

    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    name: ClassVar[str] = "adadelta"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_beta("rho", self.rho)
        _check_finite_nonneg("eps", self.eps)

    def params(self) -> tuple[float, float, float]:
        return (float(self.rho), 0.0, float(self.eps))


@dataclass(frozen=True)
class Adam(StepRule):
    """Bias-corrected moments: p -= lr_t m_hat / (sqrt(v_hat) + eps)."""

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name: ClassVar[str] = "adam"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_beta("beta1", self.beta1)
        _check_beta("beta2", self.beta2)
        _check_finite_nonneg("eps", self.eps)

    def params(self) -> tuple[float, float, float]:
        return (float(self.beta1), float(self.beta2), float(self.eps))


RULES: dict[str, type] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Momentum,
    "normalized": Normalized,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "adadelta": AdaDelta,
    "adam": Adam,
}


# GDClassifier's lr=None for rules whose general default does not suit a full-batch fit:
# Adam's 0.001 (PyTorch's) is tuned for thousands of mini-batch steps, and each Adam step moves a
# weight by about lr, so 1,000 full-batch iterations at 0.001 cannot travel far enough.
ESTIMATOR_LR = {"adam": 0.03}


def make_schedule(schedule: object, schedule_params: dict) -> Schedule:
    """A schedule object from a name (with its parameters) or an object."""
    if isinstance(schedule, tuple(SCHEDULES.values())):
        if schedule_params:
            raise ValueError(
                f"{sorted(schedule_params)} given with a schedule object; set them on the object"
            )
        return schedule  # type: ignore[return-value]
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {schedule!r}; valid names: {', '.join(SCHEDULES)} "
            "(or a schedule object such as gradstep.InverseTime(decay=0.1))"
        )
    cls = SCHEDULES[schedule]
    wrong = [k for k in schedule_params if SCHEDULE_PARAMS[k] != schedule]
    if wrong:
        raise ValueError(
            f"{wrong[0]!r} is a parameter of the {SCHEDULE_PARAMS[wrong[0]]!r} schedule, "
            f"not of {schedule!r}"
        )
    return cls(**schedule_params)


def make_rule(rule: object, lr: object, schedule: Schedule, rule_params: dict) -> StepRule:
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
    allowed = {f.name for f in fields(cls)} - {"lr", "schedule", "nesterov"}
    own = {k: v for k, v in rule_params.items() if k in allowed}
    unknown = sorted(set(rule_params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for rule {rule!r}; "
            f"it takes {sorted(allowed) or 'no parameters'}"
        )
    kwargs = dict(own, schedule=schedule)
    if lr is not None:
        kwargs["lr"] = lr
    if rule == "nesterov":
        kwargs["nesterov"] = True
    return cls(**kwargs)


def encode_runs(rules: list[StepRule]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rule codes (K,), schedule codes (K,), hyper table (K, N_HYPER)) for the backends."""
    k = len(rules)
    rule_code = np.empty(k, dtype=np.int64)
    sched_code = np.empty(k, dtype=np.int64)
    hyper = np.zeros((k, N_HYPER), dtype=np.float64)
    for i, r in enumerate(rules):
        rule_code[i] = r.code
        sched_code[i] = r.schedule.code
        a, b, eps = r.params()
        hyper[i] = (float(r.lr), r.schedule.param(), a, b, eps)
    return rule_code, sched_code, hyper
