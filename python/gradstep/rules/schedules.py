"""Learning-rate schedules: lr_t for the update counter t = 1, 2, ...; every schedule gives the
base lr at t = 1. Each schedule is a small frozen dataclass with a ``code`` shared with the
compiled drivers (cpp/include/gradstep/rules.hpp, _backends/numba.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Union

from ._checks import check_finite_nonneg


@dataclass(frozen=True)
class Constant:
    """lr_t = lr.

    Examples
    --------
    >>> Constant().value(0.1, 7, 100)
    0.1
    """

    code: ClassVar[int] = 0
    name: ClassVar[str] = "constant"

    def param(self) -> float:
        """The schedule's parameter as the compiled drivers read it (unused: 0)."""
        return 0.0

    def value(self, lr: float, t: int, total_updates: int) -> float:
        """The learning rate at update ``t``."""
        return schedule_value(self.code, lr, self.param(), t, total_updates)


@dataclass(frozen=True)
class InverseTime(Constant):
    """lr_t = lr / (1 + decay (t - 1)).

    Parameters
    ----------
    decay : float, default 0.01
        How fast the rate falls; >= 0.

    Examples
    --------
    >>> InverseTime(decay=0.5).value(1.0, 3, 100)
    0.5
    """

    decay: float = 0.01
    code: ClassVar[int] = 1
    name: ClassVar[str] = "inverse_time"

    def __post_init__(self) -> None:
        check_finite_nonneg("decay", self.decay)

    def param(self) -> float:
        return float(self.decay)


@dataclass(frozen=True)
class InversePower(Constant):
    """lr_t = lr / t^power.

    Parameters
    ----------
    power : float, default 0.5
        The exponent; >= 0 (0.5 is the classic 1/sqrt(t) decay).

    Examples
    --------
    >>> InversePower(power=0.5).value(1.0, 4, 100)
    0.5
    """

    power: float = 0.5
    code: ClassVar[int] = 2
    name: ClassVar[str] = "inverse_power"

    def __post_init__(self) -> None:
        check_finite_nonneg("power", self.power)

    def param(self) -> float:
        return float(self.power)


@dataclass(frozen=True)
class Exponential(Constant):
    """lr_t = lr * gamma^(t - 1).

    Parameters
    ----------
    gamma : float, default 0.99
        The factor per update, in (0, 1].

    Examples
    --------
    >>> Exponential(gamma=0.5).value(1.0, 3, 100)
    0.25
    """

    gamma: float = 0.99
    code: ClassVar[int] = 3
    name: ClassVar[str] = "exponential"

    def __post_init__(self) -> None:
        if not (isinstance(self.gamma, (int, float)) and 0.0 < self.gamma <= 1.0):
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")

    def param(self) -> float:
        return float(self.gamma)


@dataclass(frozen=True)
class Cosine(Constant):
    """lr_t = lr * (1 + cos(pi (t - 1) / T)) / 2, T = the run's total number of updates.

    Examples
    --------
    >>> Cosine().value(1.0, 51, 100)
    0.5
    """

    code: ClassVar[int] = 4
    name: ClassVar[str] = "cosine"


Schedule = Union[Constant, InverseTime, InversePower, Exponential, Cosine]
SCHEDULES: dict[str, type] = {
    cls.name: cls for cls in (Constant, InverseTime, InversePower, Exponential, Cosine)
}
# Keyword arguments of fit() that belong to a schedule, and the schedule they belong to.
SCHEDULE_PARAMS = {"decay": "inverse_time", "power": "inverse_power", "gamma": "exponential"}


def schedule_value(code: int, lr: float, param: float, t: int, total_updates: int) -> float:
    """The schedule's learning rate at update t (scalar form, the specification)."""
    if code == 0:
        return lr
    if code == 1:
        return lr / (1.0 + param * (t - 1))
    if code == 2:
        return float(lr / t**param)
    if code == 3:
        return float(lr * param ** (t - 1))
    if code == 4:
        progress = min(t - 1, total_updates) / max(total_updates, 1)
        return lr * (1.0 + math.cos(math.pi * progress)) / 2.0
    raise ValueError(f"unknown schedule code {code}")


def make_schedule(schedule: object, schedule_params: dict) -> Schedule:
    """A schedule object from a name (with its parameters) or an object."""
    if isinstance(schedule, Constant):
        if schedule_params:
            raise ValueError(
                f"{sorted(schedule_params)} given with a schedule object; set them on the object"
            )
        return schedule
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
    result: Schedule = cls(**schedule_params)
    return result
