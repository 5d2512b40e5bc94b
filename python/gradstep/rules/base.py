"""What every step rule is: a frozen dataclass with a name, parameters with defaults, named
state slots, and its update written once in NumPy (the specification the compiled versions of
the rule follow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ._checks import check_lr
from .schedules import Constant, Schedule

# Column layout of the per-run parameter table handed to the compiled drivers.
HYPER_LR, HYPER_SCHED, HYPER_A, HYPER_B, HYPER_EPS = range(5)
N_HYPER = 5


@dataclass(frozen=True)
class StepRule:
    """Base class of every step rule: a learning rate, a schedule and the rule's own parameters.

    Subclasses set ``name`` (the string ``gs.fit`` takes), ``code`` (the rule's number in the
    compiled drivers; -1 for rules that run on the Python driver only), ``slots`` (the names of
    their per-coordinate state vectors) and either ``update`` (first-order rules: one step from
    the gradient) or ``iterate`` (curvature rules: a generator that asks the driver for passes
    over the data, see ``gradstep.rules.curvature``).

    Parameters
    ----------
    lr : float
        The base learning rate (step size).
    schedule : Schedule, default Constant()
        How the rate changes with the update counter t.
    """

    lr: float = 0.1
    schedule: Schedule = field(default_factory=Constant)
    name: ClassVar[str] = ""
    code: ClassVar[int] = -1
    slots: ClassVar[tuple[str, ...]] = ()
    # Rules that need the whole data set per iteration (line searches, curvature): no
    # batch_size, and only the constant schedule.
    full_batch_only: ClassVar[bool] = False
    # Parameters that fit(**rule_params) may not set (derived from the rule's name).
    fixed_params: ClassVar[tuple[str, ...]] = ()
    # Rules whose lr may be None (they estimate their first step themselves).
    lr_optional: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.lr is not None or not self.lr_optional:
            check_lr(self.lr)
        if not isinstance(self.schedule, Constant):
            from .schedules import SCHEDULES

            raise ValueError(
                f"schedule must be one of {sorted(SCHEDULES)} or a schedule object, "
                f"got {self.schedule!r}"
            )

    @property
    def compiled(self) -> bool:
        """Whether the compiled (C++ and Numba) drivers implement this rule."""
        return self.code >= 0

    def params(self) -> tuple[float, float, float]:
        """(a, b, eps) in the compiled drivers' hyper table; unused entries are 0."""
        return (0.0, 0.0, 0.0)

    def update(self, p: np.ndarray, g: np.ndarray, slots: np.ndarray, lr_t: float,
               t: int) -> None:
        """One step of one run in place on p (D,) and slots (N_SLOTS, D), from the gradient g
        at the update counter t (already incremented: Adam's bias correction uses it)."""
        raise NotImplementedError(f"rule {self.name!r} has no single-gradient update")

    def iterate(self, p: np.ndarray, loss: float, g: np.ndarray) -> Any:
        """Curvature rules: the generator the Python driver runs (see rules.curvature)."""
        raise NotImplementedError(f"rule {self.name!r} is a first-order rule")
