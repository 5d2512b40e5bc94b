"""driver.SplitDriver: the runs of one fit on a small X split by the driver each would get
alone (first-order runs in the compiled loop, each lbfgs run in the compiled lbfgs loop, the
rest in the reference rounds) end as the reference driver's rounds end all of them together."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import gradstep as gs
from conftest import _require, fit_recording_drivers, make_data
from gradstep import driver

# first-order runs not adjacent (their group's rows are copies), curvature runs between them
RULES = ["sgd", "bb", "adam", "lbfgs", "newton", "normalized", "armijo", "lbfgs", "momentum"]
LR = [1.0, None, 0.05, None, None, 0.05, None, None, 0.5]


@pytest.fixture(autouse=True)
def _cpp():
    _require("cpp")


def _fit(X, y, split: bool, monkeypatch, rules=RULES, **kw):
    """gs.fit through SplitDriver (which it must choose) or, split=False, the reference
    driver's rounds for every run."""
    result, made = fit_recording_drivers(monkeypatch, X, y, rules, backend="cpp",
                                         refuse=() if split else ("_split",), **kw)
    assert made == ["SplitDriver" if split else "ReferenceDriver"]
    return result


def _assert_same_runs(a, b):
    assert list(a.status) == list(b.status)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-9)
    np.testing.assert_allclose(b.coef, a.coef, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.intercept, a.intercept, rtol=0, atol=1e-6)
    # a line search may decide a rounding-level tie the other way near the end
    assert np.all(np.abs(a.n_iter - b.n_iter) <= 2)
    assert np.all(np.abs(a.passes - b.passes) <= 4)
    for k in range(len(a.status)):
        n = int(min(a.n_iter[k], b.n_iter[k])) // 2
        np.testing.assert_allclose(b.history.loss[k][:n], a.history.loss[k][:n], rtol=1e-10)
        np.testing.assert_allclose(b.history.passes[k][:n], a.history.passes[k][:n])


@pytest.mark.parametrize("data", ["dense", "csr"])
def test_mixed_rules_follow_the_reference(monkeypatch, data):
    X, y = make_data(n=300, d=8, seed=3)
    if data == "csr":
        X = sp.csr_matrix(np.where(np.abs(X) < 0.5, 0.0, X))
    n_runs = len(RULES)
    rng = np.random.default_rng(1)
    kw = dict(lr=LR, alpha=list(np.geomspace(1e-3, 1e-1, n_runs)), tol=1e-8, max_iter=300,
              sample_weight=(rng.random((300, n_runs)) < 0.8) * 1.0)
    a = _fit(X, y, False, monkeypatch, **kw)
    b = _fit(X, y, True, monkeypatch, **kw)
    _assert_same_runs(a, b)
    assert "converged" in set(b.status) and "max_iter" in set(b.status)


def test_l1_runs_follow_the_reference(monkeypatch):
    # proximal first-order steps in the compiled loop, OWL-QN, proximal armijo in the rounds
    X, y = make_data(n=250, d=10, seed=4)
    rules = ["adam", "lbfgs", "armijo", "sgd", "lbfgs"]
    kw = dict(lr=[0.05, None, None, 1.0, None], alpha=[0.05, 0.02, 0.05, 0.05, 0.01],
              l1_ratio=[1.0, 0.5, 1.0, 0.0, 1.0], tol=1e-8, max_iter=400)
    a = _fit(X, y, False, monkeypatch, rules=rules, **kw)
    b = _fit(X, y, True, monkeypatch, rules=rules, **kw)
    _assert_same_runs(a, b)
    np.testing.assert_array_equal(b.coef == 0.0, a.coef == 0.0)
    assert (b.coef == 0.0).any()


