"""The functional front door: ``fit``, ``loss_and_grad``, ``hessp`` and their results."""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _validate as v
from ._backends.state import (
    DIVERGED,
    H_DISTANCE,
    H_GRAD_NORM,
    H_LOSS,
    H_LR,
    H_PASSES,
    H_STEP_NORM,
    RUNNING,
    SHUFFLE_BLOCK,
    STALLED,
    STATUS_NAMES,
    STOPPED,
    FitState,
    RunSpec,
)
from ._blas import one_blas_thread
from ._progress import Progress, ProgressBar, read_only
from .driver import init_state, make_driver
from .multinomial import MultinomialOracle, multinomial_oracle, public_params
from .oracle import data_oracle, first_pass
from .penalty import check_l1_ratio, l1_norms, l1_residual, penalized_columns, resolve_l1_ratio
from .rules import (
    RULES,
    SCHEDULE_PARAMS,
    StepRule,
    default_lr,
    encode_runs,
    make_rule,
    make_schedule,
)
from .working_set import fit_working_set

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class DivergenceWarning(RuntimeWarning):
    """A run diverged: its loss or weights stopped being finite, its loss rose above 1e6 times
    max(its starting loss, log 2), or its weights' norm passed 1e150; it kept its last good
    weights (``_backends.state`` states the rule; every backend applies it)."""


class StallWarning(RuntimeWarning):
    """A line search could not decrease the loss at machine precision before the gradient
    reached tol; the run's status is "stalled"."""


def warn(message: str, category: type) -> None:
    """warnings.warn with the stack level of the first frame outside gradstep (user code)."""
    level = 2  # stacklevel 2 is warn's caller, sys._getframe(1)
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)


@dataclass(frozen=True)
class History:
    """Per-iteration traces of a fit; entry 0 is the starting point.

    A batched fit gives arrays of shape (K, max n_iter + 1), shorter runs padded with NaN.

    Attributes
    ----------
    loss : ndarray
        The objective (full batch) or the mean loss over the epoch's batches (mini-batch).
    grad_norm : ndarray
        L2 norm of the gradient over coef and intercept; with l1_ratio > 0, of the minimum-norm
        subgradient (the proximal-gradient residual the stopping test uses).
    step_norm : ndarray
        L2 length of the step taken (0 at entry 0).
    lr : ndarray
        The learning rate used: the schedule's value, or the accepted step length of a line
        search (0 at entry 0).
    passes : ndarray
        Cumulative passes over X (gradient and Hessian-vector passes each count one): the cost
        that compares rules fairly.
    distance : ndarray or None
        Distance to ``reference`` when one was given.

    Examples
    --------
    >>> import numpy as np, gradstep as gs
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 1, 0, 1])
    >>> h = gs.fit(X, y, "sgd", lr=0.1, max_iter=3, tol=None, backend="numpy").history
    >>> h.passes.tolist()
    [1.0, 2.0, 3.0, 4.0]
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    step_norm: np.ndarray
    lr: np.ndarray
    distance: np.ndarray | None
    passes: np.ndarray | None = None


@dataclass(frozen=True)
class RuleState:
    """The first-order rules' state after a fit (their slots and update counters, and the
    shuffle's epoch counter), so ``fit(..., resume=result)`` goes on where it stopped."""

    slots: np.ndarray
    t: np.ndarray
    epoch: int


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns. A batched call (K runs) gives every array a leading axis of K.

    Attributes
    ----------
    coef : ndarray of shape (d,) or (K, d)
    intercept : float or ndarray of shape (K,)
    n_iter : int or ndarray of shape (K,)
        Iterations (epochs with ``batch_size``) run.
    status : str or ndarray of str
        "converged", "max_iter", "diverged", "stalled" (a line search could not make progress
        before tol) or "stopped" (the callback returned False).
    loss : float or ndarray
        The objective at the returned weights.
    rules : StepRule or tuple of StepRule
        The rules that ran, with their learning rates.
    history : History or None
    backend : str
    classes : ndarray or None
        The two classes of a 1-D y; classes[1] is the positive one.
    state : RuleState or None
        What ``fit(..., resume=...)`` needs to continue.
    passes : int or ndarray of int
        Passes over X each run used (gradient and Hessian-vector passes; entry 0's included).

    Examples
    --------
    >>> import numpy as np, gradstep as gs
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 1, 0, 1])
    >>> res = gs.fit(X, y, ["sgd", "lbfgs"], alpha=0.1, backend="numpy")
    >>> res.batched, res.status.tolist()
    (True, ['converged', 'converged'])
    """

    coef: np.ndarray
    intercept: Any
    n_iter: Any
    status: Any
    loss: Any
    rules: Any
    history: History | None
    backend: str = "numpy"
    classes: np.ndarray | None = None
    state: RuleState | None = None
    passes: Any = None

    @property
    def batched(self) -> bool:
        """Whether the fit had K runs (arrays with a leading run axis)."""
        return isinstance(self.status, np.ndarray)


# ---------------------------------------------------------------------------------------------
# loss_and_grad and hessp
# ---------------------------------------------------------------------------------------------


def _params(coef, intercept, d: int, name: str) -> tuple[np.ndarray, bool]:
    """(P (K, d + 1), single) from a coef of shape (d,) or (K, d) and a scalar or (K,) intercept."""
    single = np.ndim(coef) == 1
    W = v.check_params(coef, name, None, d).reshape(-1, d)
    n_runs = W.shape[0]
    b = np.array(intercept, dtype=np.float64).reshape(-1)
    iname = name.replace("coef", "intercept")
    if b.size not in (1, n_runs):
        raise ValueError(f"{iname} must be a scalar or have shape ({n_runs},), got {b.shape}")
    v.check_params(b, iname, None, b.size)
    P = np.empty((n_runs, d + 1))
    P[:, :d] = W
    P[:, d] = b
    return P, single


def _check_loss(loss: Any, classes: Any) -> None:
    if loss not in ("logistic", "multinomial"):
        raise ValueError(f"loss must be 'logistic' or 'multinomial', got {loss!r}")
    if classes is not None and loss != "multinomial":
        raise ValueError("classes is for loss='multinomial'; binary fits take the two classes "
                         "of y")


def _one_pass_oracle(X, y, sample_weight, alpha, backend, n_threads, loss, classes):
    """The oracle of loss_and_grad and hessp: X's finiteness is proven by the result of the one
    pass (see oracle.first_pass), not by a pass of its own; so is a CSR X's index structure on
    the C++ kernels (sparse.CSROracle.structure_proven)."""
    if loss == "multinomial":
        oracle, _ = multinomial_oracle(X, y, sample_weight=sample_weight, alpha=alpha,
                                       backend=backend, n_threads=n_threads, fit_intercept=True,
                                       finite=False, classes=classes)
        return oracle
    oracle, _ = data_oracle(X, y, sample_weight=sample_weight, alpha=alpha, backend=backend,
                            n_threads=n_threads, labels=False, finite=False)
    return oracle


def _public_params(oracle: Any, coef: Any, intercept: Any, name: str) -> tuple[np.ndarray, bool]:
    """(P, single): the parameter rows of coef and intercept, as the oracle's loss lays them."""
    if isinstance(oracle, MultinomialOracle):
        return public_params(coef, intercept, oracle.n_classes, oracle.n_features, name)
    return _params(coef, intercept, oracle.n_features, name)


