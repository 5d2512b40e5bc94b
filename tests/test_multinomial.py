"""The multinomial (softmax) loss: its gradient and Hessian against finite differences, the
kernels against the specification, agreement with scikit-learn, and the estimator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from sklearn.datasets import load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import gradstep as gs
from conftest import make_data
from gradstep._backends import softmax_reference
from gradstep.multinomial import multinomial_oracle


def _objective(X, y, W, b, alpha, sw=None):
    """Independent: mean weighted cross-entropy + alpha/2 ||W||^2 (scipy's logsumexp)."""
    s = np.ones(len(y)) if sw is None else sw
    Z = X @ W.T + b
    ce = logsumexp(Z, axis=1) - Z[np.arange(len(y)), y]
    return (s * ce).sum() / s.sum() + 0.5 * alpha * (W * W).sum()


def _problem(n=120, d=4, C=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, C, n)
    W = rng.standard_normal((C, d)) * 0.5
    b = rng.standard_normal(C) * 0.3
    return X, y, W, b


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_and_hessian_match_finite_differences(backend, weighted):
    if not gs.backends()[backend]:
        pytest.skip(f"{backend} missing")
    X, y, W, b = _problem()
    sw = np.random.default_rng(1).uniform(0.2, 3, len(y)) if weighted else None
    oracle, _ = multinomial_oracle(X, y, sample_weight=sw, alpha=0.1, backend=backend,
                                   n_threads=2, fit_intercept=True)
    P = oracle.pack(W, b, 1, "coef")
    loss, G = oracle.loss_grad(P, np.ones(1, np.uint8))
    assert loss[0] == pytest.approx(_objective(X, y, W, b, 0.1, sw), rel=1e-12)
    h = 1e-6
    for j in range(P.shape[1]):
        e = np.zeros_like(P)
        e[0, j] = h
        up = oracle.loss_grad(P + e, np.ones(1, np.uint8))[0][0]
        down = oracle.loss_grad(P - e, np.ones(1, np.uint8))[0][0]
        assert G[0, j] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9)
    V = np.random.default_rng(2).standard_normal(P.shape)
    HV = oracle.hessp(P, V, np.ones(1, np.uint8))
    gp = oracle.loss_grad(P + h * V, np.ones(1, np.uint8))[1]
    gm = oracle.loss_grad(P - h * V, np.ones(1, np.uint8))[1]
    np.testing.assert_allclose(HV, (gp - gm) / (2 * h), rtol=1e-6, atol=1e-8)


# Shapes for the C++ kernel's tiles (gemm_tiles.hpp): (3000, 7, 4) one chunk per block and one
# quad of classes; (1001, 67, 7) several chunks per block, a last block of 233 rows (one row
# after the groups of four), 67 = 5 x 12 + 4 + 3 features, classes in panels of 3 + 2 + 2; (517,
# 30, 13) 13 classes in quads of 2 + 2 and panels of 3 + 3 + 3 + 2 + 2.
@pytest.mark.parametrize("backend", ["numba", "cpp"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(3000, 7, 4), (1001, 67, 7), (517, 30, 13)])
def test_compiled_kernels_agree_with_the_specification(backend, dtype, shape):
    if not gs.backends()[backend]:
        pytest.skip(f"{backend} missing")
    from gradstep._backends import softmax_cpp, softmax_numba

    kernels = softmax_numba if backend == "numba" else softmax_cpp
    n, d, C = shape
    X, y, W, b = _problem(n=n, d=d, C=C)
    X = X.astype(dtype)
    rng = np.random.default_rng(3)
    P = rng.standard_normal((3, C * (d + 1))) * 0.3
    SW = rng.uniform(0, 2, (n, 3))
    alpha = np.array([0.0, 0.1, 1.0])
    rows = rng.permutation(n)[:501].astype(np.int64)
    for r in (np.empty(0, np.int64), rows):
        args = (X, y.astype(np.int64), SW, P, alpha, r, np.array([1, 0, 1], np.uint8), 2, None)
        ref = softmax_reference.loss_grad(*args, n_classes=C)
        got = kernels.loss_grad(*args, n_classes=C)
        for a, e in zip(got, ref):
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15)
    V = rng.standard_normal(P.shape)
    act = np.ones(3, np.uint8)
    np.testing.assert_allclose(
        kernels.hessp(X, SW, P, V, alpha, act, 2, n_classes=C),
        softmax_reference.hessp(X, SW, P, V, alpha, act, 2, n_classes=C), rtol=1e-12,
        atol=1e-15)
    one = kernels.loss_grad(X, y.astype(np.int64), SW, P, alpha, np.empty(0, np.int64), act, 1,
                            None, n_classes=C)
    two = kernels.loss_grad(X, y.astype(np.int64), SW, P, alpha, np.empty(0, np.int64), act, 2,
                            None, n_classes=C)
    np.testing.assert_array_equal(one[0], two[0])  # the same bits for any thread count
    np.testing.assert_array_equal(one[1], two[1])
    hv = [kernels.hessp(X, SW, P, V, alpha, act, t, n_classes=C) for t in (1, 2)]
    np.testing.assert_array_equal(hv[0], hv[1])


