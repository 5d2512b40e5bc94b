"""The compiled lbfgs loop (lbfgs_loop.hpp, driver.CompiledCurvatureDriver) against the reference
driver it replaces for a single lbfgs run on a dense or CSR X with the C++ backend: the same
iterations, passes, statuses and history, iterates equal to rounding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris

import gradstep as gs
from conftest import _require, fit_recording_drivers, make_data
from gradstep import driver


@pytest.fixture(autouse=True)
def _cpp():
    _require("cpp")


def _fit_through(choice: str, chosen: bool, X, y, monkeypatch, **kw):
    """gs.fit with lbfgs (backend cpp) where driver.<choice> (the test make_driver asks before
    taking a compiled driver) must say yes (chosen), or is made to say no: the reference."""
    with monkeypatch.context() as m:
        if not chosen:
            m.setattr(driver, choice, lambda *args: False)
        else:  # the fit must really take the compiled driver
            real = getattr(driver, choice)
            asked = []

            def must(*args):
                asked.append(True)
                choice_made = real(*args)
                assert choice_made, f"driver.{choice} did not choose the compiled driver"
                return choice_made

            m.setattr(driver, choice, must)
            result = gs.fit(X, y, "lbfgs", backend="cpp", **kw)
            assert asked, f"make_driver never asked driver.{choice}"
            return result
        return gs.fit(X, y, "lbfgs", backend="cpp", **kw)


def _fit(X, y, compiled: bool, monkeypatch, **kw):
    """gs.fit with lbfgs, through the compiled loop or (compiled=False) the reference driver."""
    return _fit_through("_compiled_curvature", compiled, X, y, monkeypatch, **kw)


def _iris():
    X, y = load_iris(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y


def _assert_same_run(a, b, coef_atol):
    """The same run to rounding: the same status and result, and the same iterations and passes
    until near the end, where a line search's decision on a rounding-level difference of the
    loss may take one trial more or less (then at most a few iterations or passes apart)."""
    assert a.status == b.status
    assert abs(a.n_iter - b.n_iter) <= 2
    assert abs(a.passes - b.passes) <= 3
    np.testing.assert_allclose(b.coef, a.coef, rtol=0, atol=coef_atol)
    np.testing.assert_allclose(b.intercept, a.intercept, rtol=0, atol=coef_atol)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-12)
    ha, hb = a.history, b.history
    n = min(len(ha.passes), len(hb.passes))
    parted = np.flatnonzero(ha.passes[:n] != hb.passes[:n])
    same = n if parted.size == 0 else int(parted[0])
    assert same >= 0.8 * n, f"the passes part at iteration {same} of {n}"
    np.testing.assert_allclose(hb.loss[:same], ha.loss[:same], rtol=1e-10)
    # near the optimum these norms are small and carry the iterates' rounding differences
    # (amplified by the conditioning): compared against the largest of each
    np.testing.assert_allclose(hb.grad_norm[:same], ha.grad_norm[:same], rtol=1e-5,
                               atol=1e-7 * np.max(ha.grad_norm))
    np.testing.assert_allclose(hb.step_norm[:same], ha.step_norm[:same], rtol=1e-5,
                               atol=1e-7 * np.max(ha.step_norm))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_loop_follows_the_reference(monkeypatch, dtype, fit_intercept, weighted):
    X, y = make_data(n=400, d=8, seed=3)
    X = X.astype(dtype)
    sw = np.random.default_rng(1).uniform(0.2, 2.0, len(y)) if weighted else None
    kw = dict(alpha=1e-3, tol=1e-9, fit_intercept=fit_intercept, sample_weight=sw)
    a = _fit(X, y, False, monkeypatch, **kw)
    b = _fit(X, y, True, monkeypatch, **kw)
    assert a.status == "converged"
    _assert_same_run(a, b, coef_atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_multinomial_loop_follows_the_reference(monkeypatch, dtype, fit_intercept):
    X, y = _iris()
    X = X.astype(dtype)
    kw = dict(alpha=1e-3, tol=1e-9, loss="multinomial", fit_intercept=fit_intercept)
    a = _fit(X, y, False, monkeypatch, **kw)
    b = _fit(X, y, True, monkeypatch, **kw)
    assert a.status == "converged"
    assert b.coef.shape == (3, 4)
    _assert_same_run(a, b, coef_atol=1e-7)


def _csr(X, index):
    import scipy.sparse as sp

    X = X * (np.random.default_rng(4).random(X.shape) < 0.6)  # some zeros, an empty row
    X[7] = 0.0
    A = sp.csr_matrix(X)
    A.indices, A.indptr = A.indices.astype(index), A.indptr.astype(index)
    return A


@pytest.mark.parametrize("loss", ["logistic", "multinomial"])
@pytest.mark.parametrize("dtype,index", [(np.float64, np.int32), (np.float32, np.int64)])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_csr_loop_follows_the_reference(monkeypatch, loss, dtype, index, fit_intercept,
                                        weighted):
    # the loop over the CSR kernels (csr_lbfgs_run / csr_softmax_lbfgs_run) against the
    # reference driver over the same kernels, and against the compiled loop on the dense matrix
    if loss == "logistic":
        X, y = make_data(n=400, d=8, seed=3)
    else:
        X, y = _iris()
    X = X.astype(dtype)
    A = _csr(X, index)
    sw = np.random.default_rng(1).uniform(0.2, 2.0, len(y)) if weighted else None
    kw = dict(alpha=1e-3, tol=1e-9, fit_intercept=fit_intercept, sample_weight=sw, loss=loss)
    a = _fit(A, y, False, monkeypatch, **kw)
    b = _fit(A, y, True, monkeypatch, **kw)
    assert a.status == "converged"
    assert a.backend == b.backend and a.backend.endswith("csr")
    _assert_same_run(a, b, coef_atol=1e-7)
    dense = _fit(A.toarray(), y, True, monkeypatch, **kw)
    _assert_same_run(dense, b, coef_atol=1e-7)
    if not fit_intercept:
        assert np.all(b.intercept == 0.0)


@pytest.mark.parametrize("data", ["dense", "float32", "csr", "multinomial", "csr multinomial"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_owlqn_loop_follows_the_reference(monkeypatch, data, fit_intercept, l1_ratio):
    # with an L1 term the loop is OWL-QN (LBFGS._owlqn, _orthant_backtrack): the same
    # iterations, objective and support (exact zeros) as the reference driver's
    if "multinomial" in data:
        X, y = _iris()
        kw = dict(loss="multinomial", alpha=0.05)
    else:
        X, y = make_data(n=400, d=12, seed=8)
        kw = dict(alpha=0.05)
    if data == "float32":
        X = X.astype(np.float32)
    if "csr" in data:
        X = _csr(X, np.int32)
    kw.update(l1_ratio=l1_ratio, tol=1e-9, fit_intercept=fit_intercept, max_iter=2000)
    a = _fit(X, y, False, monkeypatch, **kw)
    b = _fit(X, y, True, monkeypatch, **kw)
    assert a.status == "converged"
    coef_a, coef_b = np.atleast_2d(a.coef), np.atleast_2d(b.coef)
    assert 0 < np.count_nonzero(coef_b == 0.0) < coef_b.size  # a sparse solution
    np.testing.assert_array_equal(coef_b == 0.0, coef_a == 0.0)
    _assert_same_run(a, b, coef_atol=1e-7)
    if not fit_intercept:
        assert np.all(b.intercept == 0.0)


def test_csr_loop_needs_a_proven_structure(monkeypatch):
    # the loop reads by the indices unchecked: an oracle whose passes still check rows keeps the
    # reference driver
    from gradstep import api

    X, y = make_data(n=200, d=4)
    A = _csr(X, np.int32)
    real_init = driver.init_state

    def init_unproven(oracle, spec, state):
        real_init(oracle, spec, state)
        oracle.structure_proven = False  # as if the first pass had not proved it

    monkeypatch.setattr(api, "init_state", init_unproven)
    assert _driver_used(monkeypatch, A, y, "lbfgs", backend="cpp",
                        max_iter=3) == "ReferenceDriver"


def test_max_iter_reference_distance_and_the_stall_end_as_the_reference(monkeypatch):
    X, y = make_data(n=300, d=6, seed=5)
    ref = np.ones(7)
    # max_iter reached
    a = _fit(X, y, False, monkeypatch, alpha=0.0, max_iter=5, reference=ref)
    b = _fit(X, y, True, monkeypatch, alpha=0.0, max_iter=5, reference=ref)
    assert b.status == "max_iter" and b.n_iter == 5
    _assert_same_run(a, b, coef_atol=1e-9)
    np.testing.assert_allclose(b.history.distance, a.history.distance, rtol=1e-9)
    # a tol below rounding: the line search stalls at the optimum (converged or stalled, as the
    # reference decides it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.StallWarning)
        a = _fit(X, y, False, monkeypatch, alpha=1e-2, tol=1e-300, max_iter=500)
        b = _fit(X, y, True, monkeypatch, alpha=1e-2, tol=1e-300, max_iter=500)
    assert b.status in ("converged", "stalled")
    assert b.status == a.status
    np.testing.assert_allclose(b.coef, a.coef, rtol=0, atol=1e-9)


def test_separable_data_stops_on_the_weight_norm_as_the_reference(monkeypatch):
    X, y = make_data(n=200, d=3, seed=2)
    y = (X[:, 0] > 0).astype(float)  # separable: without a penalty the weights grow for ever
    a = _fit(X, y, False, monkeypatch, alpha=0.0, tol=1e-12, max_iter=300)
    b = _fit(X, y, True, monkeypatch, alpha=0.0, tol=1e-12, max_iter=300)
    assert b.status == a.status
    assert b.n_iter == a.n_iter
    assert np.all(np.isfinite(b.coef))


def test_one_iteration_at_a_time_gives_the_same_bits(monkeypatch):
    """A monitor makes the fit call the loop one iteration at a time: the memory kept between
    calls must make that the same computation as one call."""
    X, y = _iris()
    seen = []

    def monitor(progress):
        seen.append(int(progress.iteration[0]))

    kw = dict(alpha=1e-3, tol=1e-8, loss="multinomial")
    whole = _fit(X, y, True, monkeypatch, **kw)
    steps = _fit(X, y, True, monkeypatch, monitor=monitor, **kw)
    assert seen == list(range(1, whole.n_iter + 1))
    np.testing.assert_array_equal(steps.coef, whole.coef)
    np.testing.assert_array_equal(steps.history.loss, whole.history.loss)


def _driver_used(monkeypatch, *args, **kw) -> str:
    """The class name of the driver gs.fit(*args, **kw) ran."""
    return fit_recording_drivers(monkeypatch, *args, **kw)[1][0]


def test_the_loop_runs_only_where_it_applies(monkeypatch):
    import scipy.sparse as sp

    X, y = make_data(n=200, d=4)
    used = lambda *a, **kw: _driver_used(monkeypatch, *a, max_iter=3, **kw)  # noqa: E731
    assert used(X, y, "lbfgs", backend="cpp") == "CompiledCurvatureDriver"
    # 2 runs: one after another on this small X (SplitDriver)
    assert used(X, np.c_[y, 1 - y], "lbfgs", backend="cpp") == "SplitDriver"
    assert used(X, y, "lbfgs", backend="cpp", l1_ratio=1.0, alpha=0.1) == "CompiledCurvatureDriver"
    assert used(sp.csr_matrix(X), y, "lbfgs", backend="cpp") == "CompiledCurvatureDriver"
    assert used(sp.csr_matrix(X), y % 2 + (X[:, 0] > 1), "lbfgs", backend="cpp",
                loss="multinomial") == "CompiledCurvatureDriver"
    assert used(X, y, "newton", backend="numba") == "ReferenceDriver"
    if gs.backends()["numba"]:
        assert used(X, y, "lbfgs", backend="numba") == "ReferenceDriver"


def test_bad_loop_arrays_are_refused_before_any_work(monkeypatch):
    import types

    from gradstep import _core
    from gradstep._backends import cpp

    X, y = make_data(n=50, d=3)
    result = {}

    real = cpp.curvature_run

    def capture(o, spec, state, loop, n_steps):
        result.update(spec=spec, state=state, X=o.X, Y=o.Y, SW=o.SW)
        real(o, spec, state, loop, n_steps)

    monkeypatch.setattr(cpp, "curvature_run", capture)
    gs.fit(X, y, "lbfgs", backend="cpp", max_iter=1)
    P_before = result["state"].P.copy()
    args = (result["X"], result["Y"], result["SW"], result["spec"], result["state"])

    def lbfgs(m=10, memory_rows=22, **kw):
        fields = dict(kind="lbfgs", m=m, lr=1.0, memory=np.zeros((memory_rows, 4)),
                      rho=np.zeros(m + 1), gamma=np.ones(1), ints=np.zeros(3, np.int64),
                      step=np.ones(1), passes=np.ones(1))
        return types.SimpleNamespace(**{**fields, **kw})

    def run(loop):
        _core.curvature_run_float64(*args, loop, 5, 1)

    with pytest.raises(ValueError, match="loop.memory must have shape"):
        run(lbfgs(memory_rows=3))
    with pytest.raises(ValueError, match="loop.m must be at least 1"):
        run(lbfgs(m=0))
    with pytest.raises(ValueError, match="loop.kind must be"):
        run(lbfgs(kind="sgd"))
    with pytest.raises(TypeError, match="loop has no attribute 'rho'"):
        loop = lbfgs()
        del loop.rho
        run(loop)
    with pytest.raises(ValueError, match="loop.step must have shape"):
        run(lbfgs(step=np.ones(2)))
    armijo = dict(kind="armijo", params=np.array([1.0, 1e-4, 0.5, 2.0, 0.0, 1.0, 0.1, 1]),
                  reals=np.zeros(3), ints=np.zeros(4, np.int64), passes=np.ones(1))
    with pytest.raises(ValueError, match="loop.params must hold"):
        c1_too_large = np.array([1.0, 2.0, 0.5, 2, 0, 1, 0.1, 1])
        run(types.SimpleNamespace(**dict(armijo, params=c1_too_large)))
    with pytest.raises(ValueError, match="loop.params must have shape"):
        run(types.SimpleNamespace(**dict(armijo, params=np.ones(7))))
    nan_window = np.array([1.0, 1e-4, 0.5, 2, 0, np.nan, 0.1, 1])
    with pytest.raises(ValueError, match="a window and a max_cg in"):
        run(types.SimpleNamespace(**dict(armijo, params=nan_window)))
    with pytest.raises(ValueError, match="loop.reals must have shape"):
        run(types.SimpleNamespace(**dict(armijo, reals=np.zeros(2))))
    result["spec"].penalized = np.zeros(0, np.uint8)
    result["spec"].l1 = np.array([0.1])  # an L1 term needs the mask of the parameters it covers
    with pytest.raises(ValueError, match="spec.penalized must have shape"):
        run(lbfgs())
    result["spec"].penalized = np.ones(4, np.uint8)
    with pytest.raises(ValueError, match="bb takes no L1 term"):
        run(types.SimpleNamespace(**dict(armijo, kind="bb", reals=np.zeros(3))))
    result["spec"].l1 = np.array([-0.1])
    with pytest.raises(ValueError, match="spec.l1 must be finite and >= 0"):
        run(lbfgs())
    np.testing.assert_array_equal(result["state"].P, P_before)


@pytest.mark.parametrize("seed", range(12))
def test_random_problems_end_as_the_reference(monkeypatch, seed):
    X, y, kw = random_problem(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.StallWarning)
        a = _fit(X, y, False, monkeypatch, **kw)
        b = _fit(X, y, True, monkeypatch, **kw)
    assert a.status == b.status
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-9)
    scale = max(1.0, float(np.max(np.abs(a.coef))))
    np.testing.assert_allclose(b.coef, a.coef, rtol=0, atol=1e-5 * scale)


def random_problem(seed: int, l1: bool = True):
    """(X, y, gs.fit keywords) of a random problem: random shapes, densities, dtypes, layouts
    (dense / CSR), losses, alphas, l1_ratios (when l1), tols, weights and intercepts."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(20, 300)), int(rng.integers(1, 40))
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < rng.uniform(0.2, 1.0))
    multi = seed % 3 == 0
    C = 3 if multi else 2
    y = np.argmax(X @ rng.standard_normal((d, C)) + rng.gumbel(size=(n, C)), axis=1)
    if not multi:
        y = (y == 1).astype(int)
    if len(np.unique(y)) < C:
        pytest.skip("a class is missing")
    if seed % 4 == 1:
        X = X.astype(np.float32)
    if seed % 2:
        X = sp.csr_matrix(X)
    l1_ratio = float(rng.choice([0.0, 0.3, 1.0]))
    kw = dict(alpha=float(10 ** rng.uniform(-4, 0)), l1_ratio=l1_ratio if l1 else 0.0,
              fit_intercept=bool(rng.random() < 0.7), tol=float(10 ** rng.uniform(-10, -4)),
              max_iter=500, loss="multinomial" if multi else "logistic",
              sample_weight=rng.uniform(0, 2, n) if seed % 5 == 2 else None)
    return X, y, kw


