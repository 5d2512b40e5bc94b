"""gradstep: logistic regression by gradient descent, vanilla, normalized and adaptive steps,
and curvature-aware steps that need no learning rate (line search, Barzilai-Borwein, L-BFGS,
Newton-CG).

The fit loop runs in a compiled C++ core (``gradstep._core``), in Numba when the core is
missing, or in plain NumPy (the executable specification). ``gradstep.backends()`` tells which
are available and why one is not. The layout: ``rules`` (every step rule, one class each),
``oracle`` (what a driver asks of the data), ``driver`` (the fit loops), ``api`` (``fit``,
``loss_and_grad``, ``hessp``), ``estimator`` (``GDClassifier``), ``cv`` (``GDClassifierCV``),
``optimum`` (the exact minimizer), ``plot`` and ``cli``.
"""

__version__ = "0.1.0"

import importlib

from . import rules
from ._backends import available as backends
from ._progress import Progress
from .api import (
    DivergenceWarning,
    FitResult,
    History,
    RuleState,
    StallWarning,
    fit,
    hessp,
    lipschitz_constant,
    loss_and_grad,
)
from .oracle import DenseOracle
from .rules import (
    BB,
    LBFGS,
    SGD,
    AdaDelta,
    AdaGrad,
    Adam,
    Armijo,
    Constant,
    Cosine,
    Exponential,
    InversePower,
    InverseTime,
    Momentum,
    Newton,
    Normalized,
    RMSProp,
    StepRule,
)

__all__ = [
    "BB", "LBFGS", "SGD", "AdaDelta", "AdaGrad", "Adam", "Armijo", "Constant", "Cosine",
    "DenseOracle", "DivergenceWarning", "Exponential", "FitResult", "GDClassifier",
    "GDClassifierCV", "History",
    "InversePower", "InverseTime", "Momentum", "Newton", "Normalized", "Progress", "RMSProp",
    "RuleState", "StallWarning", "StepRule", "backends", "fit", "hessp", "lipschitz_constant",
    "loss_and_grad", "rules",
]


def __getattr__(name: str):
    # scikit-learn and scipy are imported only when asked for: `import gradstep` stays light
    if name == "GDClassifier":
        from .estimator import GDClassifier

        return GDClassifier
    if name == "GDClassifierCV":
        from .cv import GDClassifierCV

        return GDClassifierCV
    if name == "optimum":  # import_module: `from . import optimum` would call __getattr__ again
        return importlib.import_module(".optimum", __name__)
    raise AttributeError(f"module 'gradstep' has no attribute {name!r}")
