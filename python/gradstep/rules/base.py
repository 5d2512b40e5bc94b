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
    # Rules that fit an L1 term (gs.fit's l1_ratio > 0): first-order rules by a proximal step
    # after each update (``step_scale``), curvature rules by an ``iterate`` that takes l1.
    supports_l1: ClassVar[bool] = False

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

    def step_scale(self, g: np.ndarray, slots: np.ndarray, lr_t: float, t: int) -> Any:
        """First-order rules with an L1 term: the step the next ``update`` takes per unit of
        the direction it steps along (a float, or (D,) per coordinate for the adaptive rules),
        called with the same arguments just BEFORE that update (slots not yet advanced; it does
        not change them). The driver then soft-thresholds the coefficients by step_scale * l1:
        the proximal step that matches the update's metric, so the L1 term is neither over-
        nor under-applied where a coordinate's effective rate differs from lr_t."""
        raise NotImplementedError(f"rule {self.name!r} has no proximal (L1) step")

    def iterate(self, p: np.ndarray, loss: float, g: np.ndarray) -> Any:
        """Curvature rules: the generator the Python driver runs (see rules.curvature). Rules
        with ``supports_l1`` also take the keywords ``l1`` (float > 0) and ``penalized``
        (bool (D,)): loss and g (and every answer to a Grad request) are then the smooth
        part's, and the rule minimizes loss + l1 * ||p[penalized]||_1."""
        raise NotImplementedError(f"rule {self.name!r} is a first-order rule")