# ---- several runs on a small X: one after another in the compiled loop ------------------------


def _fit_runs(X, y, sequential: bool, monkeypatch, **kw):
    """gs.fit with several lbfgs runs, through SplitDriver or the reference driver."""
    return _fit_through("_split", sequential, X, y, monkeypatch, **kw)


@pytest.mark.parametrize("penalty", ["l1", "l2"])
@pytest.mark.parametrize("data", ["dense", "csr", "multinomial"])
def test_several_runs_follow_the_reference(monkeypatch, data, penalty):
    # a path of alphas and l1_ratios, per-run sample weights (as GDClassifierCV's folds): each
    # run through the compiled loop in turn ends as the reference's rounds end it (with L1 one
    # OWL-QN generator per run, without the batched LBFGSRuns)
    if data == "multinomial":
        X, y = _iris()
        kw = dict(loss="multinomial")
    else:
        X, y = make_data(n=300, d=10, seed=6)
        kw = {}
    if data == "csr":
        X = _csr(X, np.int32)
    rng = np.random.default_rng(0)
    n_runs = 6
    sw = (rng.random((len(y), n_runs)) < 0.8) * 1.0  # folds: held-out rows weigh 0
    l1_ratio = [1.0, 0.5, 1.0, 0.3, 1.0, 0.8] if penalty == "l1" else 0.0
    kw.update(alpha=list(np.geomspace(1e-3, 1e-1, n_runs)), l1_ratio=l1_ratio,
              sample_weight=sw, tol=1e-8, max_iter=500)
    a = _fit_runs(X, y, False, monkeypatch, **kw)
    b = _fit_runs(X, y, True, monkeypatch, **kw)
    assert list(a.status) == list(b.status)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-9)
    A, B = a.coef.reshape(n_runs, -1), b.coef.reshape(n_runs, -1)
    np.testing.assert_array_equal(B == 0.0, A == 0.0)
    np.testing.assert_allclose(B, A, rtol=0, atol=1e-6 * max(1.0, float(np.abs(A).max())))
    # the two drivers' directions differ in their last bits (the reference's dot products are
    # NumPy's BLAS, whose summation order depends on the CPU's kernel), and a long OWL-QN path
    # amplifies that: on Zen 4 (OpenBLAS "SkylakeX") one run took 308 iterations against 301
    assert np.all(np.abs(a.n_iter - b.n_iter) <= np.maximum(2, 0.05 * a.n_iter))
    for k in range(n_runs):  # each run's own history, as the reference records it
        n = int(min(a.n_iter[k], b.n_iter[k])) // 2
        np.testing.assert_allclose(b.history.loss[k][:n], a.history.loss[k][:n], rtol=1e-10)


