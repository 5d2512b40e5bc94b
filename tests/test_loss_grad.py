"""loss_and_grad: finite differences, exact values from an independent formula, backend agreement,
extreme logits, sample-weight identities, and the Lipschitz constant."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gradstep as gs
from conftest import assert_close, make_data, oracle_hessian, oracle_loss_grad


def _fd_grad(f, x, h):
    """4th-order central finite difference of f at x, coordinate by coordinate."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e.flat[j] = h
        out.flat[j] = (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
    return out


def _small(n=60, d=4, seed=1, dtype=np.float64):
    X, y = make_data(n=n, d=d, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    sw = rng.uniform(0.2, 3.0, n)
    w = 0.5 * rng.standard_normal(d)
    return X, y, sw, w


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_gradient_matches_finite_difference(backend, dtype, weighted, alpha):
    X, y, sw, w = _small(dtype=dtype)
    sw = sw if weighted else None
    b = -0.4

    def f(p):
        return gs.loss_and_grad(X, y, p[:-1], p[-1], sample_weight=sw, alpha=alpha,
                                backend=backend)[0]

    loss, gw, gb = gs.loss_and_grad(X, y, w, b, sample_weight=sw, alpha=alpha, backend=backend)
    assert isinstance(loss, float) and isinstance(gb, float)
    assert gw.shape == (4,) and gw.dtype == np.float64
    fd = _fd_grad(f, np.append(w, b), h=1e-3)
    assert_close(np.append(gw, gb), fd, rtol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_gradient_matches_finite_difference_and_single_calls(backend, dtype):
    X, _, sw, _ = _small(dtype=dtype)
    rng = np.random.default_rng(7)
    K, (n, d) = 3, X.shape
    W = rng.standard_normal((K, d))
    B = rng.standard_normal(K)
    Y = (rng.random((n, K)) < 0.5).astype(np.float64)
    loss, GW, GB = gs.loss_and_grad(X, Y, W, B, sample_weight=sw, alpha=0.1, backend=backend)
    assert loss.shape == (K,) and GW.shape == (K, d) and GB.shape == (K,)
    for k in range(K):
        def f(p, k=k):
            return gs.loss_and_grad(X, Y[:, k], p[:-1], p[-1], sample_weight=sw, alpha=0.1,
                                    backend=backend)[0]

        fd = _fd_grad(f, np.append(W[k], B[k]), h=1e-3)
        assert_close(np.append(GW[k], GB[k]), fd, rtol=1e-8)
        single = gs.loss_and_grad(X, Y[:, k], W[k], B[k], sample_weight=sw, alpha=0.1,
                                  backend=backend)
        assert loss[k] == pytest.approx(single[0], rel=1e-13)
        assert_close(GW[k], single[1], rtol=1e-13)
        assert GB[k] == pytest.approx(single[2], rel=1e-13, abs=1e-15)


def test_batched_runs_share_a_1d_target(backend):
    X, y, _, _ = _small()
    W = np.array([[0.1, -0.2, 0.3, 0.0], [1.0, 1.0, -1.0, 0.5]])
    loss, GW, GB = gs.loss_and_grad(X, y, W, np.array([0.0, 0.7]), backend=backend)
    for k, b in enumerate([0.0, 0.7]):
        ref_loss, ref_gw, ref_gb, scale = oracle_loss_grad(X, y, W[k], b)
        assert loss[k] == pytest.approx(ref_loss, rel=1e-11)
        assert_close(np.append(GW[k], GB[k]), np.append(ref_gw, ref_gb), 1e-11, scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.25])
@pytest.mark.parametrize("b", [0.0, 1.3])
def test_exact_values_against_independent_formula(backend, dtype, weighted, alpha, b):
    X, y, sw, w = _small(n=200, dtype=dtype)
    sw = sw if weighted else None
    loss, gw, gb = gs.loss_and_grad(X, y, w, b, sample_weight=sw, alpha=alpha, backend=backend)
    ref_loss, ref_gw, ref_gb, scale = oracle_loss_grad(X, y, w, b, sw, alpha)
    assert loss == pytest.approx(ref_loss, rel=1e-11)
    assert_close(np.append(gw, gb), np.append(ref_gw, ref_gb), 1e-11, scale)


def test_known_value_at_zero():
    """At w = 0, b = 0 every sample has loss log 2 and residual 1/2 - y: hand-checkable."""
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    y = np.array([1, 0, 1])
    loss, gw, gb = gs.loss_and_grad(X, y, np.zeros(2), 0.0, backend="numpy")
    assert loss == pytest.approx(np.log(2.0), rel=1e-15)
    r = np.array([-0.5, 0.5, -0.5])
    np.testing.assert_allclose(gw, r @ X / 3, rtol=1e-15)
    assert gb == pytest.approx(-0.5 / 3, rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_backend_equals_numpy(compiled_backend, dtype, K, weighted):
    # n = 2000 crosses the row blocks of the compiled kernels; d = 7 is not a multiple of 4
    X, y = make_data(n=2000, d=7, seed=3, dtype=dtype)
    rng = np.random.default_rng(4)
    sw = rng.uniform(0, 2, 2000) if weighted else None
    W = rng.standard_normal((K, 7))
    B = rng.standard_normal(K)
    Y = (rng.random((2000, K)) < 0.4).astype(np.float64) if K > 1 else y
    coef, icpt = (W, B) if K > 1 else (W[0], B[0])
    got = gs.loss_and_grad(X, Y, coef, icpt, sample_weight=sw, alpha=0.05,
                           backend=compiled_backend)
    ref = gs.loss_and_grad(X, Y, coef, icpt, sample_weight=sw, alpha=0.05, backend="numpy")
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
    assert_close(np.column_stack([np.atleast_2d(got[1]), np.atleast_1d(got[2])]),
                 np.column_stack([np.atleast_2d(ref[1]), np.atleast_1d(ref[2])]), 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("label", [0, 1])
def test_extreme_logits_are_finite_with_right_asymptotics(backend, dtype, sign, label):
    # one row with z = sign * 1e4 (X scaled by 1e4), plus a row at z = 0 so y has both classes
    X = np.array([[sign * 1e4], [0.0]], dtype=dtype)
    y = np.array([label, 1 - label])
    loss, gw, gb = gs.loss_and_grad(X, y, np.array([1.0]), 0.0, backend=backend)
    assert np.isfinite(loss) and np.isfinite(gw).all() and np.isfinite(gb)
    z = sign * 1e4
    wrong = (z > 0) != (label == 1)
    row_loss = abs(z) if wrong else 0.0  # log(1 + e^|z|) = |z| + e^-|z|; e^-1e4 underflows
    assert loss == pytest.approx((row_loss + np.log(2.0)) / 2, rel=1e-14)
    row_residual = (1.0 if z > 0 else 0.0) - label  # sigmoid(z) - y, exactly 0 or +-1
    assert gw[0] == pytest.approx(row_residual * z / 2, rel=1e-14, abs=1e-300)
    assert gb == pytest.approx((row_residual + 0.5 - (1 - label)) / 2, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_batched_and_with_penalty(backend, dtype):
    X = (1e4 * np.array([[1.0], [-1.0], [1.0], [-1.0]])).astype(dtype)
    y = np.array([1, 1, 0, 0])
    loss, gw, gb = gs.loss_and_grad(X, y, np.array([1.0]), 0.0, alpha=2.0, backend=backend)
    # rows 2 and 3 are wrong by |z| = 1e4 each; mean 5000 plus alpha/2 * 1
    assert loss == pytest.approx(5000.0 + 1.0, rel=1e-14)
    assert gw[0] == pytest.approx((1e4 + 1e4) / 4 + 2.0, rel=1e-14)
    assert gb == pytest.approx(0.0, abs=1e-12)
    L, GW, GB = gs.loss_and_grad(X, np.column_stack([y, 1 - y]), np.array([[1.0], [-1.0]]),
                                 np.zeros(2), backend=backend)
    np.testing.assert_allclose(L, [5000.0, 5000.0], rtol=1e-14)
    np.testing.assert_allclose(GW[:, 0], [5000.0, -5000.0], rtol=1e-14)


def test_unit_weights_and_weight_scaling(backend):
    X, y, sw, w = _small()
    plain = gs.loss_and_grad(X, y, w, 0.2, alpha=0.1, backend=backend)
    ones = gs.loss_and_grad(X, y, w, 0.2, sample_weight=np.ones(len(y)), alpha=0.1,
                            backend=backend)
    weighted = gs.loss_and_grad(X, y, w, 0.2, sample_weight=sw, alpha=0.1, backend=backend)
    doubled = gs.loss_and_grad(X, y, w, 0.2, sample_weight=2 * sw, alpha=0.1, backend=backend)
    # the loss is normalized by the sum of the weights: a common factor changes nothing
    for a, b in [(plain, ones), (weighted, doubled)]:
        assert a[0] == pytest.approx(b[0], rel=1e-14)
        assert_close(np.append(a[1], a[2]), np.append(b[1], b[2]), 1e-13)
    assert weighted[0] != pytest.approx(plain[0], rel=1e-6)  # but weights do matter


def test_integer_weights_equal_repeated_rows(backend):
    X, y, _, w = _small(n=40)
    counts = np.random.default_rng(5).integers(0, 4, 40)
    counts[:2] = 1  # keep both classes
    rep = np.repeat(np.arange(40), counts)
    a = gs.loss_and_grad(X, y, w, -0.1, sample_weight=counts, alpha=0.2, backend=backend)
    b = gs.loss_and_grad(X[rep], y[rep], w, -0.1, alpha=0.2, backend=backend)
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    assert_close(np.append(a[1], a[2]), np.append(b[1], b[2]), 1e-12)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(1, 30),
    d=st.integers(1, 6),
    alpha=st.sampled_from([0.0, 1e-3, 0.7]),
    weighted=st.booleans(),
)
def test_property_matches_independent_formula(backend, data, n, d, alpha, weighted):
    elements = st.floats(-3, 3, allow_nan=False, allow_subnormal=False)
    X = data.draw(arrays(np.float64, (n, d), elements=elements), label="X")
    y = data.draw(arrays(np.int64, n, elements=st.integers(0, 1)), label="y")
    w = data.draw(arrays(np.float64, d, elements=elements), label="w")
    b = data.draw(elements, label="b")
    sw = None
    if weighted:
        sw = data.draw(arrays(np.float64, n, elements=st.floats(0.01, 5)), label="sw")
    loss, gw, gb = gs.loss_and_grad(X, y, w, b, sample_weight=sw, alpha=alpha, backend=backend)
    ref_loss, ref_gw, ref_gb, scale = oracle_loss_grad(X, y, w, b, sw, alpha)
    # |z| <= 57 here; the literal form log(1 + e^z) - y z loses ~eps * |z| absolute to cancellation
    assert loss == pytest.approx(ref_loss, rel=1e-11, abs=1e-13)
    assert_close(np.append(gw, gb), np.append(ref_gw, ref_gb), 1e-11, max(scale, 1e-300))


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_lipschitz_constant(fit_intercept, weighted):
    X, y, sw, _ = _small(n=100, d=3)
    s = sw if weighted else np.ones(100)
    A = np.hstack([X, np.ones((100, 1))]) if fit_intercept else X
    expected = np.linalg.eigvalsh((A * s[:, None]).T @ A)[-1] / (4 * s.sum()) + 0.3
    # Lanczos, rounded up by its error estimate: never below, within 1e-3 above
    L = gs.lipschitz_constant(X, sw if weighted else None, 0.3, fit_intercept)
    assert expected <= L <= expected * (1 + 1e-3)
    # and it bounds the Hessian: sigma(1-sigma) <= 1/4
    rng = np.random.default_rng(0)
    for _ in range(3):
        w = rng.standard_normal(3)
        H = oracle_hessian(X, y, w, 0.5, s, 0.3, fit_intercept)
        assert np.linalg.eigvalsh(H)[-1] <= expected * (1 + 1e-12)
