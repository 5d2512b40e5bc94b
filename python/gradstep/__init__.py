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
    "Exponential", "FitResult", "GDClassifier", "History", "InversePower", "InverseTime", "Momentum",
    "Normalized", "RMSProp", "StepRule", "backends", "fit", "lipschitz_constant",
    "loss_and_grad",
]


def __getattr__(name: str):
    # scikit-learn is imported only when the estimator is asked for: `import gradstep` stays light
    if name == "GDClassifier":
        from .estimator import GDClassifier

        return GDClassifier
    raise AttributeError(f"module 'gradstep' has no attribute {name!r}")