def test_several_l1_runs_one_iteration_at_a_time(monkeypatch):
    X, y = make_data(n=200, d=6, seed=2)
    kw = dict(alpha=[0.01, 0.05, 0.2], l1_ratio=1.0, tol=1e-9)
    whole = _fit_runs(X, y, True, monkeypatch, **kw)
    steps = _fit_runs(X, y, True, monkeypatch, monitor=lambda progress: None, **kw)
    np.testing.assert_array_equal(steps.coef, whole.coef)
    np.testing.assert_array_equal(steps.history.loss, whole.history.loss)
    np.testing.assert_array_equal(steps.passes, whole.passes)


def test_several_runs_go_one_after_another_only_where_it_pays(monkeypatch):
    X, y = make_data(n=200, d=4)
    used = lambda *a, **kw: _driver_used(monkeypatch, *a, max_iter=3, **kw)  # noqa: E731
    l1 = dict(alpha=[0.01, 0.1], l1_ratio=1.0)
    assert used(X, y, "lbfgs", backend="cpp", **l1) == "SplitDriver"
    assert used(X, y, "lbfgs", backend="cpp", alpha=[0.01, 0.1],
                l1_ratio=[1.0, 0.0]) == "SplitDriver"
    assert used(X, y, ["lbfgs", "bb"], backend="cpp") == "SplitDriver"  # test_split_driver.py
    assert used(X, y, "lbfgs", backend="numpy", **l1) == "ReferenceDriver"
    monkeypatch.setattr(driver, "SPLIT_MAX_WORK", X.size - 1)  # a larger X: shared passes
    assert used(X, y, "lbfgs", backend="cpp", **l1) == "ReferenceDriver"
