"""GDClassifier(early_stopping=True): a stratified held-out split as SGDClassifier's, the
patience rule, and the best-scoring weights kept."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from gradstep import GDClassifier

PATIENCE = 5


@pytest.fixture(scope="module")
def noisy():
    """Many noise features, few samples and flipped labels: an unpenalized fit overfits, so the
    held-out accuracy peaks early and then falls."""
    X, y = make_classification(n_samples=300, n_features=60, n_informative=4, n_classes=3,
                               n_clusters_per_class=1, flip_y=0.2, random_state=0)
    return X, y


def _split(X, y, seed=0, fraction=0.3):
    train, held = train_test_split(np.arange(y.size), test_size=fraction, stratify=y,
                                   random_state=seed)
    return np.sort(train), np.sort(held)


def _first_best(scores):
    return int(np.argmax(scores))  # the first maximum: later ties are no improvement


@pytest.mark.parametrize("binary", [True, False])
def test_keeps_the_best_weights_and_stops_after_patience(noisy, binary):
    X, y = noisy
    if binary:
        y = (y == 0).astype(int)
    params = dict(C=np.inf, random_state=0, max_iter=500)
    clf = GDClassifier(early_stopping=True, validation_fraction=0.3,
                       n_iter_no_change=PATIENCE, **params).fit(X, y)
    scores = clf.validation_scores_
    assert clf.status_ == "stopped"
    assert scores.shape == (clf.n_iter_[0],)
    best = _first_best(scores)
    # no improvement for PATIENCE iterations after the best one, then it stopped
    assert clf.n_iter_[0] == best + 1 + PATIENCE
    assert best < clf.n_iter_[0] - 1  # so keeping the best weights matters
    assert clf.best_validation_score_ == scores.max()
    train, held = _split(X, y)
    assert clf.score(X[held], y[held]) == pytest.approx(clf.best_validation_score_, abs=1e-12)
    # the same weights as a fit on the training rows alone, stopped at the best iteration
    # (L-BFGS's iterates do not depend on max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        at_best = GDClassifier(**{**params, "max_iter": best + 1}).fit(X[train], y[train])
        at_end = GDClassifier(**{**params, "max_iter": int(clf.n_iter_[0])}).fit(
            X[train], y[train])
    np.testing.assert_allclose(clf.coef_, at_best.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(clf.intercept_, at_best.intercept_, rtol=0, atol=1e-12)
    assert not np.allclose(clf.coef_, at_end.coef_)
    assert at_end.score(X[held], y[held]) < clf.best_validation_score_


def test_one_vs_rest_scores_each_binary_problem(noisy):
    X, y = noisy
    clf = GDClassifier(multi_class="ovr", C=np.inf, early_stopping=True,
                       validation_fraction=0.3, random_state=0).fit(X, y)
    scores = clf.validation_scores_
    assert scores.shape == (3, clf.n_iter_.max())
    train, held = _split(X, y)
    for k in range(3):
        row = scores[k, :clf.n_iter_[k]]
        assert not np.isnan(row).any() and np.isnan(scores[k, clf.n_iter_[k]:]).all()
        assert clf.best_validation_score_[k] == row.max()
        if clf.status_[k] == "stopped":
            assert clf.n_iter_[k] == _first_best(row) + 1 + PATIENCE
        # the kept weights score the best accuracy on class k against the rest
        z = X[held] @ clf.coef_[k] + clf.intercept_[k]
        accuracy = np.mean((z > 0) == (y[held] == k))
        assert accuracy == pytest.approx(row.max(), abs=1e-12)


def test_tol_none_never_stops_early(noisy):
    X, y = noisy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = GDClassifier(C=1.0, tol=None, max_iter=30, early_stopping=True,
                           random_state=0).fit(X, y)
    assert clf.status_ == "max_iter" and clf.validation_scores_.shape == (30,)


def test_seeded_split_and_sparse_input(noisy):
    X, y = noisy
    kwargs = dict(C=np.inf, early_stopping=True, random_state=3)
    a = GDClassifier(**kwargs).fit(X, y)
    b = GDClassifier(**kwargs).fit(sp.csr_array(X), y)
    np.testing.assert_array_equal(a.validation_scores_, b.validation_scores_)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-10)
    c = GDClassifier(**{**kwargs, "random_state": 4}).fit(X, y)
    assert not np.array_equal(a.coef_, c.coef_)  # another seed, another held-out part


def test_user_arrays_are_untouched(noisy):
    X, y = noisy
    sw = np.linspace(0.5, 2.0, y.size)
    kept = (X.copy(), y.copy(), sw.copy())
    GDClassifier(early_stopping=True, random_state=0).fit(X, y, sample_weight=sw)
    for now, before in zip((X, y, sw), kept):
        np.testing.assert_array_equal(now, before)


@pytest.mark.parametrize("params, match", [
    (dict(validation_fraction=0.0), "validation_fraction"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(validation_fraction="0.1"), "validation_fraction"),
    (dict(n_iter_no_change=0), "n_iter_no_change"),
    (dict(early_stopping="yes"), "early_stopping")])
def test_bad_parameters_name_themselves(noisy, params, match):
    X, y = noisy
    with pytest.raises(ValueError, match=match):
        GDClassifier(**{"early_stopping": True, **params}).fit(X, y)


def test_too_few_samples_per_class_for_the_split():
    X = np.arange(12, dtype=float).reshape(6, 2)
    y = np.array([0, 0, 0, 0, 0, 1])  # one sample of class 1 cannot be on both sides
    with pytest.raises(ValueError, match="validation_fraction=0.5.*early_stopping=False"):
        GDClassifier(early_stopping=True, validation_fraction=0.5).fit(X, y)
