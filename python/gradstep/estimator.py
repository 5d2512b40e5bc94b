"""GDClassifier: gradstep's engine as a scikit-learn classifier.

Multiclass is multinomial (softmax) by default for more than two classes, as in
LogisticRegression; ``multi_class="ovr"`` is one-vs-rest done as ONE batched engine call: the K
binary runs share every pass over X, each with its own 0/1 target column. The estimator is
built on the public functional API only (``gradstep.fit`` with ``callback``, ``verbose`` and
``resume``), through ``engine_fit``, which GDClassifierCV shares.

SciPy sparse X is used as CSR without a copy (other formats converted once): ``gs.fit`` takes it
as it is (the multinomial loss too), and scores are ``X @ coef_.T`` by SciPy.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _validate as v
from ._backends.reference import sigmoid
from ._progress import ProgressBar
from .api import DivergenceWarning, fit, warn
from .penalty import resolve_l1_ratio


def engine_fit(X, target, rule, *, softmax: bool, n_classes: int, alpha, sample_weight,
               backend="auto", n_threads=None, l1_ratio=0.0, **kwargs):
    """``gs.fit`` for the estimators: the multinomial loss over class codes 0..C-1 (``softmax``,
    target 1-D) or the logistic loss of 0/1 target columns (one per run); alpha a number or one
    per run, sample_weight (n,) or (n, K). Always a batched result (a leading run axis).

    l1_ratio reaches gs.fit only when it is not 0, so an L2 fit does not depend on gs.fit
    having the parameter."""
    penalty = {} if not np.any(np.asarray(l1_ratio) != 0.0) else {"l1_ratio": l1_ratio}
    if not softmax:
        return fit(X, target, rule, alpha=alpha, sample_weight=sample_weight, backend=backend,
                   n_threads=n_threads, **penalty, **kwargs)
    alpha = np.atleast_1d(np.asarray(alpha, dtype=np.float64))  # a sequence: a batched call
    return fit(X, target, rule, loss="multinomial", classes=np.arange(n_classes), alpha=alpha,
               sample_weight=sample_weight, backend=backend, n_threads=n_threads, **penalty,
               **kwargs)


class LinearClassifierMixin:
    """Prediction from ``coef_``, ``intercept_``, ``classes_`` and ``_softmax`` (whether the
    scores are one multinomial model or one-vs-rest problems): GDClassifier's and
    GDClassifierCV's. Sparse X is scored as CSR by SciPy, never densified."""

    def decision_function(self, X):
        """Scores: (n_samples,) for two classes, (n_samples, n_classes) otherwise."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                          accept_sparse="csr", accept_large_sparse=True)
        # float64, also for float32 X; SciPy's CSR product for sparse X (no dense copy)
        scores = np.asarray(X @ self.coef_.T) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes): the softmax of the scores
        (multinomial), or each class's sigmoid renormalized (one-vs-rest)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = sigmoid(scores)
            return np.column_stack([1.0 - p, p])
        if getattr(self, "_softmax", False):
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        p = sigmoid(scores)  # one-vs-rest: each class's probability, renormalized
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
        tags.input_tags.sparse = True
        return tags


class GDClassifier(LinearClassifierMixin, ClassifierMixin, BaseEstimator):
    """Logistic regression trained by gradient descent with a chosen step rule.

    The default, L-BFGS at C=1, fits the same model as scikit-learn's
    ``LogisticRegression(C=1)`` (one-vs-rest for several classes) to tol without a learning
    rate to tune.

    Parameters
    ----------
    rule : str or StepRule, default "lbfgs"
        Any name of ``gradstep.rules.RULES``: "sgd", "momentum", "nesterov", "normalized",
        "adagrad", "rmsprop", "adadelta", "adam" (first-order, with a learning rate), "armijo",
        "bb", "lbfgs", "newton" (curvature rules: no learning rate; full batch only).
    lr : float, "auto" or None, default None
        Base learning rate; "auto" takes 1/L; None takes the rule's default
        (``gradstep.rules.DEFAULT_LR``).
    schedule : str or schedule object, default "constant"
    C : float, default 1.0
        Inverse regularization strength as in LogisticRegression: alpha = 1 / (C * sum of
        sample weights); ``np.inf`` means no penalty.
    alpha : float or None, default None
        The penalty's strength directly (the mean loss plus alpha times the penalty below);
        when given it replaces C, which must then stay at its default.
    l1_ratio : float in [0, 1], default 0.0
        The penalty is l1_ratio ||w||_1 + (1 - l1_ratio)/2 ||w||^2 (scikit-learn's elastic
        net; 1 is L1, with exact zeros in coef_). With C, the objective is scikit-learn's
        C sum_i s_i loss_i + that penalty, divided by C sum_i s_i.
    penalty : {"auto", "l2", "l1", "elasticnet", None}, default "auto"
        The older spelling (LogisticRegression before 1.8, SGDClassifier): "l2" is
        l1_ratio=0, "l1" is l1_ratio=1, "auto" and "elasticnet" take l1_ratio as given, None
        is no penalty (C and alpha are then ignored).
    fit_intercept : bool, default True
    max_iter : int, default 1000
    tol : float, default 1e-6
        Stop when max |gradient| <= tol (full batch; see ``gradstep.fit`` for mini-batches).
    batch_size : int or None, default None
        Mini-batches (first-order rules only).
    class_weight : dict, "balanced" or None
    random_state : int, Generator or None
        Seeds the mini-batch shuffle.
    warm_start : bool, default False
        Start ``fit`` from the previous solution.
    backend : "auto", "cpp", "numba" or "numpy"
    n_threads : int or None (all cores)
    verbose : int, default 0
        1 shows a progress bar over iterations.
    multi_class : {"auto", "multinomial", "ovr"}, default "auto"
        "auto" is multinomial for more than two classes (as LogisticRegression), binary
        logistic for two; "ovr" fits one binary problem per class in one batched call.
    rule_params : dict or None
        The rule's own parameters (mu, rho, beta1, beta2, eps, m, c1, cg_tol, ...) and the
        schedule's (decay, power, gamma).
    early_stopping : bool, default False
        As SGDClassifier: hold out a stratified ``validation_fraction`` of the data (split by
        ``random_state``), fit on the rest, score the held-out part after every iteration
        (epoch with batch_size) — the accuracy of each binary problem, or the multiclass
        accuracy of the multinomial model — and stop a run once its score has not improved by
        ``tol`` for ``n_iter_no_change`` iterations (tol=None: never). The weights kept are
        those of the best score. ``fit`` only (``partial_fit`` ignores it).
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int, default 5
    working_set : bool, default False
        With an L1 term (l1_ratio > 0) and one problem (two classes, or the multinomial
        model): ``gradstep.fit``'s working_set, the L1 fit solved on growing sets of features;
        faster on some problems and slower on others (0.8-2.5 x the plain fit's speed on
        sparse Zipf CSR, see ``gradstep.working_set``). ``fit`` only (``partial_fit`` ignores
        it); not with early_stopping.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_ : ndarray of shape (1,) or (n_classes,)
        Iterations (epochs) run per binary problem.
    n_features_in_ : int
    feature_names_in_ : ndarray, when X has feature names
    loss_curve_, grad_norm_curve_, step_norm_curve_ : ndarray
        Per-iteration traces (one row per class for multiclass).
    status_ : str or ndarray of str
        "converged", "max_iter", ... per binary problem; "stopped" when early stopping
        ended the run.
    validation_scores_ : ndarray
        With early_stopping: the held-out score after each iteration (one row per class for
        one-vs-rest, NaN after a class's run ended).
    best_validation_score_ : float or ndarray of shape (n_classes,)
        With early_stopping: the best of validation_scores_ (per class for one-vs-rest).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> import gradstep as gs
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), gs.GDClassifier()).fit(X, y)
    >>> clf[-1].status_, clf[-1].coef_.shape          # one multinomial fit over 3 classes
    ('converged', (3, 4))
    >>> round(clf.score(X, y), 2)
    0.97
    """

    def __init__(self, rule="lbfgs", lr=None, schedule="constant", C=1.0, alpha=None,
                 fit_intercept=True, max_iter=1000, tol=1e-6, batch_size=None,
                 class_weight=None, random_state=None, warm_start=False, backend="auto",
                 n_threads=None, verbose=0, multi_class="auto", rule_params=None,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=5,
                 penalty="auto", l1_ratio=0.0, working_set=False):
        self.rule = rule
        self.lr = lr
        self.schedule = schedule
        self.C = C
        self.alpha = alpha
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
        self.multi_class = multi_class
        self.rule_params = rule_params
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.penalty = penalty
        self.l1_ratio = l1_ratio
        self.working_set = working_set

    # ---- shared preparation ----------------------------------------------------------------

    def _l1_ratio(self) -> float:
        """The L1 share of the penalty (0.0 without one), from penalty and l1_ratio."""
        ratio, penalized = resolve_l1_ratio(self.penalty, self.l1_ratio)
        if ratio.ndim:
            raise ValueError(f"l1_ratio must be one number in [0, 1] for an estimator, got "
                             f"{self.l1_ratio!r} (a sequence is a batch of runs: gs.fit)")
        return float(ratio) if penalized else 0.0

    def _strength(self, sw: np.ndarray) -> float:
        if not resolve_l1_ratio(self.penalty, self.l1_ratio)[1]:
            return 0.0  # penalty=None: no penalty, whatever C or alpha say
        if self.alpha is not None:
            if self.C is not None and self.C != 1.0:
                raise ValueError(
                    f"both alpha={self.alpha!r} and C={self.C!r} were set; they are the same "
                    "knob (alpha = 1 / (C * n_samples)): set only one"
                )
            return v.check_nonneg_float(self.alpha, "alpha")
        if isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not self.C > 0:
            raise ValueError(f"C must be a positive number (np.inf: no penalty), got {self.C!r}")
        return 0.0 if math.isinf(self.C) else 1.0 / (self.C * float(sw.sum()))

    def _prepare(self, X, y, sample_weight, *, reset: bool, classes=None):
        # sparse X: a CSR of float32/float64 with int32/int64 indices is kept as it is (no
        # copy); other formats become CSR once
        X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32],
                             order="C", accept_sparse="csr", accept_large_sparse=True)
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
            raise ValueError(
                f"y has labels {unseen.tolist()} not in classes {self.classes_.tolist()}"
            )
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if self.class_weight is not None:
            sw = sw * compute_sample_weight(self.class_weight, y)
        if self._multinomial():
            return X, np.searchsorted(self.classes_, y), sw  # class codes 0..C-1
        if self.classes_.size == 2:
            Y = (y == self.classes_[1]).astype(np.float64).reshape(-1, 1)
        else:
            Y = (y[:, None] == self.classes_[None, :]).astype(np.float64)
        return X, Y, sw

    def _check_working_set(self, n_runs: int) -> None:
        """working_set=True fits one problem, without early stopping's monitor."""
        if not (isinstance(self.working_set, (bool, np.bool_)) and self.working_set):
            return  # False, or not a bool: gs.fit names the latter
        if self.early_stopping:
            raise ValueError("working_set=True and early_stopping=True do not combine (the "
                             "working set's rounds restart the iterations the held-out score "
                             "follows): drop one of them")
        if n_runs > 1:
            raise ValueError(f"working_set=True fits one problem, but multi_class="
                             f"{self.multi_class!r} makes {n_runs} one-vs-rest problems: use "
                             "multi_class='multinomial' (or 'auto'), or drop working_set")

    def _check_early_stopping(self) -> None:
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ValueError(f"early_stopping must be True or False, got "
                             f"{self.early_stopping!r}")
        fraction = self.validation_fraction
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating))
                or not 0.0 < fraction < 1.0):
            raise ValueError(f"validation_fraction must be a number in (0, 1) (the share of "
                             f"the samples held out by early_stopping), got {fraction!r}")
        v.check_positive_int(self.n_iter_no_change, "n_iter_no_change")

    def _validation_split(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, held-out rows): a stratified split as SGDClassifier's, seeded by
        random_state."""
        from sklearn.model_selection import train_test_split

        codes = Y if Y.ndim == 1 else (Y[:, 0] if Y.shape[1] == 1 else Y.argmax(axis=1))
        n = codes.shape[0]
        seed = v.seed_from(self.random_state) % 2**32  # train_test_split takes 32 bits
        try:
            train, held = train_test_split(np.arange(n), test_size=self.validation_fraction,
                                           stratify=codes, random_state=seed)
        except ValueError as exc:
            raise ValueError(
                f"early_stopping=True holds out validation_fraction={self.validation_fraction!r}"
                f" of the {n} samples, stratified by class, and that split is impossible here "
                f"({exc}). Use a validation_fraction that leaves every class on both sides, "
                "more samples, or early_stopping=False."
            ) from None
        return np.sort(train), np.sort(held)

    def _multinomial(self) -> bool:
        if self.multi_class not in ("auto", "multinomial", "ovr"):
            raise ValueError(f"multi_class must be 'auto', 'multinomial' or 'ovr', got "
                             f"{self.multi_class!r}")
        if self.multi_class == "ovr" or self.classes_.size == 2:
            return False
        return True

    def _engine_args(self, sw: np.ndarray) -> dict:
        """engine_fit's arguments: a batched call always (a 2-D 0/1 y with one column per
        one-vs-rest problem, or the one multinomial run), so every result has a leading run
        axis."""
        return dict(softmax=self._multinomial(), n_classes=self.classes_.size,
                    lr=self.lr, schedule=self.schedule, alpha=self._strength(sw),
                    l1_ratio=self._l1_ratio(),
                    fit_intercept=self.fit_intercept, sample_weight=sw, tol=self.tol,
                    batch_size=self.batch_size, random_state=self.random_state,
                    backend=self.backend, n_threads=self.n_threads, callback=self._progress(),
                    working_set=self.working_set, **dict(self.rule_params or {}))

    def _progress(self):
        if not self.verbose:
            return None
        rule = self.rule if isinstance(self.rule, str) else type(self.rule).__name__
        return ProgressBar(self.max_iter, f"GDClassifier({rule})")

    def _check_outcome(self, status, n_iter, final_grad_norm, lr_values) -> None:
        rule = self.rule if isinstance(self.rule, str) else type(self.rule).__name__
        diverged = np.flatnonzero(status == "diverged")
        if diverged.size:
            k = int(diverged[0])
            raise ValueError(
                f"GDClassifier diverged: rule {rule!r} with lr={lr_values[k]:g} produced "
                f"non-finite weights or loss at iteration {int(n_iter[k]) + 1}"
                f"{f' (class {self.classes_[k]!r})' if len(status) > 1 else ''}. Try a "
                "smaller lr, lr='auto', rule='lbfgs', or scaling X (e.g. StandardScaler)."
            )
        if (status == "max_iter").any():
            first = int(np.flatnonzero(status == "max_iter")[0])
            lr = "" if lr_values[first] is None else f" with lr={lr_values[first]:g}"
            warn(
                f"GDClassifier did not converge: rule {rule!r}{lr} stopped at "
                f"max_iter={self.max_iter} with gradient norm {final_grad_norm[first]:.3g} "
                f"(tol={self.tol}). Try a curvature rule that needs no learning rate "
                "(rule='lbfgs' or 'newton'), more regularization (a smaller C or a larger "
                "alpha), scaling X (StandardScaler), a larger lr or lr='auto', a larger "
                "max_iter or a larger tol.",
                ConvergenceWarning,
            )

    def _store(self, result, history, n_iter=None) -> None:
        """coef_, intercept_, n_iter_ and the curves from a batched result (leading run axis:
        K one-vs-rest runs, or one run for binary and multinomial)."""
        single = result.coef.shape[0] == 1
        coef, intercept = (result.coef[0], result.intercept[0]) if self._softmax else \
            (result.coef, result.intercept)
        self.coef_ = np.atleast_2d(coef).copy()
        self.intercept_ = np.atleast_1d(np.asarray(intercept, dtype=np.float64)).copy()
        n_iter = result.n_iter if n_iter is None else n_iter
        self.n_iter_ = np.atleast_1d(np.asarray(n_iter)).astype(np.int64)
        if history is not None:
            pick = (lambda a: a[0]) if single else (lambda a: a)
            self.loss_curve_ = pick(np.atleast_2d(history[0]))
            self.grad_norm_curve_ = pick(np.atleast_2d(history[1]))
            self.step_norm_curve_ = pick(np.atleast_2d(history[2]))

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Fit the multinomial model, or the K one-vs-rest problems (one for two classes) in one
        batched engine call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        self._check_early_stopping()
        self._l1_ratio()  # penalty and l1_ratio are checked before any work
        previous = getattr(self, "coef_", None)
        X, Y, sw = self._prepare(X, y, sample_weight, reset=True)
        self._softmax = self._multinomial()
        n_runs = 1 if self._softmax else Y.shape[1]
        self._check_working_set(n_runs)
        monitor = None
        for name in ("validation_scores_", "best_validation_score_"):
            self.__dict__.pop(name, None)
        if self.early_stopping:
            user_sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
            train, held = self._validation_split(Y)
            monitor = _HeldOutAccuracy(X[held], Y[held], user_sw[held], self._softmax,
                                       -np.inf if self.tol is None else float(self.tol),
                                       int(self.n_iter_no_change), n_runs)
            X, Y, sw = X[train], Y[train], sw[train]
        shape = (self.classes_.size if self._softmax else n_runs, X.shape[1])
        warm = self.warm_start and previous is not None
        if warm and previous.shape != shape:
            raise ValueError(
                f"warm_start=True, but the previous fit had {previous.shape[0]} coefficient "
                f"row(s) on {previous.shape[1]} features and this one needs {shape[0]} on "
                f"{X.shape[1]}: the old weights cannot be a start. Set warm_start=False (or "
                "fit a new estimator) when the classes or the features change"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)  # raised as ValueError below
            result = engine_fit(
                X, Y, self.rule, max_iter=self.max_iter,
                coef_init=self.coef_ if warm else None,
                intercept_init=self.intercept_ if warm and self.fit_intercept else None,
                monitor=monitor, **self._engine_args(sw),
            )
        if monitor is not None:
            result = monitor.keep_best(result)
            scores = monitor.table()
            self.validation_scores_ = scores[0] if scores.shape[0] == 1 else scores
            best = np.nanmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)
            self.best_validation_score_ = float(best[0]) if best.size == 1 else best
        self._partial_result = None  # a later partial_fit starts afresh from these weights
        h = result.history
        self._store(result, (h.loss, h.grad_norm, h.step_norm))
        self.status_ = result.status if n_runs > 1 else str(result.status[0])
        last = np.array([h.grad_norm[k, result.n_iter[k]] for k in range(n_runs)])
        self._check_outcome(result.status, result.n_iter, last, [r.lr for r in result.rules])
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y) (one step in full batch); the rules' state carries over.

        The first call needs ``classes`` (unless ``fit`` ran before: then it goes on from the
        fitted weights with a fresh rule state).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            Every class y will ever hold; required on the first call.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        previous = getattr(self, "_partial_result", None)
        first = previous is None
        if first:
            if classes is None and not hasattr(self, "classes_"):
                raise ValueError("classes must be given on the first call to partial_fit")
            classes = self.classes_ if classes is None else classes
        X, Y, sw = self._prepare(X, y, sample_weight, reset=first, classes=classes)
        if first:
            self._softmax = self._multinomial()
        n_runs, d = (1 if self._softmax else Y.shape[1]), X.shape[1]
        shape = (self.classes_.size if self._softmax else n_runs, d)
        if first:
            self._n_iter_total = np.zeros(n_runs, dtype=np.int64)
            self._random_state = v.seed_from(self.random_state)
            for name in ("loss_curve_", "grad_norm_curve_", "step_norm_curve_"):
                self.__dict__.pop(name, None)
        go_on = None if first else previous
        fitted = hasattr(self, "coef_") and self.coef_.shape == shape
        start = {} if go_on is not None or not fitted else {
            "coef_init": self.coef_,
            "intercept_init": self.intercept_ if self.fit_intercept else None}
        args = self._engine_args(sw)
        args["random_state"] = self._random_state
        args["working_set"] = False  # one epoch going on from the last: no rounds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)  # raised as ValueError below
            result = engine_fit(X, Y, self.rule, max_iter=1, resume=go_on, **start, **args)
        self._partial_result = result
        self._n_iter_total = self._n_iter_total + result.n_iter
        self._store(result, None, self._n_iter_total)
        h = result.history
        for name, trace in (("loss_curve_", h.loss), ("grad_norm_curve_", h.grad_norm),
                            ("step_norm_curve_", h.step_norm)):
            old = getattr(self, name, None)
            curve = _this_call(trace)
            if old is not None:
                curve = np.hstack([old.reshape(curve.shape[0], -1), curve])
            setattr(self, name, curve[0] if curve.shape[0] == 1 else curve)
        status = np.array(result.status, dtype=object)
        status[status == "max_iter"] = "running"  # one epoch is not a verdict
        status = status.astype(str)
        self.status_ = status if status.size > 1 else str(status[0])
        self._check_outcome(status, self._n_iter_total, _this_call(h.grad_norm)[:, 0],
                            [r.lr for r in result.rules])
        return self


class _HeldOutAccuracy:
    """gs.fit's monitor for early stopping: after every iteration, each run's accuracy on the
    held-out rows (each one-vs-rest run on its own 0/1 column; the multinomial run over the
    classes), SGDClassifier's patience rule (a score below best + tol counts as no
    improvement; n_iter_no_change of them in a row stop the run) and the best weights so far.
    """

    def __init__(self, X, target, weights, softmax: bool, tol: float, patience: int,
                 n_runs: int):
        self.X, self.target, self.softmax = X, target, softmax
        # unnormalized, so that equal counts of right answers give bit-equal scores (a tie is
        # then no improvement, whatever the rounding of normalized weights)
        self.weights = weights if weights.sum() > 0 else np.ones(weights.shape)
        self.total = float(self.weights.sum())
        self.tol, self.patience = tol, patience
        self.scores: list[list[float]] = [[] for _ in range(n_runs)]
        self.best = np.full(n_runs, -np.inf)
        self.without_gain = np.zeros(n_runs, dtype=np.int64)
        self.seen = np.zeros(n_runs, dtype=np.int64)
        self.best_coef: np.ndarray | None = None
        self.best_intercept: np.ndarray | None = None

    def accuracy(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        if self.softmax:  # coef (1, C, d): one multiclass accuracy
            Z = np.asarray(self.X @ coef[0].T) + intercept[0]
            return np.array([self.weights @ (Z.argmax(axis=1) == self.target)]) / self.total
        Z = np.asarray(self.X @ coef.T) + intercept  # (m, K): each binary problem's accuracy
        return (self.weights @ ((Z > 0) == (self.target == 1))) / self.total

    def __call__(self, progress) -> np.ndarray:
        moved = progress.iteration > self.seen
        self.seen = np.array(progress.iteration)
        if self.best_coef is None:
            self.best_coef = np.array(progress.coef)
            self.best_intercept = np.array(progress.intercept)
        assert self.best_intercept is not None
        score = self.accuracy(progress.coef, progress.intercept)
        go_on = np.ones(score.size, dtype=bool)
        for k in np.flatnonzero(moved):
            self.scores[k].append(float(score[k]))
            if score[k] < self.best[k] + self.tol:
                self.without_gain[k] += 1
            else:
                self.without_gain[k] = 0
            if score[k] > self.best[k]:
                self.best[k] = score[k]
                self.best_coef[k] = progress.coef[k]
                self.best_intercept[k] = progress.intercept[k]
            go_on[k] = self.without_gain[k] < self.patience
        return go_on

    def keep_best(self, result):
        """The result with each run's best-scoring weights (a run that never iterated keeps
        its own)."""
        if self.best_coef is None:
            return result
        scored = np.isfinite(self.best)
        coef, intercept = np.array(result.coef), np.array(result.intercept)
        coef[scored] = self.best_coef[scored]
        intercept[scored] = np.asarray(self.best_intercept)[scored]
        return dataclasses.replace(result, coef=coef, intercept=intercept)

    def table(self) -> np.ndarray:
        """(runs, iterations) of scores, NaN after a run ended."""
        out = np.full((len(self.scores), max(1, max(map(len, self.scores)))), np.nan)
        for k, row in enumerate(self.scores):
            out[k, :len(row)] = row
        return out


def _this_call(trace: np.ndarray) -> np.ndarray:
    """Entry 1 of each run's trace as a column (NaN for a run that was already at tol)."""
    if trace.shape[1] > 1:
        return trace[:, 1:2]
    return np.full((trace.shape[0], 1), np.nan)
