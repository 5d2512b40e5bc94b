"""GDClassifier: gradstep's engine as a scikit-learn classifier.

Multiclass is one-vs-rest done as ONE batched engine call: the K binary runs share every pass
over X, each with its own 0/1 target column.
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _backends
from . import _validate as v
from ._backends.state import (
    DIVERGED,
    H_GRAD_NORM,
    H_LOSS,
    H_STEP_NORM,
    MAX_ITER,
    RUNNING,
    STATUS_NAMES,
    FitState,
    RunSpec,
)
from .api import (
    DivergenceWarning,
    _build_rules,
    _fit,
    chunk_iterations,
    init_state,
    lipschitz_constant,
)
from .rules import ESTIMATOR_LR, encode_runs


class _Progress:
    """A one-line text progress bar on stderr, redrawn at most ~10 times a second."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.last = total, label, 0.0

    def __call__(self, state: FitState) -> None:
        now = time.perf_counter()
        done = int(state.n_iter.max())
        if now - self.last < 0.1 and (state.status == RUNNING).any():
            return
        self.last = now
        filled = int(30 * done / self.total)
        running = int((state.status == RUNNING).sum())
        loss = np.nanmean(state.loss)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
            f"loss {loss:.6g} running {running}/{state.status.size}"
        )
        if not (state.status == RUNNING).any():
            sys.stderr.write("\n")
        sys.stderr.flush()


class GDClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression trained by gradient descent with a chosen step rule.

    Parameters
    ----------
    rule : str or StepRule, default="adam"
        "sgd", "momentum", "nesterov", "normalized", "adagrad", "rmsprop", "adadelta", "adam".
    lr : float, "auto" or None, default=None
        Base learning rate; "auto" takes 1/L; None takes the rule's default, except for
        "adam", where the estimator uses 0.03 (``rules.ESTIMATOR_LR`` says why).
    schedule : str or schedule object, default="constant"
    alpha : float, default=0.0
        L2 strength on the coefficients (the mean loss plus alpha/2 ||w||^2).
    C : float or None, default=None
        scikit-learn's inverse strength: alpha = 1 / (C * sum of sample weights), the objective
        of LogisticRegression(C=C). Give alpha or C, not both.
    fit_intercept, max_iter, tol, batch_size, random_state : see ``gradstep.fit``.
    class_weight : dict, "balanced" or None
    warm_start : bool, default=False
        Start ``fit`` from the previous solution.
    backend : "auto", "cpp", "numba" or "numpy"
    n_threads : int or None (all cores)
    verbose : int, default=0
        1 shows a progress bar over iterations.
    rule_params : dict or None
        The rule's own parameters (mu, rho, beta1, beta2, eps, decay, power, gamma).
    """

    def __init__(self, rule="adam", lr=None, schedule="constant", alpha=0.0, C=None,
                 fit_intercept=True, max_iter=1000, tol=1e-6, batch_size=None,
                 class_weight=None, random_state=None, warm_start=False, backend="auto",
                 n_threads=None, verbose=0, rule_params=None):
        self.rule = rule
        self.lr = lr
        self.schedule = schedule
        self.alpha = alpha
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.random_state = random_state
        self.warm_start = warm_start
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose
        self.rule_params = rule_params

    # ---- shared preparation ----------------------------------------------------------------

    def _lr(self):
        if self.lr is None and isinstance(self.rule, str):
            return ESTIMATOR_LR.get(self.rule)
        return self.lr

    def _strength(self, sw: np.ndarray) -> float:
        if self.C is not None:
            if self.alpha not in (0, 0.0, None):
                raise ValueError(
                    f"both alpha={self.alpha!r} and C={self.C!r} were set; they are the same "
                    "knob (alpha = 1 / (C * n_samples)): set only one"
                )
            if isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not (
                    math.isfinite(self.C) and self.C > 0):
                raise ValueError(f"C must be a positive finite number, got {self.C!r}")
            return 1.0 / (self.C * float(sw.sum()))
        return v.check_nonneg_float(self.alpha, "alpha")

    def _prepare(self, X, y, sample_weight, *, reset: bool, classes=None):
        X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32],
                             order="C", accept_large_sparse=False)
        check_classification_targets(y)
        if reset:
            self.classes_ = np.unique(y) if classes is None else np.unique(classes)
            if self.classes_.size < 2:
                raise ValueError(
                    f"y has only one class ({self.classes_[0]!r}); a classifier needs at "
                    "least two classes to fit"
                )
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(f"y has labels {unseen.tolist()} not in classes {self.classes_.tolist()}")
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if self.class_weight is not None:
            sw = sw * compute_sample_weight(self.class_weight, y)
        if self.classes_.size == 2:
            Y = (y == self.classes_[1]).astype(np.float64).reshape(-1, 1)
        else:
            Y = (y[:, None] == self.classes_[None, :]).astype(np.float64)
        return X, Y, sw

    def _check_outcome(self, status, n_iter, final_grad_norm, lr_values) -> None:
        rule = self.rule if isinstance(self.rule, str) else type(self.rule).__name__
        for k in np.flatnonzero(status == "diverged"):
            raise ValueError(
                f"GDClassifier diverged: rule {rule!r} with lr={lr_values[k]:g} produced "
                f"non-finite weights or loss at iteration {int(n_iter[k]) + 1}"
                f"{f' (class {self.classes_[k]!r})' if len(status) > 1 else ''}. Try a "
                "smaller lr, lr='auto', or scaling X (e.g. StandardScaler)."
            )
        if (status == "max_iter").any():
            k = int(np.flatnonzero(status == "max_iter")[0])
            warnings.warn(
                f"GDClassifier did not converge: rule {rule!r} with lr={lr_values[k]:g} stopped "
                f"at max_iter={self.max_iter} with gradient norm {final_grad_norm[k]:.3g} "
                f"(tol={self.tol}). Try a larger max_iter, a larger lr or lr='auto', "
                "scaling X, or a larger tol.",
                ConvergenceWarning,
            )

    def _store(self, coef, intercept, n_iter, history) -> None:
        binary = self.classes_.size == 2
        self.coef_ = np.atleast_2d(coef).copy()
        self.intercept_ = np.atleast_1d(np.asarray(intercept, dtype=np.float64)).copy()
        self.n_iter_ = np.atleast_1d(np.asarray(n_iter)).astype(np.int64)
        if history is not None:
            pick = (lambda a: a[0]) if binary else (lambda a: a)
            self.loss_curve_ = pick(np.atleast_2d(history[0]))
            self.grad_norm_curve_ = pick(np.atleast_2d(history[1]))
            self.step_norm_curve_ = pick(np.atleast_2d(history[2]))

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Fit the K one-vs-rest runs (one for two classes) in one batched engine call."""
        X, Y, sw = self._prepare(X, y, sample_weight, reset=True)
        alpha = self._strength(sw)
        n_runs = Y.shape[1]
        warm = self.warm_start and hasattr(self, "coef_") and self.coef_.shape[0] == n_runs
        progress = _Progress(self.max_iter, f"GDClassifier({self.rule})") if self.verbose else None
        every = chunk_iterations(X.shape[0], X.shape[1], n_runs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)  # raised as ValueError below
            result = _fit(
                X, Y, self.rule, lr=self._lr(), schedule=self.schedule, alpha=alpha,
                fit_intercept=self.fit_intercept, sample_weight=sw, max_iter=self.max_iter,
                tol=self.tol, batch_size=self.batch_size, random_state=self.random_state,
                coef_init=self.coef_ if warm else None,
                intercept_init=self.intercept_ if warm and self.fit_intercept else None,
                reference=None, backend=self.backend, n_threads=self.n_threads, history=True,
                rule_params=dict(self.rule_params or {}),
                callback=progress or (lambda state: None), callback_every=every,
            )
        self._partial_state = None  # a later partial_fit starts afresh from these weights
        h = result.history
        self._store(result.coef, result.intercept, result.n_iter,
                    (h.loss, h.grad_norm, h.step_norm))
        self.status_ = result.status if n_runs > 1 else str(result.status[0])
        last = np.array([h.grad_norm[k, result.n_iter[k]] for k in range(n_runs)])
        self._check_outcome(result.status, result.n_iter, last, [r.lr for r in result.rules])
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y) (one step in full batch); the rules' state carries over.

        The first call needs ``classes`` (unless ``fit`` ran before: then it goes on from the
        fitted weights with a fresh rule state)."""
        first = getattr(self, "_partial_state", None) is None
        if first:
            if classes is None and not hasattr(self, "classes_"):
                raise ValueError("classes must be given on the first call to partial_fit")
            classes = self.classes_ if classes is None else classes
        X, Y, sw = self._prepare(X, y, sample_weight, reset=first, classes=classes)
        if first:
            self._start_partial(X, Y, sw)
        spec, state, module, threads = self._partial_state
        spec.alpha = self._strength(sw)
        diverged = state.status == DIVERGED
        state.status[:] = RUNNING
        state.n_iter[:] = 0
        state.history[:] = np.nan
        init_state(module, X, Y, sw, spec, state, threads)  # loss and gradient on this X
        state.status[diverged] = DIVERGED
        module.run(X, Y, sw, spec, state, 1, threads)
        d = X.shape[1]
        self._n_iter_total = self._n_iter_total + state.n_iter
        self._store(state.P[:, :d], state.P[:, d], self._n_iter_total, None)
        epoch = state.history[:, :, 1]  # this call's entry
        for name, row in (("loss_curve_", H_LOSS), ("grad_norm_curve_", H_GRAD_NORM),
                          ("step_norm_curve_", H_STEP_NORM)):
            old = getattr(self, name, None)
            curve = epoch[row][:, None]
            if old is not None:
                curve = np.hstack([old.reshape(curve.shape[0], -1), curve])
            setattr(self, name, curve[0] if curve.shape[0] == 1 else curve)
        status = np.array([STATUS_NAMES[int(s)] for s in state.status])
        status[state.status == MAX_ITER] = "running"  # one epoch is not a verdict
        self.status_ = status if status.size > 1 else str(status[0])
        self._check_outcome(status, self._n_iter_total, epoch[H_GRAD_NORM], spec.hyper[:, 0])
        return self

    def _start_partial(self, X, Y, sw) -> None:
        n, d = X.shape
        n_runs = Y.shape[1]
        alpha = self._strength(sw)
        rules, _ = _build_rules(
            self.rule, self._lr(), self.schedule, dict(self.rule_params or {}),
            lambda: lipschitz_constant(X, sw, alpha, bool(self.fit_intercept)), n_runs,
        )
        rule_code, sched_code, hyper = encode_runs(rules)
        batch = v.check_positive_int(self.batch_size, "batch_size", allow_none=True) or 0
        max_iter = v.check_positive_int(self.max_iter, "max_iter")
        spec = RunSpec(
            rule_code=rule_code, sched_code=sched_code, hyper=hyper, alpha=alpha,
            fit_intercept=bool(self.fit_intercept),
            tol=-np.inf if self.tol is None else v.check_nonneg_float(self.tol, "tol"),
            batch_size=batch, seed=v.seed_from(self.random_state), max_iter=1,
            total_updates=max_iter * (math.ceil(n / batch) if batch else 1),
            record_history=True, has_reference=False,
        )
        state = FitState.empty(n_runs, d + 1, 2)
        if hasattr(self, "coef_") and self.coef_.shape == (n_runs, d):  # go on from fit()
            state.P[:, :d] = self.coef_
            state.P[:, d] = self.intercept_ if self.fit_intercept else 0.0
        _, module = _backends.get(self.backend)
        self._partial_state = (spec, state, module, v.check_n_threads(self.n_threads))
        self._n_iter_total = np.zeros(n_runs, dtype=np.int64)
        for name in ("loss_curve_", "grad_norm_curve_", "step_norm_curve_"):
            self.__dict__.pop(name, None)

    # ---- prediction ------------------------------------------------------------------------

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        scores = X @ self.coef_.T + self.intercept_  # float64, also for float32 X
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = _sigmoid(scores)
            return np.column_stack([1.0 - p, p])
        p = _sigmoid(scores)  # one-vs-rest: each class's probability, renormalized
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
