"""gradstep.optimum: the exact minimizer that step rules are measured against."""

import numpy as np
import pytest
from scipy.special import expit

import gradstep as gs
from gradstep import optimum
from gradstep._data import load


def _problem(n=300, d=5, seed=0):
    """Features of unequal scales, overlapping classes, an offset: a finite optimum at alpha=0."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.geomspace(0.3, 3.0, d) + 0.5
    y = (X @ rng.standard_normal(d) + 0.5 + rng.logistic(size=n) > 0).astype(np.float64)
    return X, y


def _gradient(X, y, coef, intercept, alpha, sample_weight=None):
    """The gradient of the objective, written independently with scipy's expit."""
    s = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    r = s * (expit(X @ coef + intercept) - y) / s.sum()
    return np.append(X.T @ r + alpha * coef, r.sum())


def _sklearn(X, y, alpha, fit_intercept=True, sample_weight=None):
    from sklearn.linear_model import LogisticRegression

    total = len(y) if sample_weight is None else float(np.sum(sample_weight))
    # sklearn minimizes C * sum_i s_i loss_i + ||w||^2 / 2: the same minimizer at C = 1/(alpha S)
    model = LogisticRegression(C=1.0 / (alpha * total), solver="newton-cholesky", tol=1e-14,
                               max_iter=1000, fit_intercept=fit_intercept)
    return model.fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("alpha", [0.0, 1e-3, 0.1])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_is_zero_at_the_solution(alpha, fit_intercept, weighted):
    X, y = _problem()
    sw = np.random.default_rng(1).uniform(0.2, 3.0, len(y)) if weighted else None
    res = optimum.solve(X, y, alpha=alpha, fit_intercept=fit_intercept, sample_weight=sw)
    assert res.status == "converged"
    grad = _gradient(X, y, res.coef, res.intercept, alpha, sw)
    if not fit_intercept:
        assert res.intercept == 0.0
        grad = grad[:-1]  # the intercept is not a parameter: its partial derivative need not vanish
    start = np.abs(_gradient(X, y, np.zeros(X.shape[1]), 0.0, alpha, sw)).max()
    assert np.abs(grad).max() <= 1e-12 * start


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_matches_sklearn(fit_intercept):
    data = load("breast_cancer")
    alpha = 1.0 / data.n_samples
    res = optimum.solve(data.X, data.y, alpha=alpha, fit_intercept=fit_intercept)
    ref = _sklearn(data.X, data.y, alpha, fit_intercept)
    np.testing.assert_allclose(res.coef, ref.coef_[0], rtol=0, atol=1e-6)
    assert res.intercept == pytest.approx(float(np.ravel(ref.intercept_)[0]), abs=1e-6)


def test_matches_sklearn_with_sample_weight():
    X, y = _problem()
    sw = np.random.default_rng(2).uniform(0.0, 2.0, len(y))
    res = optimum.solve(X, y, alpha=0.01, sample_weight=sw)
    ref = _sklearn(X, y, 0.01, sample_weight=sw)
    np.testing.assert_allclose(res.coef, ref.coef_[0], rtol=0, atol=1e-6)
    assert res.intercept == pytest.approx(ref.intercept_[0], abs=1e-6)


def test_result_fields():
    X, y = _problem()
    res = optimum.solve(X, y, alpha=0.01, backend="numpy")
    assert isinstance(res, gs.FitResult)
    assert res.coef.shape == (X.shape[1],) and isinstance(res.intercept, float)
    assert res.n_iter > 0 and res.rules is None and res.history is None
    assert res.backend == "numpy" and list(res.classes) == [0.0, 1.0]
    loss, _, _ = gs.loss_and_grad(X, y, res.coef, res.intercept, alpha=0.01)
    assert res.loss == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_integer_weights_are_repeated_rows(fit_intercept):
    X, y = _problem(n=120)
    counts = np.random.default_rng(3).integers(0, 4, len(y))
    weighted = optimum.solve(X, y, alpha=0.01, fit_intercept=fit_intercept, sample_weight=counts)
    repeated = optimum.solve(np.repeat(X, counts, axis=0), np.repeat(y, counts), alpha=0.01,
                             fit_intercept=fit_intercept)
    np.testing.assert_allclose(weighted.coef, repeated.coef, rtol=0, atol=1e-10)
    assert weighted.intercept == pytest.approx(repeated.intercept, abs=1e-10)
    assert weighted.loss == pytest.approx(repeated.loss, rel=1e-12)


def test_weights_are_relative_and_labels_any_two_classes():
    X, y = _problem()
    sw = np.random.default_rng(4).uniform(0.5, 1.5, len(y))
    base = optimum.solve(X, y, alpha=0.01, sample_weight=sw)
    scaled = optimum.solve(X, np.where(y > 0, "yes", "no"), alpha=0.01, sample_weight=7 * sw)
    np.testing.assert_allclose(scaled.coef, base.coef, rtol=0, atol=1e-10)
    assert list(scaled.classes) == ["no", "yes"]


