"""GDClassifierCV: the same choice of C as LogisticRegressionCV, fold scores equal to separate
fits, every fold x C in one engine call per class problem."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

import gradstep as gs
import gradstep.estimator as est
from gradstep import GDClassifier, GDClassifierCV
from gradstep.cv import path_memory


def _standardized(load):
    X, y = load(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _sklearn_cv(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs at max_iter=100 on the largest Cs
        return LogisticRegressionCV(scoring="accuracy", l1_ratios=(0.0,),
                                    use_legacy_attributes=True, **kwargs)


@pytest.mark.parametrize("load", [load_breast_cancer, load_digits])
def test_same_C_as_logistic_regression_cv(load):
    X, y = _standardized(load)
    ours = GDClassifierCV(Cs=10, cv=5).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _sklearn_cv(Cs=10, cv=5).fit(X, y)
    np.testing.assert_array_equal(ours.C_, theirs.C_)
    np.testing.assert_allclose(ours.Cs_, theirs.Cs_)
    key = list(theirs.scores_)[0]
    assert list(ours.scores_) == list(theirs.scores_)
    best = int(np.argmax(ours.scores_[key].mean(axis=0)))
    # at the chosen C both fitted the same fold models, scikit-learn's to its looser tol=1e-4
    # (digits: a held-out row or two lands on the other side): mean accuracies within 0.5%
    assert abs(ours.scores_[key][:, best].mean()
               - theirs.scores_[key][:, best, 0].mean()) <= 0.005
    assert ours.coef_.shape == theirs.coef_.shape
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), abs=0.005)


@pytest.mark.parametrize("multi_class", ["auto", "ovr"])
def test_scores_are_those_of_separate_fold_fits(multi_class):
    """Each fold x C run equals a GDClassifier fitted on that fold's training rows at that C,
    and its held-out score (log loss here, a continuous score) agrees to 1e-6."""
    X, y = _standardized(load_iris)
    Cs = [0.01, 1.0, 100.0]
    cv = GDClassifierCV(Cs=Cs, cv=3, scoring="neg_log_loss", tol=1e-10,
                        multi_class=multi_class).fit(X, y)
    scorer = get_scorer("neg_log_loss")
    for f, (train, test) in enumerate(StratifiedKFold(3).split(X, y)):
        for c, C in enumerate(Cs):
            one = GDClassifier(C=C, tol=1e-10, multi_class=multi_class)
            if multi_class == "auto":
                one.fit(X[train], y[train])
                assert cv.scores_[0][f, c] == pytest.approx(scorer(one, X[test], y[test]),
                                                            abs=1e-6)
                for k in range(3):
                    path = cv.coefs_paths_[k][f, c]
                    np.testing.assert_allclose(path[:-1], one.coef_[k], atol=1e-6)
                    np.testing.assert_allclose(path[-1], one.intercept_[k], atol=1e-6)
            else:  # each class its own binary problem, scored on its 0/1 labels
                for k in range(3):
                    yk = (y == k).astype(int)
                    one.fit(X[train], yk[train])
                    assert cv.scores_[k][f, c] == pytest.approx(
                        scorer(one, X[test], yk[test]), abs=1e-6)
                    np.testing.assert_allclose(cv.coefs_paths_[k][f, c, :-1], one.coef_[0],
                                               atol=1e-6)


@pytest.mark.parametrize("multi_class, n_classes, calls", [
    ("auto", 2, 2), ("auto", 3, 2), ("ovr", 3, 4)])
def test_one_engine_call_per_class_problem(monkeypatch, multi_class, n_classes, calls):
    X, y = _standardized(load_iris)
    if n_classes == 2:
        y = (y == 2).astype(int)
    seen = []
    real = est.fit

    def counting(*args, **kwargs):
        seen.append(np.shape(kwargs.get("sample_weight")))
        return real(*args, **kwargs)

    monkeypatch.setattr(est, "fit", counting)
    cv = GDClassifierCV(Cs=4, cv=3, multi_class=multi_class).fit(X, y)
    assert len(seen) == calls  # the cross-validation calls, then one refit
    assert all(shape == (150, 12) for shape in seen[:-1])  # 3 folds x 4 Cs as runs
    assert seen[-1] == (150,)
    keys = [1] if n_classes == 2 else [0, 1, 2]
    assert list(cv.scores_) == keys and list(cv.coefs_paths_) == keys
    assert all(cv.scores_[k].shape == (3, 4) for k in keys)
    assert all(cv.coefs_paths_[k].shape == (3, 4, 5) for k in keys)
    assert cv.n_iter_.shape == ((3 if multi_class == "ovr" else 1), 3, 4)
    assert cv.C_.shape == ((1,) if n_classes == 2 else (3,))
    assert cv.coef_.shape == ((1, 4) if n_classes == 2 else (3, 4))


def test_refit_false_averages_each_folds_best():
    X, y = _standardized(load_breast_cancer)
    cv = GDClassifierCV(Cs=5, cv=4, refit=False).fit(X, y)
    scores, paths = cv.scores_[1], cv.coefs_paths_[1]
    best = np.argmax(scores, axis=1)
    w = np.mean([paths[f, best[f]] for f in range(4)], axis=0)
    np.testing.assert_allclose(cv.coef_[0], w[:-1], rtol=0, atol=0)
    assert cv.intercept_[0] == w[-1]
    assert cv.C_[0] == pytest.approx(np.mean(cv.Cs_[best]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _sklearn_cv(Cs=5, cv=4, refit=False).fit(X, y)
    np.testing.assert_allclose(cv.C_, theirs.C_)


def test_ties_choose_the_first_best_as_logistic_regression_cv():
    # separable data: every C in the grid scores 100%, the first one wins
    X = np.array([[-2.0], [-1.5], [-1.0], [-0.5], [0.5], [1.0], [1.5], [2.0]] * 3)
    y = (X[:, 0] > 0).astype(int)
    Cs = [10.0, 1.0, 100.0]
    cv = GDClassifierCV(Cs=Cs, cv=3, max_iter=2000).fit(X, y)
    assert np.all(cv.scores_[1] == 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _sklearn_cv(Cs=Cs, cv=3).fit(X, y)
    assert cv.C_.tolist() == theirs.C_.tolist() == [10.0]


def test_sparse_and_sample_weight():
    X, y = _standardized(load_iris)
    X[np.abs(X) < 0.7] = 0.0
    sw = np.random.default_rng(0).uniform(0.5, 2.0, y.size)
    kept = sw.copy()
    dense = GDClassifierCV(Cs=3, cv=3, tol=1e-10).fit(X, y, sample_weight=sw)
    sparse = GDClassifierCV(Cs=3, cv=3, tol=1e-10).fit(sp.csr_array(X), y, sample_weight=sw)
    np.testing.assert_array_equal(sw, kept)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-8)
    np.testing.assert_allclose(sparse.scores_[0], dense.scores_[0], atol=1e-12)
    assert dense.C_.shape == (3,)


@pytest.mark.parametrize("params, match", [
    (dict(Cs=0), "Cs"), (dict(Cs=[1.0, -1.0]), "Cs"), (dict(l1_ratio=2.0), "l1_ratio"),
    (dict(multi_class="both"), "multi_class"), (dict(refit="yes"), "refit"),
    (dict(class_weight={7: 2.0}), "class_weight")])
def test_bad_parameters_name_themselves(params, match):
    X, y = _standardized(load_iris)
    with pytest.raises(ValueError, match=match):
        GDClassifierCV(cv=3, **params).fit(X, y)


def test_path_runs_keep_a_longer_lbfgs_memory():
    """Without an "m" in rule_params the folds x Cs runs keep up to 40 pairs, which takes the
    ill-conditioned largest Cs a few times fewer iterations to the same tol; an explicit m is
    used as given; both choose the same C with the same scores (at C = 1e4, nearly separable,
    the tol leaves room for one held-out row to fall on the other side)."""
    X, y = _standardized(load_breast_cancer)
    longer = GDClassifierCV(Cs=[1.0, 1e4], cv=3).fit(X, y)
    short = GDClassifierCV(Cs=[1.0, 1e4], cv=3, rule_params={"m": 10}).fit(X, y)
    assert longer.n_iter_[..., 1].max() < 0.6 * short.n_iter_[..., 1].max()
    np.testing.assert_array_equal(longer.C_, short.C_)
    np.testing.assert_array_equal(longer.scores_[1][:, 0], short.scores_[1][:, 0])
    np.testing.assert_allclose(longer.scores_[1][:, 1], short.scores_[1][:, 1], atol=1.5 / 189)
    assert path_memory(n_runs=50, n_params=31) == 40  # breast cancer: 0.5 MB of pairs
    assert path_memory(n_runs=50, n_params=20_001) == 10  # a wide sparse problem: the default


def test_exported():
    assert gs.GDClassifierCV is GDClassifierCV and "GDClassifierCV" in gs.__all__


@pytest.mark.parametrize("multi_class", ["auto", "ovr"])
def test_refit_is_the_plain_fit_at_C_(multi_class):
    X, y = _standardized(load_iris)
    cv = GDClassifierCV(Cs=4, cv=3, multi_class=multi_class).fit(X, y)
    if multi_class == "auto":
        one = GDClassifier(C=cv.C_[0]).fit(X, y)
        np.testing.assert_allclose(cv.coef_, one.coef_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cv.predict_proba(X), one.predict_proba(X), atol=1e-12)
    else:  # each class problem at its own C
        for k in range(3):
            one = GDClassifier(C=cv.C_[k]).fit(X, (y == k).astype(int))
            np.testing.assert_allclose(cv.coef_[k], one.coef_[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("load", [load_breast_cancer, load_iris])
def test_accuracy_by_name_scores_as_scikit_learns_scorer(load):
    """scoring="accuracy" takes the all-Cs-at-once path: the same scores as scikit-learn's
    accuracy scorer called per fold and C (a callable, so the per-C path), with sample weights."""
    X, y = _standardized(load)
    sw = np.random.default_rng(1).uniform(0.5, 2.0, y.size)
    scorer = get_scorer("accuracy")
    per_c = GDClassifierCV(Cs=4, cv=3, scoring=lambda *a, **k: scorer(*a, **k))
    by_name = GDClassifierCV(Cs=4, cv=3, scoring="accuracy")
    for kwargs in ({}, {"sample_weight": sw}):
        a, b = per_c.fit(X, y, **kwargs), by_name.fit(X, y, **kwargs)
        for key in a.scores_:
            np.testing.assert_allclose(b.scores_[key], a.scores_[key], rtol=1e-15, atol=0)
        assert b.C_.tolist() == a.C_.tolist()