def test_multinomial_runs_follow_the_reference(monkeypatch):
    X, y = make_data(n=240, d=5, seed=5)
    y = y + (X[:, 0] > 0.7)  # three classes
    rules = ["lbfgs", "bb", "lbfgs"]
    kw = dict(alpha=[1e-3, 1e-2, 1e-1], tol=1e-8, max_iter=300, loss="multinomial")
    _assert_same_runs(_fit(X, y, False, monkeypatch, rules=rules, **kw),
                      _fit(X, y, True, monkeypatch, rules=rules, **kw))


def test_one_round_at_a_time_and_a_stopping_callback(monkeypatch):
    X, y = make_data(n=200, d=6, seed=2)
    kw = dict(lr=LR, alpha=0.01, tol=1e-9, max_iter=200)
    whole = _fit(X, y, True, monkeypatch, **kw)
    steps = _fit(X, y, True, monkeypatch, monitor=lambda progress: None, **kw)
    np.testing.assert_array_equal(steps.coef, whole.coef)
    np.testing.assert_array_equal(steps.history.loss, whole.history.loss)
    np.testing.assert_array_equal(steps.passes, whole.passes)
    # a callback that stops the fit at its first report: every running run says "stopped"
    stopped = _fit(X, y, True, monkeypatch, callback=lambda progress: False,
                   **dict(kw, max_iter=100_000, tol=0.0))
    assert set(stopped.status) == {"stopped"}
    assert np.all(stopped.n_iter < 100_000)


def test_the_split_only_where_it_pays(monkeypatch):
    X, y = make_data(n=200, d=4)

    def name(*args, **kw):
        return fit_recording_drivers(monkeypatch, *args, max_iter=3, **kw)[1][0]

    assert name(X, y, ["sgd", "adam"], lr=0.1, backend="cpp") == "CompiledDriver"
    assert name(X, y, ["sgd", "bb"], lr=[0.1, None], backend="cpp") == "SplitDriver"

    class MyBB(gs.BB):  # no compiled loop for a subclass: the reference rounds, one group
        pass

    assert name(X, y, [MyBB(), MyBB()], backend="cpp") == "ReferenceDriver"
    assert name(X, y, ["sgd", "bb"], lr=[0.1, None], backend="numpy") == "ReferenceDriver"
    monkeypatch.setattr(driver, "SPLIT_MAX_WORK", X.size - 1)  # a larger X: shared passes
    assert name(X, y, ["sgd", "bb"], lr=[0.1, None], backend="cpp") == "ReferenceDriver"


@pytest.mark.parametrize("data", ["dense", "csr", "multinomial"])
def test_a_group_drops_the_samples_it_weighs_zero(data):
    # a fold's held-out rows weigh 0 in its runs: the group's oracle leaves them out, and its
    # loss and gradient are the full oracle's for those runs (to rounding: other blocks)
    from gradstep.api import _one_pass_oracle

    X, y = make_data(n=200, d=6, seed=7)
    if data == "csr":
        X = sp.csr_matrix(np.where(np.abs(X) < 0.4, 0.0, X))
    loss = "logistic"
    if data == "multinomial":
        y, loss = y + (X[:, 1] > 0.5), "multinomial"
    rng = np.random.default_rng(3)
    SW = (rng.random((200, 3)) < 0.7) * rng.random((200, 3))
    SW[:50, 1] = 0.0
    oracle = _one_pass_oracle(X, y, SW, [0.1, 0.01, 0.001], "cpp", None, loss, None)
    D = oracle.n_params if hasattr(oracle, "n_params") else 7
    P = rng.standard_normal((3, D))
    oracle.loss_grad(P, np.ones(3, np.uint8))  # the first pass proves a CSR's structure
    for rows, keep in ((slice(1, 2), SW[:, 1] > 0), (np.array([0, 2]), (SW[:, [0, 2]] > 0).any(1))):
        part = driver._oracle_rows(oracle, rows, 3)
        assert part.n_samples == keep.sum() < 200
        assert part.X.shape[0] == keep.sum()
        loss_all, G_all = oracle.loss_grad(P, np.ones(3, np.uint8))
        loss_part, G_part = part.loss_grad(np.ascontiguousarray(P[rows]),
                                           np.ones(len(part.alpha), np.uint8))
        np.testing.assert_allclose(loss_part, loss_all[rows], rtol=1e-12)
        np.testing.assert_allclose(G_part, G_all[rows], rtol=1e-10, atol=1e-14)
    assert oracle.X.shape[0] == 200  # the fit's own oracle keeps every row
    # groups that weigh the same samples share one cut of X (a CV fold's runs); others do not
    SW[:, 2] = SW[:, 0]
    oracle = _one_pass_oracle(X, y, SW, [0.1, 0.01, 0.001], "cpp", None, loss, None)
    oracle.loss_grad(P, np.ones(3, np.uint8))
    taken: dict = {}
    first, same, other = (driver._oracle_rows(oracle, rows, 3, taken)
                          for rows in (slice(0, 1), slice(2, 3), slice(1, 2)))
    assert same.X is first.X and other.X is not first.X
    np.testing.assert_array_equal(_dense(same.X), _dense(X)[SW[:, 2] > 0])
    np.testing.assert_array_equal(_dense(other.X), _dense(X)[SW[:, 1] > 0])


