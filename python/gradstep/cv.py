"""GDClassifierCV: logistic regression with C chosen by cross-validation, as scikit-learn's
``LogisticRegressionCV``, with every fold and every C fitted in ONE batched engine call.

A fold is a run whose sample weights are 0 outside its training rows (a 2-D sample_weight of
shape (n, folds x Cs)), and each C is that run's alpha = 1 / (C * the fold's weight sum), so all
folds x Cs runs share every pass over X (one call per one-vs-rest problem; one call in all for
binary and multinomial problems). The held-out rows of each fold are then scored for every C.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import get_scorer, make_scorer
from sklearn.model_selection import check_cv
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, validate_data

from .api import warn
from .estimator import LinearClassifierMixin, engine_fit
from .penalty import check_l1_ratio

# The L-BFGS memory of the path's runs when rule_params does not set one: as long as m pairs of
# every fold x C run take at most PATH_PAIRS_BYTES, up to PATH_LBFGS_M (down to the rule's own
# 10). The largest Cs are the ill-conditioned runs and a longer memory cuts their iterations
# most: breast cancer at C = 1e4, tol 1e-6, 912 iterations with m = 10, 529 with 20, 229 with 40;
# GDClassifierCV there 606 -> 179 ms, with the same C_ and scores. The two-loop recursion costs
# 4 m D per run and iteration, small next to a pass over X at these sizes.
PATH_LBFGS_M = 40
PATH_PAIRS_BYTES = 32 * 2**20


def path_memory(n_runs: int, n_params: int) -> int:
    """The lbfgs memory m for n_runs runs of n_params parameters (see PATH_PAIRS_BYTES)."""
    fits = PATH_PAIRS_BYTES // max(1, 2 * n_runs * n_params * 8)
    return int(min(PATH_LBFGS_M, max(10, fits)))


class GDClassifierCV(LinearClassifierMixin, ClassifierMixin, BaseEstimator):
    """Logistic regression whose C is chosen by cross-validation, as ``LogisticRegressionCV``.

    All folds x all Cs are fitted in one batched ``gradstep.fit`` call (per one-vs-rest
    problem): a fold is a run whose weights are 0 outside its training rows, so the runs
    share every pass over X. Each fold's held-out rows are scored with every C; C_ is the C
    of the best mean score (the smallest C on ties, as ``LogisticRegressionCV``), and the model
    is refitted on all the data at C_.

    Parameters
    ----------
    Cs : int or array-like of float, default 10
        The grid of C (inverse regularization: alpha = 1 / (C * sum of the training weights));
        an int n is ``np.logspace(-4, 4, n)``.
    cv : int, cross-validation generator or iterable, default 5
        As ``LogisticRegressionCV``: an int is ``StratifiedKFold(cv)`` (scikit-learn's
        ``check_cv`` for classifiers).
    rule : str or StepRule, default "lbfgs"
        The step rule of every run (see ``GDClassifier``).
    lr : float, "auto" or None, default None
        The learning rate of a first-order rule.
    l1_ratio : float, default 0.0
        The penalty's L1 share: alpha * (l1_ratio ||w||_1 + (1 - l1_ratio)/2 ||w||^2).
    scoring : str, callable or None, default None
        None or "accuracy" is accuracy, all Cs of a fold scored at once; otherwise
        scikit-learn's ``get_scorer(scoring)``, called once per fold and C.
    refit : bool, default True
        Refit on all the data at C_; False averages the folds' coefficients, each at its
        fold's best C (C_ is then the mean of those Cs), as ``LogisticRegressionCV``.
    fit_intercept : bool, default True
    max_iter : int, default 2000
        Per run. The largest Cs on nearly separable data need about 1000 L-BFGS iterations
        at tol=1e-6 with lbfgs's 10 pairs (breast cancer at C=1e4: 930 to 1120, as rounding
        steers the run), about 230 with the 40 the path's runs keep where they fit (see
        rule_params); hence more than GDClassifier's 1000, for the wide problems that keep 10.
    tol : float, default 1e-6
        A run stops when max |gradient| <= tol; tight enough that the folds' scores are those
        of the exact minimizers.
    class_weight : dict, "balanced" or None
        "balanced" is computed once from all of y (and the sample weights).
    multi_class : {"auto", "multinomial", "ovr"}, default "auto"
        "auto" is multinomial for more than two classes (as ``LogisticRegressionCV``); "ovr"
        chooses a C per class problem.
    backend : "auto", "cpp", "numba" or "numpy"
    n_threads : int or None (all cores)
    random_state : int, Generator or None
        Seeds mini-batches (first-order rules with batch_size in rule_params only).
    rule_params : dict or None
        The rule's own parameters (see ``GDClassifier``). For ``rule="lbfgs"`` without an
        ``"m"``, the folds x Cs runs keep m = 40 pairs where all their pairs fit in 32 MiB (down
        to lbfgs's own 10 for large problems): the largest Cs then take a few times fewer
        iterations (``cv.path_memory``). The refit is ``GDClassifier(C=C_)``'s fit, with
        ``rule_params`` as given.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    Cs_ : ndarray of shape (n_cs,)
    C_ : ndarray of shape (1,) for two classes, (n_classes,) otherwise
        The chosen C (repeated per class for multinomial; per class problem for "ovr").
    scores_ : dict
        Class -> (n_folds, n_cs) scores of the held-out rows (for two classes one key, the
        positive class; the same array for every class of a multinomial model).
    coefs_paths_ : dict
        Class -> (n_folds, n_cs, n_features + fit_intercept) coefficients (intercept last).
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_ : ndarray of shape (1, n_folds, n_cs), or (n_classes, n_folds, n_cs) for "ovr"
    n_features_in_ : int
    feature_names_in_ : ndarray, when X has feature names

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> import gradstep as gs
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> clf = gs.GDClassifierCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=3).fit(X, y)  # 12 runs, 1 call
    >>> clf.scores_[1].shape, clf.coefs_paths_[1].shape   # (folds, Cs), (folds, Cs, d + 1)
    ((3, 4), (3, 4, 31))
    >>> clf.C_
    array([1.])
    """

    def __init__(self, Cs=10, cv=5, rule="lbfgs", lr=None, l1_ratio=0.0, scoring=None,
                 refit=True, fit_intercept=True, max_iter=2000, tol=1e-6, class_weight=None,
                 multi_class="auto", backend="auto", n_threads=None, random_state=None,
                 rule_params=None):
        self.Cs = Cs
        self.cv = cv
        self.rule = rule
        self.lr = lr
        self.l1_ratio = l1_ratio
        self.scoring = scoring
        self.refit = refit
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.multi_class = multi_class
        self.backend = backend
        self.n_threads = n_threads
        self.random_state = random_state
        self.rule_params = rule_params

    # ---- checks ----------------------------------------------------------------------------

    def _grid(self) -> np.ndarray:
        if isinstance(self.Cs, numbers.Integral) and not isinstance(self.Cs, bool):
            if self.Cs < 1:
                raise ValueError(f"Cs must be a positive int or a sequence of positive "
                                 f"floats, got {self.Cs!r}")
            return np.logspace(-4, 4, int(self.Cs))
        try:
            grid = np.array(self.Cs, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"Cs must be an int or a sequence of positive floats, got "
                             f"{self.Cs!r}") from None
        if grid.ndim != 1 or grid.size == 0 or np.isnan(grid).any() or (grid <= 0).any():
            raise ValueError(f"Cs must be an int or a non-empty 1-D sequence of positive "
                             f"floats (np.inf: no penalty), got {self.Cs!r}")
        return grid

    def _l1_ratio(self) -> float:
        ratio = check_l1_ratio(self.l1_ratio)
        if ratio.ndim:
            raise ValueError(f"l1_ratio must be one number in [0, 1], got {self.l1_ratio!r}")
        return float(ratio)

    def _multinomial(self) -> bool:
        if self.multi_class not in ("auto", "multinomial", "ovr"):
            raise ValueError(f"multi_class must be 'auto', 'multinomial' or 'ovr', got "
                             f"{self.multi_class!r}")
        return self.multi_class != "ovr" and self.classes_.size > 2

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Cross-validate every C on every fold (one batched engine call per class problem),
        choose C_, and refit.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional
            Multiplies each fold's training weights, and weighs the held-out scores.

        Returns
        -------
        self
        """
        Cs = self._grid()
        l1_ratio = self._l1_ratio()
        if not isinstance(self.refit, (bool, np.bool_)):
            raise ValueError(f"refit must be True or False, got {self.refit!r}")
        # "accuracy" by name is the fast path's score (all Cs of a fold from one product, the
        # weighted share of right predictions): scikit-learn's scorer, called once per fold and C,
        # validates its inputs each time (breast cancer, 50 calls: ~75 of ~150 ms).
        named_accuracy = isinstance(self.scoring, str) and self.scoring == "accuracy"
        scorer = None if self.scoring is None or named_accuracy else get_scorer(self.scoring)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], order="C",
                             accept_sparse="csr", accept_large_sparse=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"y has only one class ({self.classes_[0]!r}); a classifier "
                             "needs at least two classes to fit")
        softmax = self._multinomial()
        self._softmax = softmax
        folds = list(check_cv(self.cv, y, classifier=True).split(X, y))
        user_sw = None if sample_weight is None else _check_sample_weight(sample_weight, X)
        sw = np.ones(X.shape[0]) if user_sw is None else user_sw.copy()
        sw *= self._class_weights(y, user_sw)[codes]
        n_folds, n_cs, n = len(folds), Cs.size, X.shape[0]
        # run f * n_cs + c: fold f's training rows (weights sw), 0 elsewhere; alpha of C_c
        W = np.zeros((n, n_folds * n_cs))
        alphas = np.empty(n_folds * n_cs)
        for f, (train, _) in enumerate(folds):
            W[train, f * n_cs:(f + 1) * n_cs] = sw[train, None]
            total = float(sw[train].sum())
            if total <= 0.0:
                raise ValueError(f"cv: fold {f} has no training row with a positive weight; "
                                 "use fewer folds or positive sample weights")
            alphas[f * n_cs:(f + 1) * n_cs] = [0.0 if math.isinf(C) else 1.0 / (C * total)
                                               for C in Cs]
        engine = dict(lr=self.lr, fit_intercept=self.fit_intercept, max_iter=self.max_iter,
                      tol=self.tol, random_state=self.random_state, backend=self.backend,
                      n_threads=self.n_threads, l1_ratio=l1_ratio, **dict(self.rule_params or {}))
        n_classes = self.classes_.size
        # the refit keeps engine: exactly GDClassifier(C=C_)'s fit. The path runs record no
        # history (nothing reads it; breast cancer at the default tol, 296 rounds: 178 -> 156 ms)
        path_engine = dict(engine, history=False)
        if self.rule == "lbfgs" and "m" not in engine:
            n_params = (X.shape[1] + 1) * (n_classes if softmax else 1)
            path_engine["m"] = path_memory(n_folds * n_cs, n_params)
        # problems: one multinomial (target: class codes), or one 0/1 column per binary problem
        if softmax:
            problems = [codes]
        elif n_classes == 2:
            problems = [(codes == 1).astype(np.float64).reshape(-1, 1)]
        else:
            problems = [(codes == c).astype(np.float64).reshape(-1, 1) for c in range(n_classes)]
        d = X.shape[1]
        n_dof = d + int(bool(self.fit_intercept))
        paths, scores, n_iters, statuses = [], [], [], []
        for target in problems:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = engine_fit(X, target, self.rule, softmax=softmax, n_classes=n_classes,
                                 alpha=alphas, sample_weight=W, **path_engine)
            coef = np.asarray(res.coef)  # (K, d) binary, (K, C, d) multinomial
            intercept = np.asarray(res.intercept)
            statuses.append(np.asarray(res.status))
            n_iters.append(np.asarray(res.n_iter).reshape(n_folds, n_cs))
            score = np.empty((n_folds, n_cs))
            for f, (_, test) in enumerate(folds):
                runs = slice(f * n_cs, (f + 1) * n_cs)
                score[f] = self._score_fold(
                    X[test], codes[test] if softmax or n_classes == 2 else target[test, 0],
                    None if user_sw is None else user_sw[test], coef[runs], intercept[runs],
                    softmax, binary_problem=not softmax and n_classes > 2, scorer=scorer,
                    y_labels=y[test])
            scores.append(score)
            path = np.concatenate([coef, intercept[..., None]], axis=-1)[..., :n_dof]
            paths.append(path.reshape((n_folds, n_cs) + path.shape[1:]))
        self.Cs_ = Cs
        self._check_runs(np.concatenate(statuses))
        keys = self.classes_[1:] if n_classes == 2 else self.classes_
        if softmax:  # (folds, Cs, C, dof) -> one (folds, Cs, dof) per class; one score grid
            self.coefs_paths_ = {k: paths[0][:, :, c] for c, k in enumerate(keys)}
            self.scores_ = {k: scores[0] for k in keys}
        else:
            self.coefs_paths_ = dict(zip(keys, paths))
            self.scores_ = dict(zip(keys, scores))
        self.n_iter_ = np.stack(n_iters).astype(np.int64)
        self._choose(X, codes, sw, softmax, problems, engine, d)
        return self

    def _class_weights(self, y, user_sw) -> np.ndarray:
        """The weight of each class (as ``LogisticRegressionCV``: "balanced" from all of y)."""
        if self.class_weight is None:
            return np.ones(self.classes_.size)
        if isinstance(self.class_weight, dict):
            unknown = set(self.class_weight) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(f"class_weight has keys {sorted(unknown, key=str)} that are "
                                 f"not classes of y ({self.classes_.tolist()})")
        return compute_class_weight(self.class_weight, classes=self.classes_, y=y,
                                    sample_weight=user_sw)

    def _score_fold(self, X_test, target, sw_test, coef, intercept, softmax, *,
                    binary_problem, scorer, y_labels) -> np.ndarray:
        """The held-out score of each C's weights (coef (n_cs, d) or (n_cs, C, d))."""
        if scorer is None:  # accuracy, all Cs at once
            if softmax:
                Z = np.stack([np.asarray(X_test @ w.T) + b for w, b in zip(coef, intercept)])
                right = Z.argmax(axis=2) == target[None, :]
            else:
                Z = np.asarray(X_test @ coef.T) + intercept  # (m, n_cs)
                right = (Z > 0) == (target[:, None] == 1)
                right = right.T
            weights = np.ones(right.shape[1]) if sw_test is None else sw_test
            return (right * weights).sum(axis=1) / weights.sum()
        labels = np.array([0, 1]) if binary_problem else self.classes_
        y_true = target.astype(int) if binary_problem else y_labels
        scoring = _with_labels(scorer, labels)
        kwargs = {} if sw_test is None else {"sample_weight": sw_test}
        out = np.empty(coef.shape[0])
        for c in range(coef.shape[0]):
            model = _fixed_model(coef[c], intercept[c], labels, softmax)
            out[c] = scoring(model, X_test, y_true, **kwargs)
        return out

    def _check_runs(self, status: np.ndarray) -> None:
        if (status == "diverged").any():
            raise ValueError(
                f"GDClassifierCV: a run of rule {self.rule!r} diverged; use rule='lbfgs' or a "
                "smaller lr, and scale X (StandardScaler)")
        late = int((status == "max_iter").sum())
        if late:
            warn(f"GDClassifierCV: {late} of {status.size} fold x C runs stopped at "
                 f"max_iter={self.max_iter} before max |gradient| <= tol={self.tol}; their "
                 "scores may not be those of the fitted model. Increase max_iter, scale X "
                 "(StandardScaler), or leave out the largest Cs.", ConvergenceWarning)

    def _choose(self, X, codes, sw, softmax, problems, engine, d) -> None:
        """C_, coef_ and intercept_: refit at the best mean score, or the folds' average."""
        keys = list(self.scores_)
        n_folds = self.n_iter_.shape[1]
        per_problem = [self.scores_[k] for k in keys] if not softmax else [self.scores_[keys[0]]]
        if self.refit:
            # the first best of the summed scores: the smallest C among ties
            best = [int(np.argmax(s.sum(axis=0))) for s in per_problem]
            C_best = self.Cs_[best]
            total = float(sw.sum())
            alpha = [0.0 if math.isinf(C) else 1.0 / (C * total) for C in C_best]
            target = problems[0] if softmax else np.hstack(problems)
            # from zero, not from the folds' mean: the refit is then GDClassifier(C=C_)'s fit
            # exactly, whatever the folds (so weights and repeated rows give the same model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = engine_fit(X, target, self.rule, softmax=softmax,
                                 n_classes=self.classes_.size, alpha=alpha, sample_weight=sw,
                                 **engine)
            self._check_runs(np.asarray(res.status))
            coef = np.asarray(res.coef)
            intercept = np.asarray(res.intercept)
            coef, intercept = (coef[0], intercept[0]) if softmax else (coef, intercept)
        else:
            # each fold's best C, then the average of those folds' weights
            C_best, ws = [], []
            for k, s in zip(keys if not softmax else keys[:1], per_problem):
                best = np.argmax(s, axis=1)
                C_best.append(float(np.mean(self.Cs_[best])))
                if softmax:
                    ws.append(np.mean(np.stack([np.stack([self.coefs_paths_[c][f, best[f]]
                                                          for c in keys])
                                                for f in range(n_folds)]), axis=0))
                else:
                    ws.append(np.mean([self.coefs_paths_[k][f, best[f]]
                                       for f in range(n_folds)], axis=0))
            w = ws[0] if softmax else np.stack(ws)
            coef = w[..., :d]
            intercept = w[..., d] if self.fit_intercept else np.zeros(w.shape[0])
            C_best = np.asarray(C_best)
        n_classes = self.classes_.size
        self.C_ = np.repeat(np.asarray(C_best, dtype=np.float64)[:1], n_classes) if softmax \
            else np.asarray(C_best, dtype=np.float64)
        self.coef_ = np.ascontiguousarray(np.atleast_2d(coef), dtype=np.float64)
        self.intercept_ = np.atleast_1d(np.asarray(intercept, dtype=np.float64)).copy()
        if n_classes == 2 and self.C_.shape != (1,):
            self.C_ = self.C_[:1]


def _fixed_model(coef, intercept, classes, softmax: bool):
    """A GDClassifier holding given weights (as if fitted), for a scorer to call predict,
    predict_proba or decision_function on a fold's held-out rows."""
    from .estimator import GDClassifier

    model = GDClassifier()
    model._softmax = softmax
    model.classes_ = classes
    model.coef_ = np.atleast_2d(coef)
    model.intercept_ = np.atleast_1d(intercept)
    model.n_features_in_ = model.coef_.shape[1]
    return model


def _with_labels(scorer, labels):
    """The scorer with ``labels=`` (and the positive label) given, as ``LogisticRegressionCV``
    does: a fold's held-out rows may lack a class, and scores such as log loss must still
    know every class."""
    func = getattr(scorer, "_score_func", None)
    if func is None:
        return scorer
    params = inspect.signature(func).parameters
    if "labels" not in params:
        return scorer
    extra = {"pos_label": labels[-1]} if len(labels) <= 2 and "pos_label" in params else {}
    return make_scorer(func, greater_is_better=scorer._sign == 1,
                       response_method=scorer._response_method, labels=labels, **extra,
                       **getattr(scorer, "_kwargs", {}))