def test_two_classes_equal_the_binary_loss_up_to_the_parametrization():
    X, y = make_data(n=300, d=4)
    binary = gs.fit(X, y, "lbfgs", alpha=0.01, tol=1e-10)
    multi = gs.fit(X, y, "lbfgs", alpha=0.02, tol=1e-10, loss="multinomial")
    # softmax of (w1 - w0): the difference of the two classes is the binary weight vector;
    # at the optimum (w0, w1) = (-w/2, w/2), whose penalty alpha/2 |w|^2/2 needs twice alpha
    np.testing.assert_allclose(multi.coef[1] - multi.coef[0], binary.coef, rtol=1e-6, atol=1e-8)
    p_binary = 1 / (1 + np.exp(-(X @ binary.coef + binary.intercept)))
    Z = X @ multi.coef.T + multi.intercept
    np.testing.assert_allclose(softmax(Z, axis=1)[:, 1], p_binary, atol=1e-7)


@pytest.mark.parametrize("load", [load_iris, load_wine])
@pytest.mark.parametrize("rule", ["lbfgs", "newton"])
def test_probabilities_equal_logistic_regression(load, rule):
    X, y = load(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ours = gs.GDClassifier(rule=rule, tol=1e-8).fit(X, y)
    theirs = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X, y)
    assert ours.coef_.shape == theirs.coef_.shape
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-4)
    assert ours.status_ == "converged"


def test_multinomial_every_rule_and_minibatches():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rules = list(gs.rules.RULES)
    res = gs.fit(X, y, rules, loss="multinomial", alpha=0.01, max_iter=30)
    assert res.coef.shape == (len(rules), 3, 4) and res.intercept.shape == (len(rules), 3)
    assert np.isfinite(res.loss).all() and (res.loss < np.log(3)).all()
    mb = gs.fit(X, y, "adam", lr=0.05, batch_size=16, loss="multinomial", max_iter=20,
                random_state=0)
    assert mb.loss < 0.3


def test_ovr_is_still_available_and_batched():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ovr = gs.GDClassifier(multi_class="ovr").fit(X, y)
    assert ovr.n_iter_.shape == (3,)
    multi = gs.GDClassifier().fit(X, y)
    assert multi.n_iter_.shape == (1,)
    assert multi.score(X, y) > ovr.score(X, y)  # 0.97 vs 0.87 at C=1 on iris


def test_partial_fit_multinomial_with_a_batch_missing_a_class():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = gs.GDClassifier(rule="adam", lr=0.05)
    clf.partial_fit(X[y != 2], y[y != 2], classes=[0, 1, 2])
    assert clf.coef_.shape == (3, 4)
    clf.partial_fit(X, y)
    assert clf.predict_proba(X).shape == (150, 3)


def test_bad_multinomial_input():
    X, y, _, _ = _problem()
    with pytest.raises(ValueError, match="loss must be"):
        gs.fit(X, y, loss="softmax")
    with pytest.raises(ValueError, match="not in classes"):
        gs.fit(X, y, loss="multinomial", classes=[0, 1])
    with pytest.raises(ValueError, match="classes is for loss='multinomial'"):
        gs.fit(X, y % 2, classes=[0, 1])


@pytest.mark.parametrize("l1_ratio", [0.0, 0.5])
def test_csr_input_gives_the_dense_fit(l1_ratio):
    # gs.fit(loss="multinomial") takes CSR as it is (the NumPy softmax kernels on SciPy's
    # products), L1 included, and lands on the dense fit's weights
    import scipy.sparse as sp

    rng = np.random.default_rng(11)
    Xs = sp.random(300, 25, density=0.2, format="csr", random_state=11)
    y = rng.integers(0, 3, 300)
    kw = dict(loss="multinomial", alpha=0.01, l1_ratio=l1_ratio, tol=1e-10, max_iter=2000)
    sparse = gs.fit(Xs, y, "lbfgs", **kw)
    dense = gs.fit(Xs.toarray(), y, "lbfgs", **kw)
    assert sparse.status == dense.status == "converged"
    assert sparse.backend.endswith("csr")
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-8)
    np.testing.assert_allclose(sparse.intercept, dense.intercept, atol=1e-8)
    if l1_ratio:
        assert np.count_nonzero(sparse.coef == 0.0) > 0


