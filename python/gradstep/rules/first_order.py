"""The first-order rules: one step from the current gradient, with a learning rate.

Each class holds the rule's parameters, their defaults and checks, and its update in NumPy
(the specification). The compiled versions are one function per rule, named after it:
``step_<name>`` in cpp/include/gradstep/rules.hpp and ``_step_<name>`` in
python/gradstep/_backends/numba_rules.py; the ``code`` here is their index in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._checks import check_finite_nonneg, check_fraction
from .base import StepRule


@dataclass(frozen=True)
class SGD(StepRule):
    """Vanilla gradient descent: p -= lr_t g.

    Parameters
    ----------
    lr : float, default 0.1
        The step size; ``gs.fit(..., lr="auto")`` gives 1/L.
    schedule : Schedule, default Constant()

    Examples
    --------
    >>> import numpy as np
    >>> p, g = np.array([1.0, 1.0]), np.array([2.0, -4.0])
    >>> SGD(lr=0.5).update(p, g, np.zeros((2, 2)), 0.5, 1); p
    array([0., 3.])
    """

    lr: float = 0.1
    name: ClassVar[str] = "sgd"
    code: ClassVar[int] = 0
    supports_l1: ClassVar[bool] = True

    def update(self, p, g, slots, lr_t, t):
        p -= lr_t * g

    def step_scale(self, g, slots, lr_t, t):
        return lr_t


@dataclass(frozen=True)
class Momentum(StepRule):
    """Heavy ball: v = mu v + g; p -= lr_t v.  Nesterov: p -= lr_t (g + mu v).

    Parameters
    ----------
    lr : float, default 0.01
    mu : float, default 0.9
        The momentum, in [0, 1).
    nesterov : bool, default False
        Nesterov's look-ahead form (the rule named ``"nesterov"``).

    Examples
    --------
    >>> import numpy as np
    >>> p, slots = np.zeros(1), np.zeros((2, 1))
    >>> rule = Momentum(lr=1.0, mu=0.5)
    >>> rule.update(p, np.ones(1), slots, 1.0, 1); rule.update(p, np.ones(1), slots, 1.0, 2); p
    array([-2.5])
    """

    lr: float = 0.01
    mu: float = 0.9
    nesterov: bool = False
    slots: ClassVar[tuple[str, ...]] = ("velocity",)
    fixed_params: ClassVar[tuple[str, ...]] = ("nesterov",)
    supports_l1: ClassVar[bool] = True

    @property
    def name(self) -> str:  # type: ignore[override]  # a ClassVar elsewhere: nesterov or not
        return "nesterov" if self.nesterov else "momentum"

    @property
    def code(self) -> int:  # type: ignore[override]
        return 2 if self.nesterov else 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("mu", self.mu)

    def params(self):
        return (float(self.mu), 0.0, 0.0)

    def update(self, p, g, slots, lr_t, t):
        v = slots[0]
        v[:] = self.mu * v + g
        p -= lr_t * (g + self.mu * v) if self.nesterov else lr_t * v

    def step_scale(self, g, slots, lr_t, t):
        # The step per unit of GRADIENT once the velocity has settled, v = g / (1 - mu): with
        # lr_t alone the fixed point would be the optimum of the penalty l1 (1 - mu), not l1.
        return lr_t / (1.0 - self.mu)


@dataclass(frozen=True)
class Normalized(StepRule):
    """p -= lr_t g / max(||g||, eps): every step has length lr_t; g = 0 gives no step.

    Parameters
    ----------
    lr : float, default 0.1
        The length of every step.
    eps : float, default 1e-12
        Guards the division where the gradient is tiny.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2)
    >>> Normalized(lr=0.1).update(p, np.array([3.0, 4.0]), np.zeros((2, 2)), 0.1, 1); p
    array([-0.06, -0.08])
    """

    lr: float = 0.1
    eps: float = 1e-12
    name: ClassVar[str] = "normalized"
    code: ClassVar[int] = 3
    supports_l1: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite_nonneg("eps", self.eps)

    def params(self):
        return (0.0, 0.0, float(self.eps))

    def update(self, p, g, slots, lr_t, t):
        norm = np.sqrt(np.sum(g * g))
        if norm > 0.0:
            p -= lr_t * g / max(norm, self.eps)

    def step_scale(self, g, slots, lr_t, t):
        norm = np.sqrt(np.sum(g * g))
        return lr_t / max(norm, self.eps) if norm > 0.0 else 0.0


@dataclass(frozen=True)
class AdaGrad(StepRule):
    """G += g^2; p -= lr_t g / (sqrt(G) + eps).

    Parameters
    ----------
    lr : float, default 0.01
    eps : float, default 1e-10

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2)
    >>> AdaGrad(lr=0.1).update(p, np.array([2.0, -0.5]), np.zeros((2, 2)), 0.1, 1); p
    array([-0.1,  0.1])
    """

    lr: float = 0.01
    eps: float = 1e-10
    name: ClassVar[str] = "adagrad"
    code: ClassVar[int] = 4
    supports_l1: ClassVar[bool] = True
    slots: ClassVar[tuple[str, ...]] = ("sum_sq_grad",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite_nonneg("eps", self.eps)

    def params(self):
        return (0.0, 0.0, float(self.eps))

    def update(self, p, g, slots, lr_t, t):
        G = slots[0]
        G += g * g
        p -= lr_t * g / (np.sqrt(G) + self.eps)

    def step_scale(self, g, slots, lr_t, t):
        return lr_t / (np.sqrt(slots[0] + g * g) + self.eps)  # G as update leaves it


@dataclass(frozen=True)
class RMSProp(StepRule):
    """v = rho v + (1 - rho) g^2; p -= lr_t g / (sqrt(v) + eps).

    Parameters
    ----------
    lr : float, default 0.01
    rho : float, default 0.99
        Decay of the running mean of g^2, in [0, 1).
    eps : float, default 1e-8

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(1)
    >>> RMSProp(lr=0.1, rho=0.75).update(p, np.array([2.0]), np.zeros((2, 1)), 0.1, 1); p
    array([-0.2])
    """

    lr: float = 0.01
    rho: float = 0.99
    eps: float = 1e-8
    name: ClassVar[str] = "rmsprop"
    code: ClassVar[int] = 5
    supports_l1: ClassVar[bool] = True
    slots: ClassVar[tuple[str, ...]] = ("mean_sq_grad",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("rho", self.rho)
        check_finite_nonneg("eps", self.eps)

    def params(self):
        return (float(self.rho), 0.0, float(self.eps))

    def update(self, p, g, slots, lr_t, t):
        v = slots[0]
        v[:] = self.rho * v + (1.0 - self.rho) * g * g
        p -= lr_t * g / (np.sqrt(v) + self.eps)

    def step_scale(self, g, slots, lr_t, t):
        v = self.rho * slots[0] + (1.0 - self.rho) * g * g  # v as update leaves it
        return lr_t / (np.sqrt(v) + self.eps)


@dataclass(frozen=True)
class AdaDelta(StepRule):
    """E = rho E + (1-rho) g^2; d = sqrt(D+eps)/sqrt(E+eps) g; D = rho D + (1-rho) d^2; p -= lr_t d.

    Parameters
    ----------
    lr : float, default 1.0
    rho : float, default 0.9
    eps : float, default 1e-6

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(1)
    >>> AdaDelta().update(p, np.array([1.0]), np.zeros((2, 1)), 1.0, 1); p.round(6)
    array([-0.003162])
    """

    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    name: ClassVar[str] = "adadelta"
    code: ClassVar[int] = 6
    supports_l1: ClassVar[bool] = True
    slots: ClassVar[tuple[str, ...]] = ("mean_sq_grad", "mean_sq_step")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("rho", self.rho)
        check_finite_nonneg("eps", self.eps)

    def params(self):
        return (float(self.rho), 0.0, float(self.eps))

    def update(self, p, g, slots, lr_t, t):
        a, eps = self.rho, self.eps
        E, D = slots[0], slots[1]
        E[:] = a * E + (1.0 - a) * g * g
        delta = np.sqrt(D + eps) / np.sqrt(E + eps) * g
        D[:] = a * D + (1.0 - a) * delta * delta
        p -= lr_t * delta

    def step_scale(self, g, slots, lr_t, t):
        a, eps = self.rho, self.eps
        E = a * slots[0] + (1.0 - a) * g * g  # E as update leaves it; D as update reads it
        return lr_t * np.sqrt(slots[1] + eps) / np.sqrt(E + eps)


@dataclass(frozen=True)
class Adam(StepRule):
    """Bias-corrected moments: p -= lr_t m_hat / (sqrt(v_hat) + eps).

    Parameters
    ----------
    lr : float, default 0.001
    beta1, beta2 : float, default 0.9, 0.999
        Decay of the first and second moments, in [0, 1).
    eps : float, default 1e-8

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros(2)
    >>> Adam(lr=0.01).update(p, np.array([5.0, -0.1]), np.zeros((2, 2)), 0.01, 1); p
    array([-0.01,  0.01])
    """

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name: ClassVar[str] = "adam"
    code: ClassVar[int] = 7
    supports_l1: ClassVar[bool] = True
    slots: ClassVar[tuple[str, ...]] = ("first_moment", "second_moment")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("beta1", self.beta1)
        check_fraction("beta2", self.beta2)
        check_finite_nonneg("eps", self.eps)

    def params(self):
        return (float(self.beta1), float(self.beta2), float(self.eps))

    def update(self, p, g, slots, lr_t, t):
        a, b = self.beta1, self.beta2
        m, v = slots[0], slots[1]
        m[:] = a * m + (1.0 - a) * g
        v[:] = b * v + (1.0 - b) * g * g
        m_hat = m / (1.0 - a**t)
        v_hat = v / (1.0 - b**t)
        p -= lr_t * m_hat / (np.sqrt(v_hat) + self.eps)

    def step_scale(self, g, slots, lr_t, t):
        b = self.beta2  # per unit of m_hat, the gradient estimate it steps along
        v_hat = (b * slots[1] + (1.0 - b) * g * g) / (1.0 - b**t)
        return lr_t / (np.sqrt(v_hat) + self.eps)