def _public_result(oracle: Any, A: np.ndarray, single: bool) -> tuple[Any, Any]:
    """(coef part, intercept part) of parameter rows A: (d,) and a float for one binary run,
    (C, d) and (C,) for one multinomial run, a leading K axis on both for K runs."""
    if isinstance(oracle, MultinomialOracle):
        W, b = oracle.split(A)
        return (W[0], b[0]) if single else (W, b)
    d = oracle.n_features
    if single:
        return A[0, :d].copy(), float(A[0, d])
    return np.ascontiguousarray(A[:, :d]), A[:, d].copy()


def _check_runs(oracle: Any, n_runs: int) -> None:
    for what, count in (("y", oracle.Y.shape[1] if hasattr(oracle, "Y") else 1),
                        ("sample_weight", oracle.SW.shape[1]), ("alpha", oracle.alpha.size)):
        if count not in (0, 1, n_runs):
            raise ValueError(f"{what} has {count} columns/entries but coef has {n_runs} rows")


def loss_and_grad(X, y, coef, intercept=0.0, *, sample_weight=None, alpha=0.0,
                  backend="auto", n_threads=None, loss="logistic", classes=None):
    """The mean (weighted) logistic loss plus (alpha/2)||coef||^2, and its gradient, in one
    pass over X.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, K)
        0/1 targets (one column per run when 2-D); class labels for loss="multinomial".
    coef : array-like of shape (n_features,) or (K, n_features)
        K rows evaluate K parameter vectors in the same pass. loss="multinomial": shape
        (C, n_features) or (K, C, n_features), C the number of classes.
    intercept : float or array-like of shape (K,), default 0.0
        loss="multinomial": a float (every class), (C,) or (K, C).
    sample_weight : array-like of shape (n_samples,) or (n_samples, K), optional
    alpha : float or array-like of shape (K,), default 0.0
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
    n_threads : int, optional
    loss : {"logistic", "multinomial"}, default "logistic"
        "multinomial": the mean softmax cross-entropy of ``gs.fit(..., loss="multinomial")``
        plus (alpha/2)||coef||^2 (never the intercepts).
    classes : array-like, optional
        loss="multinomial" only: every class label, sorted order = the rows of coef (default:
        the labels in y), so that a mini-batch that lacks a class still has all C rows.

    Returns
    -------
    loss : float or ndarray of shape (K,)
    grad_coef : ndarray shaped as coef
    grad_intercept : float or ndarray of shape (K,); (C,) or (K, C) for loss="multinomial"

    Raises
    ------
    ValueError
        Bad shapes, NaN or infinity in the input, labels other than 0/1 (multinomial: labels
        outside ``classes``), a CSR X whose column indices are out of range, unsorted or
        repeated.

    Examples
    --------
    >>> import numpy as np, gradstep as gs
    >>> X = np.array([[1.0, 2.0], [0.5, -1.0]]); y = np.array([1, 0])
    >>> loss, g, g0 = gs.loss_and_grad(X, y, np.zeros(2))
    >>> round(loss, 6), g.tolist(), g0
    (0.693147, [-0.125, -0.75], 0.0)

    Three classes:

    >>> loss, G, g0 = gs.loss_and_grad(X, [0, 2], np.zeros((3, 2)), classes=[0, 1, 2],
    ...                                loss="multinomial")
    >>> round(loss, 6), G.shape, g0.round(4).tolist()
    (1.098612, (3, 2), [-0.1667, 0.3333, -0.1667])
    """
    _check_loss(loss, classes)
    oracle = _one_pass_oracle(X, y, sample_weight, alpha, backend, n_threads, loss, classes)
    P, single = _public_params(oracle, coef, intercept, "coef")
    _check_runs(oracle, P.shape[0])
    losses, G = first_pass(oracle, P)
    grad_coef, grad_intercept = _public_result(oracle, G, single)
    return (float(losses[0]) if single else losses), grad_coef, grad_intercept


