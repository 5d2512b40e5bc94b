"""gradstep: logistic regression by gradient descent, vanilla, normalized and adaptive steps.

The fit loop runs in a compiled C++ core (``gradstep._core``), in Numba when the core is
missing, or in plain NumPy (the executable specification). ``gradstep.backends()`` tells which
are available and why one is not.
"""

__version__ = "0.1.0"

from ._backends import available as backends
from .api import DivergenceWarning, FitResult, History, fit, lipschitz_constant, loss_and_grad
from .rules import (
    SGD,
    AdaDelta,
    AdaGrad,
    Adam,
    Constant,
    Cosine,
    Exponential,
    InversePower,
    InverseTime,
    Momentum,
    Normalized,
    RMSProp,
    StepRule,
)

__all__ = [
    "SGD", "AdaDelta", "AdaGrad", "Adam", "Constant", "Cosine", "DivergenceWarning",
    "Exponential", "FitResult", "History", "InversePower", "InverseTime", "Momentum",
    "Normalized", "RMSProp", "StepRule", "backends", "fit", "lipschitz_constant",
    "loss_and_grad",
]
