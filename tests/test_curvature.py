"""The curvature rules (armijo, bb, lbfgs, newton), hessp, the Lanczos lr="auto", and per-run
alpha and sample weights: properties from the mathematics, checked against independent code."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradstep as gs
from conftest import make_data, oracle_hessian, oracle_loss_grad, oracle_solution
from gradstep import driver
from gradstep.rules.curvature import Grad, HessP, Stall, Step

CURVATURE = ["armijo", "bb", "lbfgs", "newton"]


def _objective(X, y, alpha):
    """(loss, gradient) over p = (w, b) from the independent oracle of conftest."""
    d = X.shape[1]

    def f(p):
        loss, gw, gb, _ = oracle_loss_grad(X, y, p[:d], p[d], alpha=alpha)
        return loss, np.append(gw, gb)

    return f


def _drive(rule, X, y, alpha, n_iter):
    """Runs one rule's generator by hand against the independent oracle, recording every
    request and every completed iteration (p_before, Step)."""
    f = _objective(X, y, alpha)
    d = X.shape[1]
    p = np.zeros(d + 1)
    loss, g = f(p)
    gen = rule.iterate(p.copy(), loss, g.copy())
    requests, steps = [], []
    answer = None
    event = next(gen)
    while len(steps) < n_iter:
        if isinstance(event, Grad):
            requests.append(event)
            answer = f(event.p)
        elif isinstance(event, HessP):
            requests.append(event)
            w, b = event.p[:d], event.p[d]
            answer = oracle_hessian(X, y, w, b, None, alpha, True) @ event.v
        elif isinstance(event, Step):
            steps.append((p, loss, g, event, len(requests)))
            p, loss, g = event.p, event.loss, event.g
            answer = None
        elif isinstance(event, Stall):
            break
        event = gen.send(answer) if answer is not None else next(gen)
    return steps, requests


@pytest.fixture(scope="module")
def problem():
    X, y = make_data(n=400, d=6, seed=3)
    return X, y, 1e-3


def test_armijo_condition_holds_at_every_accepted_step(problem):
    X, y, alpha = problem
    rule = gs.Armijo(lr=8.0)
    steps, _ = _drive(rule, X, y, alpha, 30)
    assert len(steps) == 30
    shrunk = 0
    for p, loss, g, step, _ in steps:
        np.testing.assert_allclose(step.p, p - step.t * g, rtol=0, atol=1e-15)
        assert step.loss <= loss - rule.c1 * step.t * (g @ g)
        shrunk += step.t < rule.lr
    assert shrunk > 0  # lr=8 is too long here: the backtracking was exercised


def test_lbfgs_steps_satisfy_the_strong_wolfe_conditions(problem):
    X, y, alpha = problem
    steps, _ = _drive(gs.LBFGS(), X, y, alpha, 15)
    assert len(steps) >= 10
    for p, loss, g, step, _ in steps:
        d = (step.p - p) / step.t
        slope = g @ d
        assert slope < 0
        assert step.loss <= loss + 1e-4 * step.t * slope
        assert abs(step.g @ d) <= 0.9 * abs(slope) + 1e-15


def test_bb_step_is_s_dot_s_over_s_dot_y(problem):
    X, y, alpha = problem
    steps, requests = _drive(gs.BB(lr=0.5), X, y, alpha, 12)
    checked = 0
    for (p0, _, g0, s0, seen), (p1, _, g1, s1, _) in zip(steps, steps[1:]):
        s, yv = s0.p - p0, s0.g - g0
        expected = (s @ s) / (s @ yv)
        trial = requests[seen]  # the first trial after step s0
        tried = np.linalg.norm(trial.p - p1) / np.linalg.norm(g1)
        if s1.t == pytest.approx(tried, rel=1e-12):  # accepted without halving
            assert tried == pytest.approx(expected, rel=1e-10)
            checked += 1
    assert checked >= 5


def test_bb_history_lr_is_the_secant_step(problem):
    X, y, alpha = problem
    res = gs.fit(X, y, "bb", lr=0.5, alpha=alpha, tol=1e-10, backend="numpy")
    assert res.status == "converged"
    # the first step is lr; the loss is allowed to rise (non-monotone) but ends at the optimum
    assert res.history.lr[1] == 0.5
    w, b = oracle_solution(X, y, alpha=alpha)
    np.testing.assert_allclose(res.coef, w, atol=1e-8)


def test_newton_reaches_the_optimum_quadratically(problem):
    X, y, alpha = problem
    res = gs.fit(X, y, "newton", alpha=alpha, tol=1e-12, backend="numpy")
    assert res.status == "converged" and res.n_iter <= 10
    w, b = oracle_solution(X, y, alpha=alpha)
    best = oracle_loss_grad(X, y, w, b, alpha=alpha)[0]
    gap = res.history.loss - best
    gap = gap[gap > 1e-14]
    ratios = gap[1:] / gap[:-1]
    assert ratios[-1] < ratios[0] and ratios[-1] < 0.05  # the contraction itself shrinks
    np.testing.assert_allclose(res.coef, w, atol=1e-9)


@pytest.mark.parametrize("rule", CURVATURE)
def test_curvature_rules_reach_the_minimizer(backend, rule, problem):
    X, y, alpha = problem
    res = gs.fit(X, y, rule, alpha=alpha, tol=1e-9, max_iter=5000, backend=backend)
    assert res.status == "converged"
    w, b = oracle_solution(X, y, alpha=alpha)
    np.testing.assert_allclose(res.coef, w, atol=1e-6)
    assert res.intercept == pytest.approx(b, abs=1e-6)
    assert np.all(np.diff(res.history.passes) >= 1)  # every iteration costs a pass at least


@pytest.mark.parametrize("rule", CURVATURE)
def test_curvature_rules_agree_across_backends(compiled_backend, rule, problem):
    X, y, alpha = problem
    kw = dict(alpha=alpha, tol=1e-9, max_iter=40)
    ref = gs.fit(X, y, rule, backend="numpy", **kw)
    got = gs.fit(X, y, rule, backend=compiled_backend, **kw)
    assert got.n_iter == ref.n_iter
    np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.history.passes, ref.history.passes)


def test_batched_curvature_and_first_order_runs_equal_separate_runs(backend, problem):
    X, y, alpha = problem
    rules = ["lbfgs", "adam", "newton", "bb", "armijo", "sgd"]
    kw = dict(alpha=alpha, tol=1e-8, max_iter=200, backend=backend)
    together = gs.fit(X, y, rules, **kw)
    for k, rule in enumerate(rules):
        alone = gs.fit(X, y, rule, **kw)
        assert together.status[k] == alone.status
        assert together.n_iter[k] == alone.n_iter
        np.testing.assert_allclose(together.coef[k], alone.coef, rtol=1e-12, atol=1e-14)
        n = alone.n_iter + 1
        np.testing.assert_array_equal(together.history.passes[k, :n], alone.history.passes)


def test_full_batch_rules_reject_batches_and_schedules(problem):
    X, y, _ = problem
    with pytest.raises(ValueError, match="full-batch method"):
        gs.fit(X, y, "lbfgs", batch_size=32)
    with pytest.raises(ValueError, match="takes no schedule"):
        gs.fit(X, y, "armijo", schedule="inverse_time")
    with pytest.raises(ValueError, match="variant"):
        gs.fit(X, y, "bb", variant="longest")


def test_stall_on_an_unreachable_tol_is_converged_or_stalled(problem):
    X, y, alpha = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.StallWarning)
        res = gs.fit(X, y, "armijo", alpha=alpha, tol=1e-300, max_iter=100000, backend="numpy")
    assert res.status in ("converged", "stalled")
    assert res.n_iter < 100000


def test_stalled_run_warns():
    # a loss whose line search cannot move: gradient far above tol at a point where every
    # trial step is rejected (the oracle lies about the gradient)
    class Lying:
        n_samples, n_features = 10, 1

        def loss_grad(self, P, active, rows=None, denominator=None):
            loss = (P[:, 0] ** 2).copy()
            G = np.zeros_like(P)
            G[:, 0] = -1.0  # claims descent along +p, where the loss only rises
            return loss, G

    with pytest.warns(gs.StallWarning, match="stalled"):
        res = gs.fit(Lying(), None, "armijo", tol=1e-6)
    assert res.status == "stalled"


# ---- hessp ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_sw", [False, True])
def test_hessp_matches_finite_differences_and_the_exact_hessian(backend, fit_sw):
    X, y = make_data(n=300, d=4, seed=5)
    rng = np.random.default_rng(0)
    sw = rng.uniform(0.5, 2.0, len(y)) if fit_sw else None
    w, b = rng.standard_normal(4) * 0.5, 0.2
    vw, vb = rng.standard_normal(4), -0.7
    hw, hb = gs.hessp(X, y, w, b, vw, vb, sample_weight=sw, alpha=0.3, backend=backend)
    H = oracle_hessian(X, y, w, b, sw, 0.3, True)
    np.testing.assert_allclose(np.append(hw, hb), H @ np.append(vw, vb), rtol=1e-10, atol=1e-13)
    h = 1e-5
    _, gp, gbp = gs.loss_and_grad(X, y, w + h * vw, b + h * vb, sample_weight=sw, alpha=0.3)
    _, gm, gbm = gs.loss_and_grad(X, y, w - h * vw, b - h * vb, sample_weight=sw, alpha=0.3)
    np.testing.assert_allclose(hw, (gp - gm) / (2 * h), rtol=1e-6, atol=1e-9)
    assert hb == pytest.approx((gbp - gbm) / (2 * h), rel=1e-6, abs=1e-9)


def test_hessp_batched_and_with_scipy_trust_ncg(backend):
    from scipy.optimize import minimize

    X, y = make_data(n=200, d=3, seed=1)
    W = np.array([[0.1, 0.2, 0.3], [-0.5, 0.0, 1.0]])
    V = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    hw, hb = gs.hessp(X, y, W, [0.0, 0.1], V, [0.5, 0.0], backend=backend)
    for k in range(2):
        one, one_b = gs.hessp(X, y, W[k], [0.0, 0.1][k], V[k], [0.5, 0.0][k], backend=backend)
        np.testing.assert_allclose(hw[k], one, rtol=1e-13)
        assert hb[k] == pytest.approx(one_b, rel=1e-13)

    def f(p):
        loss, g, g0 = gs.loss_and_grad(X, y, p[:3], p[3], alpha=0.01, backend=backend)
        return loss, np.append(g, g0)

    def hp(p, vec):
        h, h0 = gs.hessp(X, y, p[:3], p[3], vec[:3], vec[3], alpha=0.01, backend=backend)
        return np.append(h, h0)

    res = minimize(f, np.zeros(4), jac=True, hessp=hp, method="trust-ncg",
                   options={"gtol": 1e-10})
    w, b = oracle_solution(X, y, alpha=0.01)
    np.testing.assert_allclose(res.x, np.append(w, b), atol=1e-8)


# ---- lr="auto" by Lanczos ---------------------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("scaled", [True, False])
def test_lipschitz_is_the_top_eigenvalue_within_1e3_and_never_below(backend, fit_intercept,
                                                                       scaled):
    from sklearn.datasets import load_breast_cancer

    X, _ = load_breast_cancer(return_X_y=True)
    if scaled:
        X = (X - X.mean(0)) / X.std(0)
    A = np.hstack([X, np.ones((len(X), 1))]) if fit_intercept else X
    exact = np.linalg.eigvalsh(A.T @ A / (4 * len(X)))[-1] + 0.01
    L = gs.lipschitz_constant(X, alpha=0.01, fit_intercept=fit_intercept, backend=backend)
    assert exact <= L <= exact * (1 + 1e-3)


def test_lipschitz_costs_at_most_ten_passes(monkeypatch, data):
    from gradstep.oracle import DenseOracle

    calls = []
    real = DenseOracle.hessp
    monkeypatch.setattr(DenseOracle, "hessp", lambda self, *a: calls.append(1) or real(self, *a))
    X, y = data
    gs.fit(X, y, "sgd", lr="auto", max_iter=1, backend="numpy")
    assert 1 <= len(calls) <= 10


def test_lr_auto_with_all_zero_x_and_no_intercept_is_a_clear_error():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="no curvature"):
        gs.fit(X, [0, 1, 0, 1, 1], "sgd", lr="auto", fit_intercept=False)


# ---- per-run alpha and per-run sample weights -------------------------------------------------


@pytest.mark.parametrize("rule", ["lbfgs", "sgd", "adam"])
def test_per_run_alpha_equals_separate_fits(backend, rule, data):
    X, y = data
    alphas = [1e-4, 1e-2, 0.0, 1.0]
    kw = dict(tol=1e-9, max_iter=300, backend=backend)
    path = gs.fit(X, y, rule, alpha=alphas, **kw)
    assert path.coef.shape == (4, X.shape[1])
    for k, a in enumerate(alphas):
        one = gs.fit(X, y, rule, alpha=a, **kw)
        np.testing.assert_allclose(path.coef[k], one.coef, rtol=1e-12, atol=1e-14)
        assert path.rules[k].lr == one.rules.lr  # lr="auto" is each run's own 1/L


def test_per_run_weights_make_cross_validation_folds(backend, data, monkeypatch):
    X, y = data
    # lbfgs runs would take the compiled loop (driver.CompiledCurvatureDriver, and for several runs
    # on a small X driver.SplitDriver), whose dot products round differently from the
    # reference driver's: pin the reference so that "the same arithmetic" below holds
    monkeypatch.setattr(driver, "_compiled_curvature", lambda *args: False)
    monkeypatch.setattr(driver, "_split", lambda *args: False)
    n = len(y)
    folds = np.arange(n) % 3
    SW = np.stack([(folds != f).astype(float) for f in range(3)], axis=1)  # (n, 3)
    cv = gs.fit(X, y, "lbfgs", alpha=1e-2, sample_weight=SW, tol=1e-10, backend=backend)
    for f in range(3):
        # the same weights as a 1-D column: the same arithmetic, so the same path
        same = gs.fit(X, y, "lbfgs", alpha=1e-2, sample_weight=SW[:, f], tol=1e-10,
                      backend=backend)
        np.testing.assert_allclose(cv.coef[f], same.coef, rtol=1e-12, atol=1e-14)
        # and the fold's rows alone: the same minimizer (sums in another order: to tol)
        keep = folds != f
        alone = gs.fit(X[keep], y[keep], "lbfgs", alpha=1e-2, tol=1e-10, backend=backend)
        np.testing.assert_allclose(cv.coef[f], alone.coef, rtol=1e-7, atol=1e-9)


def test_runs_must_pair_up(data):
    X, y = data
    with pytest.raises(ValueError, match="pair up"):
        gs.fit(X, y, ["sgd", "adam"], alpha=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="sample_weight"):
        gs.fit(X, y, "sgd", sample_weight=np.zeros((len(y), 2)))