def _dense(X):
    return X.toarray() if sp.issparse(X) else X


@pytest.mark.parametrize("data", ["dense", "csr", "multinomial"])
def test_side_by_side_gives_the_bits_of_one_after_another(monkeypatch, data):
    # with two threads the compiled groups run on a thread each (one kernel thread each); a
    # kernel's bits do not depend on its threads, so the fit's are those of the groups run one
    # after another with both threads each
    from gradstep._backends import cpp, softmax_cpp, sparse_cpp

    X, y = make_data(n=300, d=8, seed=11)
    rules, lr, kw = RULES, LR, {}
    if data == "csr":
        X = sp.csr_matrix(np.where(np.abs(X) < 0.5, 0.0, X))
    if data == "multinomial":
        y = y + (X[:, 0] > 0.7)
        rules, lr, kw = ["lbfgs", "bb", "lbfgs", "newton"], None, dict(loss="multinomial")
    kw.update(lr=lr, alpha=list(np.geomspace(1e-3, 1e-1, len(rules))), tol=1e-9, max_iter=300,
              n_threads=2)
    calls = []
    run_side_by_side = driver._run_side_by_side
    monkeypatch.setattr(driver, "_run_side_by_side",
                        lambda drivers, n, workers: (calls.append((len(drivers), workers)),
                                                     run_side_by_side(drivers, n, workers)))
    side = _fit(X, y, True, monkeypatch, rules=rules, **kw)
    assert calls and calls[0] == (sum(r in ("lbfgs", "bb", "newton", "armijo") for r in rules)
                                  + (data != "multinomial"), 2)
    for module in (cpp, sparse_cpp, softmax_cpp):
        monkeypatch.setattr(module, "SIDE_BY_SIDE", False)
    calls.clear()
    serial = _fit(X, y, True, monkeypatch, rules=rules, **kw)
    assert not calls
    for field in ("coef", "intercept", "loss", "n_iter", "passes", "status"):
        np.testing.assert_array_equal(getattr(side, field), getattr(serial, field))
    np.testing.assert_array_equal(side.history.loss, serial.history.loss)


def test_side_by_side_raises_a_group_error_in_the_caller(monkeypatch):
    X, y = make_data(n=200, d=6, seed=2)
    ran = []

    def fail(self, n_steps):
        ran.append(self)
        raise RuntimeError("group failed")

    monkeypatch.setattr(driver.CompiledCurvatureDriver, "run", fail)
    with pytest.raises(RuntimeError, match="group failed"):
        gs.fit(X, y, ["lbfgs", "bb", "newton"], alpha=0.01, backend="cpp", n_threads=2)
    # a thread that saw a group fail started no other: each of the two threads ran at most one
    # (the second may see the first's failure before it takes one), the third group never ran
    assert 1 <= len(ran) <= 2 and len(set(ran)) == len(ran)