# ---- the public functions: gs.loss_and_grad / gs.hessp with loss="multinomial" ------------


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
def test_public_loss_and_grad_is_the_objective_and_its_gradient(backend):
    if not gs.backends()[backend]:
        pytest.skip(f"{backend} missing")
    X, y, W, b = _problem(seed=3)
    sw = np.random.default_rng(4).uniform(0.2, 3, len(y))
    loss, G, g0 = gs.loss_and_grad(X, y, W, b, sample_weight=sw, alpha=0.1,
                                   loss="multinomial", backend=backend)
    assert isinstance(loss, float) and G.shape == W.shape and g0.shape == b.shape
    assert loss == pytest.approx(_objective(X, y, W, b, 0.1, sw), rel=1e-12)
    # central differences of the independent objective, every coordinate of W and b
    h = 1e-6
    for idx in np.ndindex(W.shape):
        E = np.zeros_like(W)
        E[idx] = h
        fd = (_objective(X, y, W + E, b, 0.1, sw) - _objective(X, y, W - E, b, 0.1, sw)) / (2 * h)
        assert G[idx] == pytest.approx(fd, rel=1e-6, abs=1e-9)
    for c in range(len(b)):
        e = np.zeros_like(b)
        e[c] = h
        fd = (_objective(X, y, W, b + e, 0.1, sw) - _objective(X, y, W, b - e, 0.1, sw)) / (2 * h)
        assert g0[c] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_public_functions_batch_runs_and_take_csr_and_classes():
    import scipy.sparse as sp

    X, y, W, b = _problem(seed=5)
    W2 = np.stack([W, -W, 2 * W])
    b2 = np.stack([b, b[::-1], np.zeros(3)])
    alphas = np.array([0.0, 0.1, 1.0])
    loss, G, g0 = gs.loss_and_grad(X, y, W2, b2, alpha=alphas, loss="multinomial")
    assert loss.shape == (3,) and G.shape == (3, 3, 4) and g0.shape == (3, 3)
    for k in range(3):  # each run is the single call at its own alpha (to rounding: the
        one = gs.loss_and_grad(X, y, W2[k], b2[k], alpha=alphas[k],  # batched kernel's order)
                               loss="multinomial")
        assert loss[k] == pytest.approx(one[0], rel=1e-14)
        np.testing.assert_allclose(G[k], one[1], rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(g0[k], one[2], rtol=1e-13, atol=1e-16)
    # CSR: the dense result; a scalar intercept is every class's
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    dense = gs.loss_and_grad(Xs.toarray(), y, W, 0.25, loss="multinomial", backend="numpy")
    sparse = gs.loss_and_grad(Xs, y, W, np.full(3, 0.25), loss="multinomial")
    assert sparse[0] == pytest.approx(dense[0], rel=1e-13)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sparse[2], dense[2], rtol=1e-12, atol=1e-15)
    # a mini-batch without class 2: classes keeps C = 3 rows, and class 2's row only sees its
    # probability, whose gradient (a mean of p_2 x) is positive on positive rows
    batch = y != 2
    Xb = np.abs(X[batch])
    _, Gb, gb = gs.loss_and_grad(Xb, y[batch], np.zeros((3, 4)), loss="multinomial",
                                 classes=[0, 1, 2])
    np.testing.assert_allclose(Gb[2], Xb.mean(axis=0) / 3, rtol=1e-12)
    assert gb[2] == pytest.approx(1 / 3)