def hessp(X, y, coef, intercept, vec_coef, vec_intercept=0.0, *, sample_weight=None,
          alpha=0.0, backend="auto", n_threads=None, loss="logistic", classes=None):
    """The Hessian of the loss of ``loss_and_grad`` at (coef, intercept) times a vector, in one
    pass over X.

    Parameters
    ----------
    X, y, coef, intercept, sample_weight, alpha, backend, n_threads, loss, classes
        As for ``loss_and_grad`` (y is checked but not needed: the logistic Hessian does not
        depend on the labels; loss="multinomial" takes the number of classes from it).
    vec_coef : array-like of shape (n_features,) or (K, n_features)
        loss="multinomial": (C, n_features) or (K, C, n_features).
    vec_intercept : float or array-like of shape (K,), default 0.0
        loss="multinomial": a float, (C,) or (K, C).

    Returns
    -------
    hv_coef : ndarray shaped as vec_coef (with K rows when coef has them)
    hv_intercept : float or ndarray of shape (K,); (C,) or (K, C) for loss="multinomial"

    Examples
    --------
    With scipy's trust-region Newton-CG:

    >>> import numpy as np, gradstep as gs
    >>> from scipy.optimize import minimize
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 3)); y = (X[:, 0] + rng.standard_normal(200) > 0) * 1
    >>> def f(p):
    ...     loss, g, g0 = gs.loss_and_grad(X, y, p[:3], p[3], alpha=0.1)
    ...     return loss, np.append(g, g0)
    >>> def hp(p, vec):
    ...     h, h0 = gs.hessp(X, y, p[:3], p[3], vec[:3], vec[3], alpha=0.1)
    ...     return np.append(h, h0)
    >>> res = minimize(f, np.zeros(4), jac=True, hessp=hp, method="trust-ncg",
    ...                options={"gtol": 1e-8})
    >>> res.success
    True
    """
    _check_loss(loss, classes)
    oracle = _one_pass_oracle(X, y, sample_weight, alpha, backend, n_threads, loss, classes)
    P, single = _public_params(oracle, coef, intercept, "coef")
    V, single_vec = _public_params(oracle, vec_coef, vec_intercept, "vec_coef")
    if V.shape[0] != P.shape[0]:
        if V.shape[0] == 1:
            V = np.repeat(V, P.shape[0], axis=0)
        elif P.shape[0] == 1:
            P = np.repeat(P, V.shape[0], axis=0)
        else:
            raise ValueError(f"vec_coef has {V.shape[0]} rows but coef has {P.shape[0]}")
    _check_runs(oracle, P.shape[0])
    HV = oracle.hessp(P, V, np.ones(P.shape[0], np.uint8))
    if not np.isfinite(HV).all():
        oracle.check_finite()  # a NaN or inf in X: name it
    return _public_result(oracle, HV, single and single_vec)


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------


def lipschitz_constant(X, sample_weight=None, alpha=0.0, fit_intercept=True, *,
                       backend="auto", n_threads=None) -> float:
    """L, the Lipschitz constant of the logistic gradient: the largest eigenvalue of
    X'SX / (4 sum s) + alpha (X with a column of ones when the intercept is fitted).

    Computed by Lanczos on the fused Hessian-vector product at 0 (where the logistic Hessian is
    exactly that matrix): at most 10 passes over X, rounded up by the method's error estimate
    so that 1/L never overshoots; within 1e-3 of the exact value. Any rate below 2/L decreases
    the loss of vanilla gradient descent at every step and 1/L gives the largest guaranteed
    decrease; L uses the worst-case curvature 1/4, so on real data rates well above 1/L often
    still descend (a line search or a curvature rule finds them).

    Examples
    --------
    >>> import numpy as np, gradstep as gs
    >>> X = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    >>> round(gs.lipschitz_constant(X, fit_intercept=False), 4)   # 4 / (4 * 4)
    0.25
    """
    unlabelled = np.zeros(np.shape(X)[0])  # L needs no labels
    oracle, _ = data_oracle(X, unlabelled, sample_weight=sample_weight, alpha=alpha,
                            backend=backend, n_threads=n_threads, labels=False)
    return float(oracle.lipschitz(1, bool(fit_intercept))[0])


def _as_list(value, is_seq: bool) -> list:
    return list(value) if is_seq else [value]


