"""Limits and hostile input at the API: memory that grows with the iterations run, the largest
counts, clear errors for odd arguments, one pass over X per gradient, picklable state."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import gradstep as gs
from conftest import make_data
from gradstep import _validate


def test_history_grows_with_the_iterations_run_not_max_iter(data):
    X, y = data
    # before: max_iter=10**9 preallocated 37 GiB of history and raised MemoryError
    res = gs.fit(X, y, "lbfgs", max_iter=10**9, alpha=0.01)
    assert res.status == "converged"
    assert res.history.loss.shape == (res.n_iter + 1,)
    long = gs.fit(X, y, "sgd", lr=0.01, max_iter=2000, tol=None)  # grows past 256 entries
    assert long.history.loss.shape == (2001,)
    assert np.isfinite(long.history.loss).all()
    np.testing.assert_array_equal(long.history.passes, np.arange(1, 2002))


def test_largest_counts(data):
    X, y = data
    assert gs.fit(X, y, "lbfgs", max_iter=2**62, alpha=0.01).status == "converged"
    with pytest.raises(ValueError, match=r"max_iter must be at most 2\*\*62"):
        gs.fit(X, y, max_iter=2**63)
    with pytest.raises(ValueError, match="n_threads must be at most"):
        gs.fit(X, y, n_threads=2**31)
    with pytest.raises(ValueError, match="n_threads must be at most"):
        gs.loss_and_grad(X, y, np.zeros(X.shape[1]), n_threads=2**31)


@pytest.mark.parametrize("bad,dtype", [(["1", "2", "3", "4", "5"], "<U1"),
                                       ([1j, 0, 0, 0, 0], "complex128")])
def test_parameters_must_be_real_numbers(data, bad, dtype):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complex input used to warn and drop the imaginary part
        message = f"coef_init must hold real numbers, got dtype {dtype}"
        with pytest.raises(ValueError, match=message):
            gs.fit(X, y, coef_init=bad)
        with pytest.raises(ValueError, match="coef must hold real numbers"):
            gs.loss_and_grad(X, y, bad)


def test_non_finite_x_is_named_with_its_position(backend):
    X, y = make_data(n=50, d=3)
    X[7, 2] = np.nan
    for call in (lambda: gs.fit(X, y, "adam", backend=backend),
                 lambda: gs.fit(X, y, "sgd", lr="auto", backend=backend),
                 lambda: gs.loss_and_grad(X, y, np.zeros(3), backend=backend),
                 lambda: gs.hessp(X, y, np.zeros(3), 0.0, np.ones(3), backend=backend)):
        with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at row 7, "
                                             r"column 2: nan\)"):
            call()


def test_lr_auto_on_overflowing_x_is_a_clear_error():
    X = np.array([[1e300, 1.0], [1.0, 2.0], [3.0, 1.0]])
    with pytest.raises(ValueError, match="lr='auto' could not bound the curvature"):
        gs.fit(X, [0, 1, 1], "sgd", lr="auto")


def test_loss_and_grad_reads_x_once(monkeypatch, data):
    """The public gradient must not add a finiteness pass over X before the kernel's pass: the
    kernel's own sums prove X finite (a NaN or inf makes them non-finite)."""
    X, y = data
    checked = []
    real = _validate._finite_check
    monkeypatch.setattr(_validate, "_finite_check",
                        lambda a, name: checked.append(name) or real(a, name))
    gs.loss_and_grad(X, y, np.zeros(X.shape[1]))
    gs.hessp(X, y, np.zeros(X.shape[1]), 0.0, np.ones(X.shape[1]))
    gs.fit(X, y, "adam", max_iter=3)
    assert "X" not in checked


def test_partial_fit_state_pickles_and_copies(data):
    X, y = data
    clf = gs.GDClassifier(rule="adam", lr=0.05).partial_fit(X, y, classes=[0, 1])
    for clone in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        clone.partial_fit(X, y)
        clf_next = copy.deepcopy(clf).partial_fit(X, y)
        np.testing.assert_array_equal(clone.coef_, clf_next.coef_)


def test_warm_start_with_other_classes_or_features_says_so(data):
    X, y = data
    clf = gs.GDClassifier(warm_start=True).fit(X, y)
    three = np.arange(len(y)) % 3
    with pytest.raises(ValueError, match="warm_start=True, but the previous fit had 1 "):
        clf.fit(X, three)
    with pytest.raises(ValueError, match="warm_start=True.*5 features.*4"):
        clf.fit(X[:, :4], y)


def test_convergence_warning_names_the_fixes(data):
    X, y = data
    with pytest.warns(ConvergenceWarning, match="rule='lbfgs'.*smaller C") as record:
        gs.GDClassifier(rule="sgd", lr=1e-4, max_iter=3).fit(X, y)
    assert record[0].filename == __file__