def test_public_hessp_is_the_gradients_derivative():
    X, y, W, b = _problem(seed=6)
    rng = np.random.default_rng(7)
    V, v0 = rng.standard_normal(W.shape), rng.standard_normal(3)
    HV, hv0 = gs.hessp(X, y, W, b, V, v0, alpha=0.3, loss="multinomial")
    assert HV.shape == W.shape and hv0.shape == (3,)
    h = 1e-6
    _, Gp, gp = gs.loss_and_grad(X, y, W + h * V, b + h * v0, alpha=0.3, loss="multinomial")
    _, Gm, gm = gs.loss_and_grad(X, y, W - h * V, b - h * v0, alpha=0.3, loss="multinomial")
    np.testing.assert_allclose(HV, (Gp - Gm) / (2 * h), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(hv0, (gp - gm) / (2 * h), rtol=1e-6, atol=1e-8)
    # K points, one vector: K products
    HK, hK = gs.hessp(X, y, np.stack([W, 0 * W]), np.stack([b, b]), V, v0, alpha=0.3,
                      loss="multinomial")
    assert HK.shape == (2, 3, 4) and hK.shape == (2, 3)
    np.testing.assert_allclose(HK[0], HV, rtol=1e-13, atol=1e-16)


def test_public_functions_name_bad_multinomial_input():
    X, y, W, b = _problem()
    with pytest.raises(ValueError, match=r"coef must have shape \(3, 4\) or \(K, 3, 4\)"):
        gs.loss_and_grad(X, y, W.T, b, loss="multinomial")
    with pytest.raises(ValueError, match=r"coef must have shape \(3, 4\)"):
        gs.loss_and_grad(X, y, W.ravel(), b, loss="multinomial")  # flat: no silent reshape
    with pytest.raises(ValueError, match=r"intercept must be a scalar or have shape \(3,\)"):
        gs.loss_and_grad(X, y, W, np.zeros(4), loss="multinomial")
    with pytest.raises(ValueError, match=r"vec_coef must have shape \(3, 4\)"):
        gs.hessp(X, y, W, b, W[:2], loss="multinomial")
    with pytest.raises(ValueError, match="loss must be"):
        gs.loss_and_grad(X, y, W, b, loss="softmax")
    with pytest.raises(ValueError, match="classes is for loss='multinomial'"):
        gs.loss_and_grad(X, y % 2, W[0], classes=[0, 1])
    with pytest.raises(ValueError, match="not in classes"):
        gs.loss_and_grad(X, y, W[:2], b[:2], loss="multinomial", classes=[0, 1])
    bad = X.copy()
    bad[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at row 5"):
        gs.loss_and_grad(bad, y, W, b, loss="multinomial")


@pytest.mark.parametrize("backend", ["numba", "cpp"])
def test_compiled_dense_loss_is_log1p_of_the_other_classes_sum(backend):
    # rows whose label (class 0) leads with score 0: each row's loss is log1p(T), T the other
    # classes' sum of exps, here over (0, 9] (the C++ link's vector log1p takes T's exponent from
    # its bits: T above 1 and 2 and 4 must come out right, and T near 0 to full relative accuracy)
    if not gs.backends()[backend]:
        pytest.skip(f"{backend} missing")
    from gradstep._backends import softmax_cpp, softmax_numba

    kernels = softmax_numba if backend == "numba" else softmax_cpp
    C, n = 10, 4 * 250
    rng = np.random.default_rng(7)
    Z = -np.concatenate([rng.uniform(0, hi, (n // 4, C)) for hi in (0.3, 3.0, 40.0, 40.0)])
    Z[:, 0] = 0.0
    P = np.hstack([np.eye(C), np.zeros((C, 1))]).reshape(1, -1)  # scores = X
    T = np.exp(Z[:, 1:]).sum(axis=1)
    assert T.max() > 8 and T.min() < 1e-6
    assert all(((T > lo) & (T < 2 * lo)).any() for lo in (0.5, 1, 2, 4))
    SW = np.zeros((n, 1))
    for row in range(0, n, 13):  # one row at a time through the groups of four: its own loss
        SW[:] = 0.0
        SW[row] = 1.0
        loss, _ = kernels.loss_grad(Z, np.zeros(n, np.int64), SW, P, np.zeros(1),
                                    np.empty(0, np.int64), np.ones(1, np.uint8), 1, None,
                                    n_classes=C)
        assert loss[0] == pytest.approx(np.log1p(T[row]), rel=2e-15, abs=0)


@pytest.mark.parametrize("backend", ["numba", "cpp"])
def test_compiled_dense_kernels_keep_confident_rows_accurate(backend):
    # nine rows (two groups of four and one row alone) whose label leads by gap: the loss is
    # log1p((C - 1) exp(-gap)) and the label's residual minus the others' probability, to full
    # relative accuracy (not logsumexp(z) - z_y and p_y - 1, which are 0 from a gap of ~37 on)
    if not gs.backends()[backend]:
        pytest.skip(f"{backend} missing")
    from gradstep._backends import softmax_cpp, softmax_numba

    kernels = softmax_numba if backend == "numba" else softmax_cpp
    C = 3
    for gap in (5.0, 40.0, 300.0):
        X = np.ones((9, 1))
        P = np.array([[gap, 0.0, 0.0, 0.0, 0.0, 0.0]])  # class 0 scores gap, the others 0
        loss, G = kernels.loss_grad(X, np.zeros(9, np.int64), np.ones((9, 0)), P, np.zeros(1),
                                    np.empty(0, np.int64), np.ones(1, np.uint8), 1, None,
                                    n_classes=C)
        other = (C - 1) * np.exp(-gap)
        assert loss[0] == pytest.approx(np.log1p(other), rel=1e-14)
        assert G[0, 0] == pytest.approx(-other / (1 + other), rel=1e-14)