def test_backends_agree_and_float32_is_solved_in_float64():
    X, y = _problem()
    ref = optimum.solve(X, y, alpha=0.01, backend="numpy")
    for name in ("cpp", "numba"):
        if gs.backends()[name]:
            res = optimum.solve(X, y, alpha=0.01, backend=name, n_threads=1)
            np.testing.assert_allclose(res.coef, ref.coef, rtol=0, atol=1e-10)
    X32 = X.astype(np.float32)
    res = optimum.solve(X32, y, alpha=0.01, backend="numpy")
    grad = _gradient(X32.astype(np.float64), y, res.coef, res.intercept, 0.01)
    assert np.abs(grad).max() < 1e-12


def test_hessian_is_the_derivative_of_the_gradient():
    X, y = _problem(n=80, d=3)
    sw = np.random.default_rng(5).uniform(0.5, 2.0, len(y))
    coef, intercept, alpha = np.array([0.3, -0.2, 0.1]), 0.4, 0.05
    H = optimum.hessian(X, coef, intercept, alpha=alpha, sample_weight=sw)
    params, h = np.append(coef, intercept), 1e-6
    numeric = np.empty_like(H)
    for j in range(len(params)):
        e = np.zeros(len(params))
        e[j] = h
        up, down = params + e, params - e
        numeric[:, j] = (_gradient(X, y, up[:-1], up[-1], alpha, sw)
                         - _gradient(X, y, down[:-1], down[-1], alpha, sw)) / (2 * h)
    np.testing.assert_allclose(H, numeric, rtol=1e-7, atol=1e-9)
    # without an intercept the model is z = X coef: the block of the intercept-0 Hessian
    H0 = optimum.hessian(X, coef, intercept, alpha=alpha, sample_weight=sw, fit_intercept=False)
    at_zero = optimum.hessian(X, coef, 0.0, alpha=alpha, sample_weight=sw)
    np.testing.assert_allclose(H0, at_zero[:-1, :-1], rtol=1e-14)
    assert np.linalg.eigvalsh(H)[-1] <= gs.lipschitz_constant(X, sw, alpha, True) * (1 + 1e-12)


def test_newton_polishes_only_small_problems():
    assert optimum.newton_polishes(569, 31)
    assert not optimum.newton_polishes(10, optimum.MAX_NEWTON_PARAMS + 1)
    assert not optimum.newton_polishes(optimum.MAX_NEWTON_ENTRIES, 2)


@pytest.mark.parametrize("change, expect", [
    (dict(X=np.ones(5)), "X must be 2-D"),
    (dict(X=np.full((6, 2), np.nan)), "X contains NaN"),
    (dict(X=np.empty((0, 2)), y=np.empty(0)), "X is empty"),
    (dict(y=np.zeros(6)), "exactly two classes"),
    (dict(y=np.array([0, 1, 2, 0, 1, 2])), "exactly two classes"),
    (dict(y=np.ones((6, 2))), "y must be 1-D"),
    (dict(y=np.array([0, 1, 0, 1])), "y has 4 rows but X has 6"),
    (dict(sample_weight=np.ones(5)), "sample_weight must have shape (6,)"),
    (dict(sample_weight=np.ones((6, 2))), "sample_weight must be 1-D"),
    (dict(sample_weight=-np.ones(6)), "sample_weight must be >= 0"),
    (dict(sample_weight=np.zeros(6)), "sums to zero"),
    (dict(alpha=-1.0), "alpha must be >= 0"),
    (dict(alpha=float("inf")), "alpha must be a finite number"),
    (dict(fit_intercept="yes"), "fit_intercept must be True or False"),
    (dict(backend="gpu"), "unknown backend 'gpu'"),
    (dict(n_threads=0), "n_threads must be a positive integer"),
])
def test_bad_input_raises_a_clear_value_error(change, expect):
    args = dict(X=np.arange(12.0).reshape(6, 2), y=np.array([0, 1, 0, 1, 1, 0]))
    args.update(change)
    X, y = args.pop("X"), args.pop("y")
    with pytest.raises(ValueError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        optimum.solve(X, y, **args)


def test_sparse_X_gives_the_dense_solution_without_densifying():
    # a CSR X runs L-BFGS-B on the sparse kernels (no Newton polish: that forms X densely)
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    Xs = sp.random(300, 40, density=0.1, format="csr", random_state=5)
    y = (Xs @ rng.standard_normal(40) + 0.3 * rng.standard_normal(300) > 0).astype(float)
    sparse = optimum.solve(Xs, y, alpha=1e-2)
    dense = optimum.solve(Xs.toarray(), y, alpha=1e-2)
    assert sparse.status == "converged"
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-7)
    assert sparse.loss == pytest.approx(dense.loss, rel=1e-12)
