"""The compiled armijo, bb and newton loops (backtrack_loop.hpp, driver.CompiledCurvatureDriver)
against the reference driver they replace for a single run on a dense or CSR X with the C++
backend: the same iterations, passes, statuses and history, iterates equal to rounding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradstep as gs
from conftest import _require, fit_recording_drivers, make_data
from test_lbfgs_loop import _assert_same_run, _csr, _driver_used, _iris, random_problem


@pytest.fixture(autouse=True)
def _cpp():
    _require("cpp")


def _fit(X, y, rule, compiled: bool, monkeypatch, **kw):
    """gs.fit of one run of rule (backend cpp) through CompiledCurvatureDriver (which it must
    choose) or, compiled=False, the reference driver."""
    result, made = fit_recording_drivers(
        monkeypatch, X, y, rule, backend="cpp",
        refuse=() if compiled else ("_compiled_curvature",), **kw)
    assert made == ["CompiledCurvatureDriver" if compiled else "ReferenceDriver"]
    return result


RULES = {
    "armijo": gs.Armijo(),
    "armijo tuned": gs.Armijo(lr=4.0, c1=0.3, shrink=0.7, grow=1.5),
    "bb": gs.BB(),  # lr=None: the probe pass
    "bb short": gs.BB(variant="short", window=3, lr=0.5),
    "bb alternate": gs.BB(variant="alternate", window=1),
    "newton": gs.Newton(),
    "newton truncated": gs.Newton(cg_tol=0.5, max_cg=3, lr=0.8),
}


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("data", ["dense", "float32", "csr", "multinomial", "csr multinomial"])
def test_loop_follows_the_reference(monkeypatch, name, data):
    if "multinomial" in data:
        X, y = _iris()
        kw = dict(loss="multinomial")
    else:
        X, y = make_data(n=400, d=8, seed=3)
        kw = {}
    if data == "float32":
        X = X.astype(np.float32)
    if "csr" in data:
        X = _csr(X, np.int32 if data == "csr" else np.int64)
    kw.update(alpha=1e-2, tol=1e-7, max_iter=3000)
    a = _fit(X, y, [RULES[name]], False, monkeypatch, **kw)
    b = _fit(X, y, [RULES[name]], True, monkeypatch, **kw)
    assert a.status[0] == "converged"
    _assert_same_run(_one(a), _one(b), coef_atol=1e-6)


@pytest.mark.parametrize("rule", ["armijo", "bb", "newton"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_weights_and_no_intercept(monkeypatch, rule, fit_intercept):
    X, y = make_data(n=300, d=6, seed=9)
    sw = np.random.default_rng(2).uniform(0.2, 2.0, len(y))
    kw = dict(alpha=1e-2, tol=1e-8, sample_weight=sw, fit_intercept=fit_intercept)
    a = _fit(X, y, rule, False, monkeypatch, **kw)
    b = _fit(X, y, rule, True, monkeypatch, **kw)
    _assert_same_run(a, b, coef_atol=1e-7)
    if not fit_intercept:
        assert b.intercept == 0.0


@pytest.mark.parametrize("data", ["dense", "csr", "multinomial"])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_proximal_armijo_follows_the_reference(monkeypatch, data, l1_ratio):
    # with an L1 term armijo is proximal gradient (Armijo._proximal): the same iterations,
    # objective and support (exact zeros) as the reference driver's
    if data == "multinomial":
        X, y = _iris()
        kw = dict(loss="multinomial", alpha=0.05)
    else:
        X, y = make_data(n=400, d=12, seed=8)
        kw = dict(alpha=0.05)
    if data == "csr":
        X = _csr(X, np.int32)
    kw.update(l1_ratio=l1_ratio, tol=1e-8, max_iter=3000)
    a = _fit(X, y, "armijo", False, monkeypatch, **kw)
    b = _fit(X, y, "armijo", True, monkeypatch, **kw)
    assert a.status == "converged"
    coef_a, coef_b = np.atleast_2d(a.coef), np.atleast_2d(b.coef)
    assert 0 < np.count_nonzero(coef_b == 0.0) < coef_b.size  # a sparse solution
    np.testing.assert_array_equal(coef_b == 0.0, coef_a == 0.0)
    _assert_same_run(a, b, coef_atol=1e-7)


@pytest.mark.parametrize("rule", ["armijo", "bb", "newton"])
def test_max_iter_reference_distance_and_the_stall_end_as_the_reference(monkeypatch, rule):
    X, y = make_data(n=300, d=6, seed=5)
    ref = np.ones(7)
    max_iter = 2 if rule == "newton" else 5  # newton converges in a few
    a = _fit(X, y, rule, False, monkeypatch, alpha=0.0, max_iter=max_iter, reference=ref)
    b = _fit(X, y, rule, True, monkeypatch, alpha=0.0, max_iter=max_iter, reference=ref)
    assert b.status == "max_iter" and b.n_iter == max_iter
    _assert_same_run(a, b, coef_atol=1e-9)
    np.testing.assert_allclose(b.history.distance, a.history.distance, rtol=1e-9)
    # a tol below rounding: bb's line search stalls at the optimum (converged or stalled, as the
    # reference decides it); armijo's rounding-level steps still pass its test, to max_iter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.StallWarning)
        a = _fit(X, y, rule, False, monkeypatch, alpha=1e-1, tol=1e-300, max_iter=3000)
        b = _fit(X, y, rule, True, monkeypatch, alpha=1e-1, tol=1e-300, max_iter=3000)
    assert b.status in (("max_iter",) if rule == "armijo" else ("converged", "stalled"))
    assert b.status == a.status
    np.testing.assert_allclose(b.coef, a.coef, rtol=0, atol=1e-9)


@pytest.mark.parametrize("rule", [gs.Armijo(), gs.BB(window=4), gs.Armijo(grow=3.0),
                                  gs.Newton(max_cg=2)])
def test_one_iteration_at_a_time_gives_the_same_bits(monkeypatch, rule):
    """A monitor makes the fit call the loop one iteration at a time: the state kept between
    calls (the next first trial, bb's window and step count, the smooth loss) must make that
    the same computation as one call."""
    X, y = _iris()
    seen = []

    def monitor(progress):
        seen.append(int(progress.iteration[0]))

    kw = dict(alpha=1e-2, tol=1e-7, loss="multinomial",
              l1_ratio=0.5 if isinstance(rule, gs.Armijo) and rule.grow == 3.0 else 0.0)
    whole = _fit(X, y, [rule], True, monkeypatch, **kw)
    steps = _fit(X, y, [rule], True, monkeypatch, monitor=monitor, **kw)
    assert seen == list(range(1, int(whole.n_iter[0]) + 1))
    np.testing.assert_array_equal(steps.coef, whole.coef)
    np.testing.assert_array_equal(steps.history.loss, whole.history.loss)
    np.testing.assert_array_equal(steps.passes, whole.passes)


@pytest.mark.parametrize("seed", range(18))
def test_random_problems_end_as_the_reference(monkeypatch, seed):
    # test_lbfgs_loop's random problems, each with one of the three rules (L1 for armijo only)
    rule = ("armijo", "bb", "newton")[seed % 3 if seed < 9 else (seed // 3) % 3]
    X, y, kw = random_problem(seed, l1=rule == "armijo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.StallWarning)
        a = _fit(X, y, rule, False, monkeypatch, **kw)
        b = _fit(X, y, rule, True, monkeypatch, **kw)
    assert a.status == b.status
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-9)
    scale = max(1.0, float(np.max(np.abs(a.coef))))
    np.testing.assert_allclose(b.coef, a.coef, rtol=0, atol=1e-5 * scale)
    assert abs(int(a.n_iter) - int(b.n_iter)) <= max(2, 0.02 * int(a.n_iter))


def test_the_loop_runs_only_where_it_applies(monkeypatch):
    import scipy.sparse as sp

    X, y = make_data(n=200, d=4)
    used = lambda *a, **kw: _driver_used(monkeypatch, *a, max_iter=3, **kw)  # noqa: E731
    assert used(X, y, "armijo", backend="cpp") == "CompiledCurvatureDriver"
    assert used(sp.csr_matrix(X), y, "bb", backend="cpp") == "CompiledCurvatureDriver"
    assert used(X, y, "newton", backend="cpp") == "CompiledCurvatureDriver"
    assert used(X, y, "armijo", backend="numpy") == "ReferenceDriver"
    assert used(X, y, "armijo", backend="numba") == "ReferenceDriver"

    class MyArmijo(gs.Armijo):  # a subclass may change iterate: the reference runs it
        pass

    assert used(X, y, [MyArmijo()], backend="cpp") == "ReferenceDriver"


def _one(result):
    """A batched result of one run as the single-run result _assert_same_run compares."""
    class One:
        pass

    one = One()
    one.status, one.n_iter, one.passes = result.status[0], result.n_iter[0], result.passes[0]
    one.coef, one.intercept, one.loss = result.coef[0], result.intercept[0], result.loss[0]
    h = result.history
    one.history = type("H", (), {f: getattr(h, f)[0] for f in
                                 ("passes", "loss", "grad_norm", "step_norm")})()
    return one