def _is_sequence(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim > 0  # a 0-d array is a number
    return not isinstance(value, (str, bytes)) and isinstance(value, Sequence)


def _count_runs(rule, lr, alpha, n_columns: dict, l1_ratio=0.0) -> int:
    """K from the sequences that pair up (rule, lr, alpha, l1_ratio) and the 2-D arrays (y,
    weights)."""
    sizes = {}
    if isinstance(rule, (list, tuple)):
        sizes["rule"] = len(rule)
    if _is_sequence(lr):
        sizes["lr"] = len(lr)
    if _is_sequence(alpha):
        sizes["alpha"] = len(alpha)
    if _is_sequence(l1_ratio):
        sizes["l1_ratio"] = len(l1_ratio)
    for name, size in sizes.items():
        if size == 0:
            raise ValueError(f"{name} is an empty sequence; give at least one value")
    sizes.update({k: c for k, c in n_columns.items() if c > 1})
    distinct = set(sizes.values())
    if len(distinct) > 1:
        described = ", ".join(f"{k} has {c}" for k, c in sizes.items())
        raise ValueError(
            f"the sequences that make the runs must pair up, but {described}; give them equal "
            "lengths (or pass some of them as a single value)"
        )
    return distinct.pop() if distinct else 1


def _pick(values: list, i: int):
    return values[i if len(values) > 1 else 0]


def _build_rules(rule, lr, schedule, rule_params: dict, n_runs: int,
                 lipschitz: Callable[[], np.ndarray]) -> list[StepRule]:
    """The K rules to run."""
    rules_in = _as_list(rule, isinstance(rule, (list, tuple)))
    lrs_in = _as_list(lr, _is_sequence(lr))
    schedule_params = {k: rule_params[k] for k in rule_params if k in SCHEDULE_PARAMS}
    own_params = {k: rule_params[k] for k in rule_params if k not in SCHEDULE_PARAMS}
    sched = make_schedule(schedule, schedule_params)
    L: list[np.ndarray] = []
    rules = []
    for i in range(n_runs):
        r = _pick(rules_in, i)
        this_lr = _pick(lrs_in, i)
        if this_lr is None and isinstance(r, str):
            this_lr = default_lr(r)
        if isinstance(this_lr, str):
            if this_lr != "auto":
                raise ValueError(f"lr must be a positive number, None or 'auto', got {this_lr!r}")
            if not L:
                L.append(lipschitz())
            this_lr = 1.0 / float(L[0][i])
        elif isinstance(this_lr, np.ndarray) and this_lr.ndim == 0:
            this_lr = this_lr.item()
        if this_lr is not None and (isinstance(this_lr, bool) or not isinstance(
                this_lr, (int, float, np.floating, np.integer))):
            raise ValueError(f"lr must be a positive number, None or 'auto', got {this_lr!r}")
        made = make_rule(r, None if this_lr is None else float(this_lr), sched, own_params)
        rules.append(made)
    return rules


def _check_full_batch(rules: list[StepRule], batch: int) -> None:
    for r in rules:
        if not r.full_batch_only:
            continue
        if batch:
            first_order = ", ".join(n for n, c in RULES.items() if not c.full_batch_only)
            raise ValueError(
                f"rule {r.name!r} is a full-batch method (its line search or curvature needs the "
                "whole objective); drop batch_size, or use a first-order rule "
                f"({first_order}) for mini-batches"
            )
        if r.schedule.code != 0:
            raise ValueError(
                f"rule {r.name!r} chooses its own step length; it takes no schedule "
                f"(got {r.schedule.name!r}): use schedule='constant'"
            )


def _check_l1_rules(rules: list[StepRule], l1: np.ndarray) -> None:
    for r, strength in zip(rules, l1):
        if strength > 0.0 and not r.supports_l1:
            fitting = ", ".join(n for n, c in RULES.items() if c.supports_l1)
            raise ValueError(
                f"rule {r.name!r} cannot fit an L1 term (l1_ratio > 0, or penalty='l1' or "
                f"'elasticnet'); use one of {fitting} (lbfgs becomes OWL-QN), or l1_ratio=0"
            )


def _check_working_set(l1, n_runs: int, batch: int, tol: float, monitor, resume,
                       reference) -> None:
    """fit's working_set=True: one full-batch run with an L1 term, nothing that follows the
    weights of every iteration or starts from another fit (the rounds restart both)."""
    if l1 is None or not np.all(l1 > 0.0):
        raise ValueError("working_set=True solves an L1 fit on growing sets of features: it "
                         "needs l1_ratio > 0 (and alpha > 0); drop working_set for an L2 fit")
    if n_runs != 1:
        raise ValueError(f"working_set=True fits one run, got {n_runs}: give a single rule, lr, "
                         "alpha and l1_ratio and one column of y and sample_weight, or drop "
                         "working_set")
    if not np.isfinite(tol):
        raise ValueError("working_set=True ends its rounds on the stopping test: give a tol "
                         "(a number >= 0), not None")
    for name, value in (("batch_size", batch or None), ("monitor", monitor), ("resume", resume),
                        ("reference", reference)):
        if value is not None:
            raise ValueError(f"working_set=True runs several fits one after another; it takes "
                             f"no {name}: drop {name} or working_set")


def _reference_array(reference, n_runs: int, n_params_out: int, D: int) -> np.ndarray:
    if isinstance(reference, FitResult):
        coef = np.atleast_2d(reference.coef)
        ref = np.column_stack([coef, np.atleast_1d(reference.intercept)])
        ref = ref if n_params_out == D else ref[:, :n_params_out]
    else:
        ref = v.check_params(reference, "reference", n_runs, n_params_out)
    ref = np.broadcast_to(np.atleast_2d(ref), (n_runs, n_params_out))
    out = np.zeros((n_runs, D))
    out[:, :n_params_out] = ref
    return out


def _is_oracle(X) -> bool:
    return hasattr(X, "loss_grad") and hasattr(X, "n_features") and not isinstance(X, np.ndarray)


def fit(X, y=None, rule="sgd", *, lr=None, schedule="constant", alpha=0.0, l1_ratio=0.0,
        penalty="auto", fit_intercept=True, sample_weight=None, max_iter=1000, tol=1e-6,
        batch_size=None, shuffle="rows", random_state=None, coef_init=None, intercept_init=None,
        reference=None, backend="auto", n_threads=None, history=True, callback=None, verbose=0,
        resume=None, loss="logistic", classes=None, monitor=None, working_set=False,
        **rule_params) -> FitResult:
    """Fit logistic regression by gradient descent with one or several step rules.

    A list of rules, a sequence of lr values, a sequence of alpha or l1_ratio values, a 2-D 0/1
    y or a 2-D sample_weight makes K runs that share every pass over X (sequences pair up and
    must have equal lengths); each run stops on its own.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), or an oracle
        The data (float32 or float64 used without a copy when C-contiguous), or any object with
        the oracle interface of ``gradstep.oracle`` (then y must be None and the oracle
        defines the objective, its penalty included: alpha must stay 0).
    y : array-like of shape (n_samples,) or (n_samples, K)
        Two classes (the larger is the positive one), or one 0/1 column per run.
    rule : str, StepRule, or a list of them, default "sgd"
        One of ``gradstep.rules.RULES``: first-order "sgd", "momentum", "nesterov",
        "normalized", "adagrad", "rmsprop", "adadelta", "adam"; curvature rules that need no
        learning rate "armijo", "bb", "lbfgs", "newton" (full batch only).
    lr : float, "auto", None, or a sequence of them
        The base learning rate; "auto" is 1/L (``lipschitz_constant``); None takes the rule's
        default (``gradstep.rules.DEFAULT_LR``: "auto" for sgd and the momentum rules).
    schedule : str or schedule object, default "constant"
        "constant", "inverse_time" (decay), "inverse_power" (power), "exponential" (gamma),
        "cosine"; first-order rules only.
    alpha : float or sequence of float, default 0.0
        The penalty's strength: the objective is the mean loss + alpha (l1_ratio ||coef||_1
        + (1 - l1_ratio)/2 ||coef||^2), never on the intercept(s); with the default l1_ratio=0
        the mean loss + (alpha/2) ||coef||^2. A sequence gives each run its own alpha (a
        regularization path in one call).
    l1_ratio : float in [0, 1] or sequence of them, default 0.0
        The L1 share of the penalty (scikit-learn's): 0 is L2 (ridge), 1 is L1 (lasso),
        between them the elastic net. A sequence gives each run its own. With l1_ratio > 0
        the coefficients get exact zeros: first-order rules take a proximal (soft-
        thresholding) step after each update, scaled by the rule's per-coordinate step;
        "lbfgs" becomes OWL-QN and "armijo" proximal gradient with backtracking; "newton" and
        "bb" do not support it. With the C++ backend these fits run in its compiled loops;
        on the Numba backend (whose loop takes no proximal step) on the Python driver over
        the compiled kernels.
    penalty : {"auto", "l2", "l1", "elasticnet", None}, default "auto"
        The older scikit-learn spelling: "l2" means l1_ratio=0, "l1" l1_ratio=1,
        "elasticnet" and "auto" take l1_ratio as given, None no penalty (alpha must then be
        0). A contradicting pair (penalty="l2" with l1_ratio=0.5) is an error.
    fit_intercept : bool, default True
    sample_weight : array-like of shape (n_samples,) or (n_samples, K), optional
        Per-sample weights; a 2-D array gives each run its own (cross-validation folds as runs
        whose weights are 0 outside the fold).
    max_iter : int, default 1000
        Iterations (epochs with batch_size) per run at most.
    tol : float or None, default 1e-6
        Full batch: a run stops when max |gradient| <= tol; with l1_ratio > 0 the test is on
        the minimum-norm subgradient of the objective (g_j + l1 sign(w_j) where w_j != 0,
        sign(g_j) max(|g_j| - l1, 0) where w_j == 0, g_j on the intercept, l1 = alpha
        l1_ratio), which is 0 at the optimum, and history.grad_norm is its norm. Mini-batch:
        when its epoch loss has not improved by tol for 5 epochs. None never stops early.
    batch_size : int, optional
        Mini-batches of this size in a seeded shuffled order; an iteration is an epoch.
    shuffle : {"rows", "blocks"}, default "rows"
        The mini-batch order of each epoch (needs batch_size). "rows": a uniform random
        permutation of the rows. "blocks": a different sampling scheme, cheaper when X does not
        fit in cache: the rows are cut into blocks of ``SHUFFLE_BLOCK`` (64) consecutive rows, the
        blocks are shuffled, groups of ``SHUFFLE_WINDOW // SHUFFLE_BLOCK`` (16) consecutive
        blocks of that order form windows of 1024 rows, and each window's rows are randomly
        permuted (``gradstep._backends.state.shuffle_order_blocks`` is the exact order). X is
        then read in runs of 64 consecutive rows, and a batch draws its rows from up to 16
        random places of X; rows of one block are more likely to share a batch than under
        "rows" (data sorted by y: keep "rows", or shuffle X once first). The same order on
        every backend.
    random_state : int, numpy Generator or None
        Seeds the mini-batch shuffle.
    coef_init, intercept_init : array-like, optional
        Starting weights ((d,) or (K, d); scalar or (K,)).
    reference : FitResult or array-like, optional
        Weights to record the distance to at every iteration (``history.distance``).
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
    n_threads : int, optional
        Threads of the compiled kernels (default: all cores); results are bit-identical for
        any number.
    history : bool, default True
        Record per-iteration traces.
    callback : callable, optional
        Called with a ``Progress`` record at most every ~0.1 s and at the end; returning
        False stops every run still running (status "stopped").
    verbose : int, default 0
        1 draws a progress bar on stderr.
    resume : FitResult, optional
        Go on from a previous fit's weights and first-order rule state (moments, update
        counters, shuffle epoch): ``partial_fit``-style training.
    loss : {"logistic", "multinomial"}, default "logistic"
        "logistic": binary (two classes, or 0/1 columns per run). "multinomial": the softmax
        cross-entropy over the C classes of a 1-D y; coef is (C, d) per run (K, C, d batched)
        and intercept (C,); runs on the reference driver over the softmax kernels.
    classes : array-like, optional
        loss="multinomial" only: every class label (default: the labels in y), so that a
        batch that lacks a class still fits all C.
    monitor : callable, optional
        Called after every iteration (epoch with batch_size) that any run completes, with a
        ``Progress`` that also carries every run's current ``coef`` and ``intercept``:
        deterministic, unlike ``callback``'s time cadence (early stopping on a validation
        set is built on it). It returns None or True to go on, False to stop every run, or
        one bool per run (False stops that run; status "stopped"). It costs a Python call
        and a copy of the weights per iteration.
    working_set : bool, default False
        One run with an L1 term (l1_ratio > 0) only: solve it on growing sets of features
        (``gradstep.working_set``): each round fits the columns of the nonzero weights and of
        the features whose gradient most violates |g_j| <= alpha l1_ratio, warm-started, then
        checks the features left out in one pass over X; it stops with the plain fit's test on
        the whole problem. Its speed against the plain fit varies with the problem (0.8-2.5 x
        on nine sparse Zipf CSR problems, see the README's L1 section); the history joins the
        rounds', and its grad_norm is over each round's features; a callback sees each round's
        iterations (counted from 0 in each). Not with monitor, resume, reference, batch_size or
        several runs.
    **rule_params
        The rule's own parameters (mu, rho, beta1, beta2, eps, m, c1, cg_tol, ...) and the
        schedule's (decay, power, gamma).

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        Bad input (shapes, NaN or infinity, one class, unknown rule or parameter), a
        full-batch rule with batch_size, lr="auto" where the curvature cannot be bounded.

    Warns
    -----
    DivergenceWarning
        A run diverged (its loss or weights stopped being finite, its loss rose above 1e6 x
        max(starting loss, log 2), or its weight norm passed 1e150); it keeps its last good
        weights and the other runs go on.
    StallWarning
        A line search could not make progress before the gradient reached tol.

    Examples
    --------
    >>> import gradstep as gs
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> res = gs.fit(X, y, ["lbfgs", "adam"], lr=[None, 0.05], alpha=1e-3, max_iter=300)
    >>> res.status.tolist()
    ['converged', 'max_iter']
    >>> bool(res.loss[0] <= res.loss[1])
    True
    """
    started = time.perf_counter()
    # ---- validation: everything before any work -------------------------------------------
    _check_loss(loss, classes)
    tol = -np.inf if tol is None else v.check_nonneg_float(tol, "tol")
    max_iter = v.check_positive_int(max_iter, "max_iter")
    batch = v.check_positive_int(batch_size, "batch_size", allow_none=True) or 0
    if not isinstance(shuffle, str) or shuffle not in ("rows", "blocks"):
        raise ValueError(f"shuffle must be 'rows' or 'blocks', got {shuffle!r}")
    if shuffle == "blocks" and not batch:
        raise ValueError("shuffle='blocks' orders mini-batches: it needs batch_size")
    fit_intercept = bool(fit_intercept)
    all_classes, classes = classes, None  # `classes` becomes the classes found in y
    ratio, penalized = resolve_l1_ratio(penalty, l1_ratio)
    if not penalized and np.any(v.check_alpha(alpha) != 0.0):
        raise ValueError(f"penalty=None means no penalty, but alpha={alpha!r}: drop "
                         "penalty=None, or set alpha=0")
    # l1: each run's L1 strength (None: no L1 term, the plain L2 fit, unchanged); the oracle's
    # kernels compute the L2 part, alpha (1 - l1_ratio)
    l1: np.ndarray | None = None
    l2_alpha = alpha
    if penalized and np.any(ratio != 0.0) and not _is_oracle(X):
        _count_runs(rule, lr, alpha, {}, l1_ratio)  # alpha and l1_ratio must pair up first
        strength = v.check_alpha(alpha)
        l1 = strength * ratio
        l2 = strength * (1.0 - ratio)
        l2_alpha = l2 if l2.size > 1 else float(l2[0])
    if _is_oracle(X):
        if y is not None:
            raise ValueError("X is an oracle: it holds the data; pass y=None")
        if np.any(v.check_alpha(alpha) != 0.0):
            raise ValueError("X is an oracle: its loss_grad defines the objective, penalty "
                             "included; leave alpha at 0")
        if np.any(check_l1_ratio(l1_ratio) != 0.0):
            raise ValueError("X is an oracle: its loss_grad defines the objective, penalty "
                             "included; leave l1_ratio at 0")
        if sample_weight is not None:
            raise ValueError("X is an oracle: put the sample weights into the oracle")
        oracle = X
        backend_name = type(X).__name__
        n_columns: dict = {}
        alpha_seq = alpha
    else:
        if y is None:
            raise ValueError("y is required (the 0/1 targets or two class labels)")
        # X's finiteness is proven by the first pass over it (init_state, or the Lanczos
        # passes of lr="auto"), before any update: no pass of its own
        if loss == "multinomial":
            oracle, classes = multinomial_oracle(X, y, sample_weight=sample_weight,
                                                 alpha=l2_alpha, backend=backend,
                                                 n_threads=n_threads,
                                                 fit_intercept=fit_intercept, finite=False,
                                                 classes=all_classes)
        else:
            oracle, classes = data_oracle(X, y, sample_weight=sample_weight, alpha=l2_alpha,
                                          backend=backend, n_threads=n_threads,
                                          labels=np.ndim(y) == 1, finite=False)
        backend_name = oracle.backend
        n_columns = {"y": np.shape(y)[1] if np.ndim(y) == 2 else 1,
                     "sample_weight": (np.shape(sample_weight)[1]
                                       if np.ndim(sample_weight) == 2 else 1)}
        alpha_seq = alpha
    seed = v.seed_from(random_state)
    n_runs = _count_runs(rule, lr, alpha_seq, n_columns, l1_ratio)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None, got {callback!r}")
    if monitor is not None and not callable(monitor):
        raise ValueError(f"monitor must be callable or None, got {monitor!r}")

    def lipschitz() -> np.ndarray:
        if not hasattr(oracle, "lipschitz"):
            raise ValueError("lr='auto' needs oracle.lipschitz(); give lr as a number")
        L = np.asarray(oracle.lipschitz(n_runs, fit_intercept), dtype=np.float64)
        if not np.all(np.isfinite(L)) or np.any(L <= 0.0):
            raise ValueError(
                "lr='auto' found no curvature to set the rate from (X is all zeros"
                f"{'' if fit_intercept else ' and there is no intercept'} and alpha is 0); "
                "give lr as a number"
            )
        return np.broadcast_to(L, (n_runs,))

    rules = _build_rules(rule, lr, schedule, rule_params, n_runs, lipschitz)
    _check_full_batch(rules, batch)
    if l1 is not None:
        l1 = np.ascontiguousarray(np.broadcast_to(l1, (n_runs,)), dtype=np.float64)
        _check_l1_rules(rules, l1)
    batched = (isinstance(rule, (list, tuple)) or _is_sequence(lr) or _is_sequence(alpha)
               or _is_sequence(l1_ratio) or np.ndim(y) == 2 or np.ndim(sample_weight) == 2)
    if not isinstance(working_set, (bool, np.bool_)):
        raise ValueError(f"working_set must be True or False, got {working_set!r}")
    if working_set:
        _check_working_set(l1, n_runs, batch, tol, monitor, resume, reference)
    d = int(oracle.n_features)
    D = int(getattr(oracle, "n_params", d + 1))
    P0 = np.zeros((n_runs, D))
    if hasattr(oracle, "pack"):  # parameter rows that are not (coef, intercept) of one class
        if intercept_init is not None and not fit_intercept:
            raise ValueError("intercept_init was given but fit_intercept=False; drop one of them")
        if resume is not None:
            P0[:] = oracle.pack(resume.coef, resume.intercept, n_runs, "resume.coef")
        if coef_init is not None or intercept_init is not None:
            P0[:] = oracle.pack(np.zeros((n_runs, 1)) if coef_init is None else coef_init,
                                intercept_init, n_runs, "coef_init")
        ref = None if reference is None else oracle.pack(
            *((reference.coef, reference.intercept) if isinstance(reference, FitResult)
              else (reference, None)), n_runs, "reference")
    else:
        ref = _start_and_reference(P0, resume, coef_init, intercept_init, reference,
                                   fit_intercept, n_runs, d)
    if resume is not None and not isinstance(resume, FitResult):
        raise ValueError(f"resume must be a FitResult from an earlier fit, got {resume!r}")
    if working_set and l1 is not None:  # (_check_working_set made sure of an L1 term)
        with one_blas_thread(backend_name.startswith("cpp")):
            return fit_working_set(  # the oracle's X: checked and converted once
                fit, oracle.X, y, oracle, P0, float(l1[0]), tol, max_iter, batched, dict(
                    rule=rule, lr=lr, schedule=schedule, alpha=alpha, l1_ratio=l1_ratio,
                    penalty=penalty, fit_intercept=fit_intercept, sample_weight=sample_weight,
                    backend=backend, n_threads=n_threads, history=history, callback=callback,
                    verbose=verbose, loss=loss, classes=all_classes, **rule_params))

    # ---- the run ---------------------------------------------------------------------------
    rule_code, sched_code, hyper = encode_runs(rules)
    n_batches = math.ceil(int(oracle.n_samples) / batch) if batch else 1
    total_updates = min(max_iter * n_batches, v.MAX_COUNT)  # the cosine schedule's T
    spec = RunSpec(
        rule_code=rule_code, sched_code=sched_code, hyper=hyper,
        alpha=np.zeros(n_runs), fit_intercept=fit_intercept, tol=tol, batch_size=batch,
        seed=seed, max_iter=max_iter, total_updates=total_updates,
        record_history=bool(history), has_reference=ref is not None,
        shuffle_blocks=SHUFFLE_BLOCK if shuffle == "blocks" else 0,
    )
    if hasattr(oracle, "alphas"):
        spec.alpha = oracle.alphas(n_runs)
    if l1 is not None:
        spec.l1 = l1
        spec.penalized = penalized_columns(oracle, D).astype(np.uint8)
    # the history grows with the iterations actually run (see _drive): memory is O(n_iter).
    # The first-order rules' slots (2 D per run) and the reference rows (D per run) are only
    # allocated when a first-order rule, a resumed rule state or a reference needs them: a
    # curvature fit's peak memory is then its own vectors (a sparse fit's, next to X's CSR).
    slots_needed = (any(r.compiled for r in rules)
                    or (resume is not None and resume.state is not None
                        and resume.state.slots.shape[1] > 0))
    state = FitState.empty(n_runs, D, min(max_iter + 1, INITIAL_HISTORY) if history else 0,
                           slots=slots_needed, reference=slots_needed or ref is not None)
    state.P[:] = P0
    del P0  # the state holds the starting rows now
    if resume is not None and resume.state is not None:
        if resume.state.slots.shape[1] > 0:  # none after a curvature fit: the zeros stay
            state.slots[:] = resume.state.slots
        state.t[:] = resume.state.t
        state.epoch[0] = resume.state.epoch
    if ref is not None:
        state.reference[:] = ref
    # the driver's NumPy calls between passes must not wake BLAS threads that would spin on
    # the cores the compiled kernels' pool needs (see _blas)
    with one_blas_thread(backend_name.startswith("cpp")):
        init_state(oracle, spec, state)
        if not (np.isfinite(state.loss).all() and np.isfinite(state.grad).all()):
            if hasattr(oracle, "check_finite"):
                oracle.check_finite()  # a NaN or inf in X: a clear error before any update
        driver = make_driver(oracle, spec, rules, state)
        norms = _grad_norms(spec, oracle)
        report = _reporter(callback, verbose, max_iter, rules, started, norms)
        watch = (None if monitor is None
                 else _watcher(monitor, oracle, fit_intercept, d, started, norms))
        _drive(driver, state, report, spec, watch)
        if batch:  # the exact objective at the returned weights (epoch losses are running means)
            state.loss[:] = oracle.loss_grad(state.P, np.ones(n_runs, np.uint8))[0]
            if l1 is not None:
                state.loss += l1 * l1_norms(state.P, penalized_columns(oracle, D))
    passes = np.asarray(driver.passes, dtype=np.int64)
    return _result(state, spec, rules, batched, backend_name, classes, fit_intercept, d, passes,
                   oracle)


def _start_and_reference(P0, resume, coef_init, intercept_init, reference, fit_intercept,
                         n_runs, d):
    """The binary loss's starting rows P0 (in place) and the reference rows (or None)."""
    D = d + 1
    if resume is not None:
        if not isinstance(resume, FitResult):
            raise ValueError(f"resume must be a FitResult from an earlier fit, got {resume!r}")
        P0[:, :d] = np.atleast_2d(resume.coef)
        P0[:, d] = np.atleast_1d(resume.intercept) if fit_intercept else 0.0
    if coef_init is not None:
        P0[:, :d] = v.check_params(coef_init, "coef_init", n_runs, d)
    if intercept_init is not None:
        if not fit_intercept:
            raise ValueError("intercept_init was given but fit_intercept=False; drop one of them")
        b0 = np.array(intercept_init, dtype=np.float64).reshape(-1)
        if b0.size not in (1, n_runs):
            raise ValueError(
                f"intercept_init must be a scalar or have shape ({n_runs},), got {b0.shape}"
            )
        P0[:, d] = v.check_params(b0, "intercept_init", None, b0.size)
    n_params_out = d + int(fit_intercept)
    ref = None if reference is None else _reference_array(reference, n_runs, n_params_out, D)
    return ref


def _grad_norms(spec: RunSpec, oracle) -> Callable[[FitState], np.ndarray]:
    """Each run's gradient norm as the progress records show it: with an L1 term, the norm of
    the minimum-norm subgradient (what the stopping test uses), not of the smooth gradient."""
    l1 = spec.l1_strengths(len(spec.rule_code))

    def norms(state: FitState) -> np.ndarray:
        if not l1.any():
            return np.linalg.norm(state.grad, axis=1)
        mask = penalized_columns(oracle, state.P.shape[1])
        return np.array([np.linalg.norm(l1_residual(state.P[k], state.grad[k], l1[k], mask))
                         for k in range(state.P.shape[0])])

    return norms


def _reporter(callback, verbose, max_iter, rules, started,
              norms) -> Callable[[FitState], bool] | None:
    """A function of the state that feeds the callback and the progress bar; returns False
    when the callback asks to stop."""
    sinks: list[Callable[[Progress], Any]] = []
    if callback is not None:
        sinks.append(callback)
    if verbose:
        names = sorted({r.name for r in rules})
        sinks.append(ProgressBar(max_iter, f"gradstep.fit({','.join(names)})"))
    if not sinks:
        return None

    def report(state: FitState) -> bool:
        progress = Progress(
            iteration=read_only(state.n_iter), loss=read_only(state.loss),
            grad_norm=read_only(norms(state)),
            status=tuple(STATUS_NAMES[int(s)] for s in state.status),
            elapsed=time.perf_counter() - started,
        )
        go_on = True
        for sink in sinks:
            go_on = sink(progress) is not False and go_on
        return go_on

    return report


# The compiled loop runs in chunks of about this many seconds: between them Python handles
# Ctrl-C (KeyboardInterrupt) and the callback reports progress.
CHUNK_SECONDS = 0.1


INITIAL_HISTORY = 256  # history entries allocated at first; doubled as a fit needs more


def _reserve_history(state: FitState, spec: RunSpec, entries: int) -> None:
    """At least ``entries`` history entries (at most max_iter + 1), by doubling: the memory of
    the history is O(iterations run), whatever max_iter is."""
    have = state.history.shape[2]
    if not spec.record_history or have >= min(entries, spec.max_iter + 1):
        return
    size = min(max(entries, 2 * have), spec.max_iter + 1)
    grown = np.full(state.history.shape[:2] + (size,), np.nan)
    grown[:, :, :have] = state.history
    state.history = grown


def _watcher(monitor, oracle, fit_intercept, d, started, norms) -> Callable[[FitState], None]:
    """A function of the state that hands the monitor a Progress with the weights and applies
    its answer (stop all, or stop some runs)."""

    def watch(state: FitState) -> None:
        if hasattr(oracle, "split"):
            coef, intercept = oracle.split(state.P)
        else:
            coef = state.P[:, :d].copy()
            intercept = state.P[:, d].copy() if fit_intercept else np.zeros(state.P.shape[0])
        progress = Progress(
            iteration=read_only(state.n_iter), loss=read_only(state.loss),
            grad_norm=read_only(norms(state)),
            status=tuple(STATUS_NAMES[int(s)] for s in state.status),
            elapsed=time.perf_counter() - started,
            coef=read_only(coef), intercept=read_only(intercept),
        )
        answer = monitor(progress)
        if answer is None or answer is True:
            return
        go_on = np.broadcast_to(np.asarray(answer, dtype=bool), state.status.shape)
        state.status[(state.status == RUNNING) & ~go_on] = STOPPED

    return watch


def _drive(driver, state: FitState, report, spec: RunSpec, watch=None) -> None:
    chunk = 1
    last_report = time.perf_counter()
    while (state.status == RUNNING).any():
        if watch is not None:  # one round (iteration, or line-search trial) at a time
            done = state.n_iter.copy()
            _reserve_history(state, spec, int(state.n_iter.max()) + 2)
            driver.run(1)
            if (state.n_iter != done).any():
                watch(state)
            now = time.perf_counter()
            if (report is not None and (state.status == RUNNING).any()
                    and now - last_report >= CHUNK_SECONDS):
                last_report = now
                if report(state) is False:
                    state.status[state.status == RUNNING] = STOPPED
            continue
        # a chunk adds at most `chunk` iterations (epochs) per run
        _reserve_history(state, spec, int(state.n_iter.max()) + chunk + 1)
        began = time.perf_counter()
        driver.run(chunk)
        elapsed = time.perf_counter() - began
        # size the next chunk from the measured time: ~0.1 s whatever the problem's shape
        chunk = max(1, min(4 * chunk, int(chunk * CHUNK_SECONDS / max(elapsed, 1e-6))))
        if report is not None and (state.status == RUNNING).any():
            if report(state) is False:
                state.status[state.status == RUNNING] = STOPPED
    if report is not None:
        report(state)


def _result(state, spec, rules, batched, backend_name, classes, fit_intercept, d,
            passes, oracle) -> FitResult:
    diverged = np.flatnonzero(state.status == DIVERGED)
    if diverged.size:
        which = ", ".join(
            f"run {k} ({rules[k].name}" + ("" if rules[k].lr is None else f", lr={rules[k].lr:g}")
            + ")" for k in diverged)
        warn(f"{which} diverged: its loss or weights stopped being finite, its loss rose above "
             "1e6 x max(starting loss, log 2), or its weight norm passed 1e150; the last good "
             "weights are returned. Try a smaller lr, lr='auto', a curvature rule such as "
             "'lbfgs', more regularization, or standardize X.", DivergenceWarning)
    stalled = np.flatnonzero(state.status == STALLED)
    if stalled.size:
        which = ", ".join(f"run {k} ({rules[k].name})" for k in stalled)
        warn(f"{which} stalled: the line search could not decrease the loss at machine "
             "precision while max |gradient| was still above tol. The weights are the best "
             "found; a larger tol, more regularization (alpha) or scaling X helps.",
             StallWarning)
    status = np.array([STATUS_NAMES[int(s)] for s in state.status])
    hist = None
    if spec.record_history:
        length = int(state.n_iter.max()) + 1
        h = state.history[:, :, :length].copy()
        hist = History(
            loss=h[H_LOSS], grad_norm=h[H_GRAD_NORM], step_norm=h[H_STEP_NORM], lr=h[H_LR],
            distance=h[H_DISTANCE] if spec.has_reference else None, passes=h[H_PASSES],
        )
    if hasattr(oracle, "split"):  # e.g. multinomial: (K, C, d) and (K, C)
        coef, intercept = oracle.split(state.P)
    else:
        coef = state.P[:, :d].copy()
        intercept = state.P[:, d].copy() if fit_intercept else np.zeros(len(rules))
    rule_state = RuleState(state.slots.copy(), state.t.copy(), int(state.epoch[0]))
    if batched:
        return FitResult(coef, intercept, state.n_iter.copy(), status, state.loss.copy(),
                         tuple(rules), hist, backend_name, classes, rule_state, passes)
    if hist is not None:
        n_entries = int(state.n_iter[0]) + 1
        first = slice(0, 1), slice(0, n_entries)
        hist = History(
            loss=hist.loss[first][0], grad_norm=hist.grad_norm[first][0],
            step_norm=hist.step_norm[first][0], lr=hist.lr[first][0],
            distance=None if hist.distance is None else hist.distance[first][0],
            passes=None if hist.passes is None else hist.passes[first][0],
        )
    first_intercept = intercept[0] if np.ndim(intercept[0]) else float(intercept[0])
    return FitResult(coef[0], first_intercept, int(state.n_iter[0]), str(status[0]),
                     float(state.loss[0]), rules[0], hist, backend_name, classes, rule_state,
                     int(passes[0]))
