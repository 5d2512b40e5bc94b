"""fit: properties from the mathematics, divergence, FitResult semantics, stopping rules and
reproducibility."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gradstep as gs
from conftest import make_data, oracle_loss_grad, oracle_solution

ALL_RULES = ["sgd", "momentum", "nesterov", "normalized", "adagrad", "rmsprop", "adadelta",
             "adam"]
RATES = [0.5, 0.05, 0.05, 0.05, 0.1, 0.01, 1.0, 0.01]


# ---- properties ------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_normalized_step_has_length_lr(backend, data, fit_intercept):
    X, y = data
    res = gs.fit(X, y, ["normalized", "normalized"], lr=[0.05, 0.3], max_iter=150, tol=None,
                 fit_intercept=fit_intercept, backend=backend)
    for k, lr in enumerate([0.05, 0.3]):
        np.testing.assert_allclose(res.history.step_norm[k, 1:], lr, rtol=1e-12)
    # a constant rate cannot settle: it keeps bouncing at a distance of about lr
    assert res.history.grad_norm[1, -1] > 1e-3
    # with a decaying schedule every step has the length of that step's rate
    res = gs.fit(X, y, "normalized", lr=0.3, schedule="inverse_power", power=0.6, max_iter=150,
                 tol=None, fit_intercept=fit_intercept, backend=backend)
    np.testing.assert_allclose(res.history.step_norm[1:], res.history.lr[1:], rtol=1e-12)


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(2, 25), d=st.integers(1, 5),
       lr=st.floats(1e-3, 10.0), alpha=st.sampled_from([0.0, 0.5]))
def test_property_normalized_step_length(backend, data, n, d, lr, alpha):
    X = data.draw(arrays(np.float64, (n, d), elements=st.floats(-5, 5, allow_subnormal=False)))
    y = data.draw(arrays(np.int64, n, elements=st.integers(0, 1)))
    assume(0 < y.sum() < n)
    res = gs.fit(X, y, "normalized", lr=lr, alpha=alpha, max_iter=4, tol=None, backend=backend)
    h = res.history
    moved = h.grad_norm[:-1] > 1e-12  # g = 0 (or below eps) gives no step (or a shorter one)
    np.testing.assert_allclose(h.step_norm[1:][moved], lr, rtol=1e-12)
    assert np.all(h.step_norm[1:][h.grad_norm[:-1] == 0] == 0)
    assert np.isfinite(res.coef).all()


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_sgd_with_auto_lr_never_increases_loss(backend, data, fit_intercept, weighted):
    X, y = data
    sw = np.random.default_rng(2).uniform(0.1, 4, len(y)) if weighted else None
    res = gs.fit(X, y, "sgd", lr="auto", alpha=1e-3, sample_weight=sw, max_iter=300, tol=None,
                 fit_intercept=fit_intercept, backend=backend)
    loss = res.history.loss
    assert np.all(loss[1:] <= loss[:-1] * (1 + 1e-15))
    assert loss[-1] < loss[0] - 0.05  # and it does make progress
    # lr="auto" is 1/L, the documented Lipschitz constant
    L = gs.lipschitz_constant(X, sw, 1e-3, fit_intercept)
    assert res.rules.lr == pytest.approx(1 / L, rel=1e-15)


def test_gradient_norm_lies_in_the_band_alpha_to_L_times_distance(backend, data):
    """For an alpha-strongly convex, L-smooth loss: alpha dist <= ||g|| <= L dist."""
    X, y = data
    alpha = 0.1
    w_star, _ = oracle_solution(X, y, alpha=alpha, fit_intercept=False)
    L = np.linalg.eigvalsh(X.T @ X)[-1] / (4 * len(y)) + alpha
    assert L <= gs.lipschitz_constant(X, None, alpha, False) <= L * (1 + 1e-3)
    w0 = np.full(X.shape[1], 2.0)
    res = gs.fit(X, y, ["sgd", "normalized", "adam", "momentum"], lr=["auto", 0.05, 0.05, 0.5],
                 alpha=alpha, fit_intercept=False, max_iter=200, tol=None, coef_init=w0,
                 reference=w_star, backend=backend)
    h = res.history
    assert h.distance is not None and h.distance.shape == h.grad_norm.shape
    np.testing.assert_allclose(h.distance[:, 0], np.linalg.norm(w0 - w_star), rtol=1e-14)
    assert np.all(alpha * h.distance <= h.grad_norm + 1e-9)
    assert np.all(h.grad_norm <= L * h.distance + 1e-9)
    # the distance history is the distance of the returned weights at the end
    np.testing.assert_allclose(h.distance[:, -1], np.linalg.norm(res.coef - w_star, axis=1),
                               rtol=1e-12)
    assert h.distance[0, -1] < 1e-6  # vanilla GD at 1/L gets there


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fit_converges_to_the_minimizer(backend, data, fit_intercept):
    X, y = data
    sw = np.random.default_rng(8).uniform(0.5, 2, len(y))
    w_star, b_star = oracle_solution(X, y, sw, alpha=0.01, fit_intercept=fit_intercept)
    res = gs.fit(X, y, "sgd", lr="auto", alpha=0.01, sample_weight=sw, tol=1e-10,
                 max_iter=20000, fit_intercept=fit_intercept, backend=backend)
    assert res.status == "converged"
    np.testing.assert_allclose(np.append(res.coef, res.intercept), np.append(w_star, b_star),
                               atol=1e-7)
    _, gw, gb, _ = oracle_loss_grad(X, y, res.coef, res.intercept, sw, 0.01)
    assert np.max(np.abs(np.append(gw, gb if fit_intercept else 0.0))) <= 1e-10 * (1 + 1e-6)
    assert res.loss == pytest.approx(oracle_loss_grad(X, y, w_star, b_star, sw, 0.01)[0],
                                     rel=1e-12)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_doubling_every_weight_changes_nothing(backend, data, batch_size):
    """J is normalized by sum(s): a common factor on the weights leaves every step unchanged."""
    X, y = data
    sw = np.random.default_rng(3).uniform(0.2, 3, len(y))
    kw = dict(lr=RATES, max_iter=30, tol=None, batch_size=batch_size, random_state=1,
              backend=backend)
    a = gs.fit(X, y, ALL_RULES, sample_weight=sw, **kw)
    b = gs.fit(X, y, ALL_RULES, sample_weight=2 * sw, **kw)
    np.testing.assert_allclose(b.coef, a.coef, rtol=1e-13)
    np.testing.assert_allclose(b.history.step_norm, a.history.step_norm, rtol=1e-13)
    ones = gs.fit(X, y, ALL_RULES, sample_weight=np.ones(len(y)), **kw)
    none = gs.fit(X, y, ALL_RULES, **kw)
    np.testing.assert_allclose(ones.coef, none.coef, rtol=1e-13)


def test_integer_weights_equal_repeated_rows(backend, data):
    X, y = data
    counts = np.random.default_rng(4).integers(0, 3, len(y))
    rep = np.repeat(np.arange(len(y)), counts)
    a = gs.fit(X, y, ALL_RULES, lr=RATES, sample_weight=counts, max_iter=40, tol=None,
               backend=backend)
    b = gs.fit(X[rep], y[rep], ALL_RULES, lr=RATES, max_iter=40, tol=None, backend=backend)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.history.loss, b.history.loss, rtol=1e-12)


def test_step_rules_and_the_scale_of_the_gradient(backend, data):
    """Scaling X by c scales the gradient of w (at w = 0): the vanilla step scales with it,
    the normalized step stays lr, and Adam's first step moves every coordinate by ~lr."""
    X, y = data
    lr = 0.01
    for c in (1.0, 100.0):
        res = gs.fit(c * X, y, ["sgd", "normalized", "adam"], lr=lr, max_iter=1, tol=None,
                     backend=backend)
        g0 = res.history.grad_norm[0, 0]
        steps = res.history.step_norm[:, 1]
        assert steps[0] == pytest.approx(lr * g0, rel=1e-12)
        assert steps[1] == pytest.approx(lr, rel=1e-12)
        # D = d + 1 coordinates each move by lr |g| / (|g| + 1e-8)
        assert steps[2] == pytest.approx(lr * np.sqrt(X.shape[1] + 1), rel=1e-5)
    assert g0 > 30  # the gradient did grow with c


def test_batch_of_all_rows_equals_full_batch(backend, data):
    X, y = data
    full = gs.fit(X, y, ALL_RULES, lr=RATES, max_iter=20, tol=None, backend=backend)
    mini = gs.fit(X, y, ALL_RULES, lr=RATES, max_iter=20, tol=None, batch_size=len(y),
                  random_state=0, backend=backend)
    np.testing.assert_allclose(mini.coef, full.coef, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(mini.intercept, full.intercept, rtol=1e-11, atol=1e-13)


# ---- divergence ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 32])
def test_divergence_is_reported_and_the_sweep_goes_on(backend, data, batch_size):
    X, y = data
    with pytest.warns(gs.DivergenceWarning, match=r"run 0 \(sgd"):
        res = gs.fit(X, y, "sgd", lr=[1e6, "auto"], alpha=10.0, max_iter=2000,
                     batch_size=batch_size, random_state=0, backend=backend)
    assert list(res.status) == ["diverged", "converged"]
    assert np.isfinite(res.coef).all() and np.isfinite(res.intercept).all()
    assert np.isfinite(res.loss).all()
    assert res.n_iter[0] < res.n_iter[1] or batch_size is None
    # the diverged run's history stops with it and is finite up to there
    n0 = res.n_iter[0]
    assert np.isfinite(res.history.loss[0, : n0 + 1]).all()
    assert np.isnan(res.history.loss[0, n0 + 1:]).all()
    # the other run reached the strongly convex minimum (mini-batches: its neighbourhood)
    w_star, b_star = oracle_solution(X, y, alpha=10.0)
    if batch_size is None:
        np.testing.assert_allclose(res.coef[1], w_star, atol=1e-5)
    else:
        best = oracle_loss_grad(X, y, w_star, b_star, alpha=10.0)[0]
        assert best <= res.loss[1] <= best + 1e-2


def test_single_diverged_run(backend, data):
    X, y = data
    with pytest.warns(gs.DivergenceWarning) as record:
        res = gs.fit(X, y, "sgd", lr=1e6, alpha=10.0, max_iter=2000, backend=backend)
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert res.status == "diverged"
    assert np.isfinite(res.coef).all() and np.isfinite(res.loss)
    assert isinstance(res.n_iter, int) and res.n_iter < 2000
    # the returned weights are the last ones with a finite loss: res.loss is their loss
    loss_at_coef = oracle_loss_grad(X, y, res.coef, res.intercept, alpha=10.0)[0]
    assert np.isfinite(loss_at_coef)
    assert res.loss == pytest.approx(loss_at_coef, rel=1e-12)
    assert res.history.loss[-1] == res.loss


def test_no_warning_without_divergence(backend, data):
    X, y = data
    res = gs.fit(X, y, "sgd", lr=2.0, alpha=0.1, max_iter=50, backend=backend)  # filterwarnings
    assert res.status in ("converged", "max_iter")


# ---- FitResult -------------------------------------------------------------------------------


def test_single_run_result(backend, data):
    X, y = data
    res = gs.fit(X, y, "adam", lr=0.05, max_iter=40, backend=backend)
    assert not res.batched
    assert res.coef.shape == (5,) and res.coef.dtype == np.float64
    assert type(res.intercept) is float and type(res.n_iter) is int
    assert type(res.status) is str and type(res.loss) is float
    assert res.status == "max_iter" and res.n_iter == 40
    assert isinstance(res.rules, gs.Adam) and res.rules.lr == 0.05
    assert res.backend == backend
    np.testing.assert_array_equal(res.classes, [0, 1])
    h = res.history
    for arr in (h.loss, h.grad_norm, h.step_norm, h.lr):
        assert arr.shape == (41,) and np.isfinite(arr).all()
    assert h.step_norm[0] == 0.0 and h.lr[0] == 0.0 and h.distance is None
    # entry 0 is the starting point, the last entry the returned weights
    ref = oracle_loss_grad(X, y, np.zeros(5), 0.0)
    assert h.loss[0] == pytest.approx(ref[0], rel=1e-12)
    assert h.grad_norm[0] == pytest.approx(np.linalg.norm(np.append(ref[1], ref[2])), rel=1e-12)
    assert h.loss[-1] == pytest.approx(oracle_loss_grad(X, y, res.coef, res.intercept)[0],
                                       rel=1e-12)
    assert res.loss == h.loss[-1]
    assert gs.fit(X, y, "adam", max_iter=3, history=False, backend=backend).history is None


def test_labels_other_than_0_1(backend, data):
    X, y = data
    a = gs.fit(X, y, max_iter=20, backend=backend)
    b = gs.fit(X, np.where(y == 1, "yes", "no"), max_iter=20, backend=backend)  # "yes" > "no"
    c = gs.fit(X, np.where(y == 1, 7, -3), max_iter=20, backend=backend)
    np.testing.assert_array_equal(b.coef, a.coef)
    np.testing.assert_array_equal(c.coef, a.coef)
    assert list(b.classes) == ["no", "yes"] and list(c.classes) == [-3, 7]


def test_batched_result_and_nan_padding(backend, data):
    X, y = data
    res = gs.fit(X, y, ["sgd", "sgd", "adam"], lr=["auto", 1e-4, 0.05], alpha=0.05, tol=1e-5,
                 max_iter=400, backend=backend)
    K = 3
    assert res.batched
    assert res.coef.shape == (K, 5) and res.intercept.shape == (K,)
    assert res.n_iter.shape == (K,) and res.n_iter.dtype.kind == "i"
    assert res.status.shape == (K,) and res.loss.shape == (K,)
    assert isinstance(res.rules, tuple) and len(res.rules) == K
    assert res.status[0] == "converged" and res.status[1] == "max_iter"
    length = res.n_iter.max() + 1
    h = res.history
    for arr in (h.loss, h.grad_norm, h.step_norm, h.lr):
        assert arr.shape == (K, length)
        for k in range(K):
            assert np.isfinite(arr[k, : res.n_iter[k] + 1]).all()
            assert np.isnan(arr[k, res.n_iter[k] + 1:]).all()
    assert res.n_iter[0] < res.n_iter[1] == 400
    np.testing.assert_array_equal(h.step_norm[:, 0], 0.0)
    np.testing.assert_array_equal(h.lr[:, 0], 0.0)
    # converged: the largest gradient entry is <= tol
    _, gw, gb, _ = oracle_loss_grad(X, y, res.coef[0], res.intercept[0], alpha=0.05)
    assert np.max(np.abs(np.append(gw, gb))) <= 1e-5 * (1 + 1e-9)


def test_single_element_lists_are_batched(backend, data):
    X, y = data
    res = gs.fit(X, y, ["adam"], lr=0.05, max_iter=10, backend=backend)
    assert res.batched and res.coef.shape == (1, 5)
    single = gs.fit(X, y, "adam", lr=0.05, max_iter=10, backend=backend)
    np.testing.assert_allclose(res.coef[0], single.coef, rtol=1e-12)


def test_2d_targets_give_each_run_its_own_column(backend):
    X, labels = make_data(n=400, d=4, seed=6)
    rng = np.random.default_rng(6)
    Y = np.column_stack([labels, 1 - labels, (X[:, 1] + rng.standard_normal(400) > 0)])
    res = gs.fit(X, Y, "sgd", lr="auto", max_iter=60, backend=backend)
    assert res.coef.shape == (3, 4) and res.n_iter.shape == (3,)
    for k in range(3):
        single = gs.fit(X, Y[:, k], "sgd", lr="auto", max_iter=60, backend=backend)
        np.testing.assert_allclose(res.coef[k], single.coef, rtol=1e-12)
        assert res.intercept[k] == pytest.approx(single.intercept, rel=1e-12)
    # labels and 1 - labels: the mirrored problem gives the mirrored weights
    np.testing.assert_allclose(res.coef[1], -res.coef[0], rtol=1e-12)
    # one rule per column
    res2 = gs.fit(X, Y, ["sgd", "adam", "normalized"], lr=[0.5, 0.05, 0.05], max_iter=30,
                  backend=backend)
    only = gs.fit(X, Y[:, 2], "normalized", lr=0.05, max_iter=30, backend=backend)
    np.testing.assert_allclose(res2.coef[2], only.coef, rtol=1e-12)


def test_lr_sequence_with_a_rule_object(backend, data):
    X, y = data
    rule = gs.Adam(beta1=0.8, eps=1e-6)
    res = gs.fit(X, y, rule, lr=[0.01, 0.1], max_iter=25, backend=backend)
    assert [r.lr for r in res.rules] == [0.01, 0.1]
    assert all(r.beta1 == 0.8 and r.eps == 1e-6 for r in res.rules)
    for k, lr in enumerate([0.01, 0.1]):
        single = gs.fit(X, y, gs.Adam(lr=lr, beta1=0.8, eps=1e-6), max_iter=25, backend=backend)
        np.testing.assert_allclose(res.coef[k], single.coef, rtol=1e-12)


def test_reference_distance_history(backend, data):
    X, y = data
    ref_fit = gs.fit(X, y, "sgd", lr="auto", tol=1e-9, max_iter=5000, backend=backend)
    w0, b0 = np.array([1.0, -1.0, 0.5, 0.0, 2.0]), -0.5
    res = gs.fit(X, y, ["sgd", "adam"], lr=["auto", 0.05], max_iter=30, coef_init=w0,
                 intercept_init=b0, reference=ref_fit, backend=backend)
    p_ref = np.append(ref_fit.coef, ref_fit.intercept)
    np.testing.assert_allclose(res.history.distance[:, 0],
                               np.linalg.norm(np.append(w0, b0) - p_ref), rtol=1e-14)
    for k in range(2):
        end = np.append(res.coef[k], res.intercept[k])
        assert res.history.distance[k, -1] == pytest.approx(np.linalg.norm(end - p_ref),
                                                            rel=1e-12)
    # an array reference (coef and intercept) gives the same distances
    arr = gs.fit(X, y, ["sgd", "adam"], lr=["auto", 0.05], max_iter=30, coef_init=w0,
                 intercept_init=b0, reference=p_ref, backend=backend)
    np.testing.assert_allclose(arr.history.distance, res.history.distance, rtol=1e-14)
    # and the distance to the optimum shrinks for vanilla GD
    assert np.all(np.diff(res.history.distance[0]) <= 1e-15)


def test_coef_init_and_intercept_init_are_the_start(backend, data):
    X, y = data
    w0 = np.arange(5.0) / 10
    res = gs.fit(X, y, "sgd", lr=0.1, max_iter=1, tol=None, coef_init=w0, intercept_init=0.3,
                 backend=backend)
    loss0, gw, gb, _ = oracle_loss_grad(X, y, w0, 0.3)
    assert res.history.loss[0] == pytest.approx(loss0, rel=1e-12)
    np.testing.assert_allclose(np.append(res.coef, res.intercept),
                               np.append(w0 - 0.1 * gw, 0.3 - 0.1 * gb), rtol=1e-12)


def test_without_intercept_the_intercept_stays_zero(backend, data):
    X, y = data
    res = gs.fit(X, y, ALL_RULES, lr=RATES, fit_intercept=False, max_iter=20, backend=backend)
    np.testing.assert_array_equal(res.intercept, 0.0)
    _, gw, _, _ = oracle_loss_grad(X, y, res.coef[0], 0.0)
    assert res.history.grad_norm[0, -1] == pytest.approx(np.linalg.norm(gw), rel=1e-11)


# ---- stopping --------------------------------------------------------------------------------


def test_full_batch_tol_is_on_the_largest_gradient_entry(backend, data):
    X, y = data
    res = gs.fit(X, y, "sgd", lr="auto", tol=1e-3, max_iter=5000, backend=backend)
    assert res.status == "converged"
    _, gw, gb, _ = oracle_loss_grad(X, y, res.coef, res.intercept)
    g = np.append(gw, gb)
    assert np.max(np.abs(g)) <= 1e-3
    # one step earlier it was not yet converged
    prev = gs.fit(X, y, "sgd", lr="auto", tol=None, max_iter=res.n_iter - 1, backend=backend)
    _, gw, gb, _ = oracle_loss_grad(X, y, prev.coef, prev.intercept)
    assert np.max(np.abs(np.append(gw, gb))) > 1e-3


def test_minibatch_huge_tol_stops_after_five_epochs(backend, data):
    X, y = data
    res = gs.fit(X, y, "sgd", lr=0.1, batch_size=32, tol=1e10, max_iter=100, random_state=0,
                 backend=backend)
    assert res.status == "converged"
    assert res.n_iter == 5


def test_minibatch_tol_none_never_stops_early(backend, data):
    X, y = data
    res = gs.fit(X, y, "sgd", lr=0.1, batch_size=32, tol=None, max_iter=12, random_state=0,
                 backend=backend)
    assert res.status == "max_iter" and res.n_iter == 12
    # a huge tol stops long before max_iter
    res = gs.fit(X, y, "sgd", lr=0.1, batch_size=32, tol=1e10, max_iter=100, random_state=0,
                 backend=backend)
    assert res.status == "converged" and res.n_iter < 10


def test_minibatch_loss_is_the_exact_objective_at_the_result(backend, data):
    X, y = data
    res = gs.fit(X, y, "adam", lr=0.01, batch_size=50, max_iter=8, tol=None, alpha=0.01,
                 random_state=2, backend=backend)
    assert res.loss == pytest.approx(
        oracle_loss_grad(X, y, res.coef, res.intercept, alpha=0.01)[0], rel=1e-12)


def _splitmix_order(n, seed, epoch):
    """The documented shuffle (state.py): rows sorted by splitmix64(seed + (e n + i + 1) GOLDEN)."""
    mask = 2**64 - 1
    keys = []
    for i in range(n):
        z = (seed + (epoch * n + i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        keys.append(z ^ (z >> 31))
    return sorted(range(n), key=lambda i: keys[i])


def test_shuffle_is_the_documented_generator():
    from gradstep._backends.state import shuffle_order

    for n, seed, epoch in [(7, 0, 0), (70, 123, 2), (33, 2**64 - 1, 5)]:
        np.testing.assert_array_equal(shuffle_order(n, seed, epoch),
                                      _splitmix_order(n, seed, epoch))


@pytest.mark.parametrize("weighted", [False, True])
def test_minibatch_sgd_by_hand(backend, weighted):
    """Two epochs of mini-batch SGD on n = 70 (batches of 32, 32 and 6), written out: each batch's
    sums are divided by rows * mean weight; the epoch's loss and gradient norm are the
    row-weighted means of the batches'; the epoch's step is its net displacement."""
    X, y = make_data(n=70, d=3, seed=12)
    sw = np.random.default_rng(12).uniform(0.2, 2.0, 70) if weighted else None
    s = np.ones(70) if sw is None else sw
    lr, alpha, seed = 0.3, 0.05, 99
    res = gs.fit(X, y, "sgd", lr=lr, alpha=alpha, batch_size=32, max_iter=2, tol=None,
                 sample_weight=sw, random_state=seed, backend=backend)
    w, b = np.zeros(3), 0.0
    for epoch in range(2):
        order = _splitmix_order(70, seed, epoch)
        w_start, b_start, loss_sum, gnorm_sum = w.copy(), b, 0.0, 0.0
        for start in range(0, 70, 32):
            rows = np.array(order[start:start + 32])
            Xb, yb, sb = X[rows], y[rows], s[rows]
            z = Xb @ w + b
            denom = len(rows) * s.mean()
            loss_sum += len(rows) * (np.sum(sb * np.logaddexp(0, (1 - 2 * yb) * z)) / denom
                                     + 0.5 * alpha * w @ w)
            r = sb * (1 / (1 + np.exp(-z)) - yb) / denom
            gw, gb = r @ Xb + alpha * w, r.sum()
            gnorm_sum += len(rows) * np.linalg.norm(np.append(gw, gb))
            w, b = w - lr * gw, b - lr * gb
        assert res.history.loss[epoch + 1] == pytest.approx(loss_sum / 70, rel=1e-12)
        assert res.history.grad_norm[epoch + 1] == pytest.approx(gnorm_sum / 70, rel=1e-12)
        step = np.linalg.norm(np.append(w - w_start, b - b_start))
        assert res.history.step_norm[epoch + 1] == pytest.approx(step, rel=1e-11)
    np.testing.assert_allclose(np.append(res.coef, res.intercept), np.append(w, b), rtol=1e-12)


# ---- reproducibility -------------------------------------------------------------------------


def test_random_state_reproducible_and_seed_dependent(backend, data):
    X, y = data
    kw = dict(lr=[0.3, 0.02], batch_size=32, max_iter=5, tol=None, backend=backend)
    a = gs.fit(X, y, ["sgd", "adam"], random_state=11, **kw)
    b = gs.fit(X, y, ["sgd", "adam"], random_state=11, **kw)
    c = gs.fit(X, y, ["sgd", "adam"], random_state=12, **kw)
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.history.loss, b.history.loss)
    assert not np.allclose(a.coef, c.coef, rtol=1e-6, atol=0)
    assert not np.allclose(a.history.loss[:, 1:], c.history.loss[:, 1:], rtol=1e-9, atol=0)
    # a numpy Generator (or RandomState) in the same state gives the same path
    for make in (np.random.default_rng, np.random.RandomState):
        g1 = gs.fit(X, y, "sgd", lr=0.3, batch_size=32, max_iter=3, random_state=make(5),
                    backend=backend)
        g2 = gs.fit(X, y, "sgd", lr=0.3, batch_size=32, max_iter=3, random_state=make(5),
                    backend=backend)
        np.testing.assert_array_equal(g1.coef, g2.coef)


def test_lr_as_numpy_scalar_is_one_run(data):
    X, y = data
    res = gs.fit(X, y, "sgd", lr=np.array(0.1), max_iter=3, backend="numpy")
    same = gs.fit(X, y, "sgd", lr=0.1, max_iter=3, backend="numpy")
    assert res.coef.shape == same.coef.shape
    np.testing.assert_array_equal(res.coef, same.coef)
    with pytest.raises(ValueError, match="lr must be"):
        gs.fit(X, y, "sgd", lr=True)


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_monitor_sees_every_iteration_and_stops_runs_one_by_one(backend):
    # the monitor is called once per completed iteration with the current weights (the same
    # as a fit that ran that many iterations), and a per-run False stops only that run
    if backend not in gs.backends() or not gs.backends()[backend]:
        pytest.skip(f"{backend} not available")
    X, y = make_data(n=200, d=4, seed=5)
    rules = ["adam", "sgd", "lbfgs"]
    seen = []

    def monitor(progress):
        seen.append((progress.iteration.copy(), progress.coef.copy(), progress.intercept.copy()))
        return progress.iteration < [3, 5, 1000]  # stop adam after 3, sgd after 5

    res = gs.fit(X, y, rules, lr=[0.05, 0.5, None], max_iter=40, tol=1e-8, backend=backend,
                 monitor=monitor)
    assert list(res.status[:2]) == ["stopped", "stopped"] and res.status[2] != "stopped"
    assert list(res.n_iter[:2]) == [3, 5]
    # the weights handed over at adam's 3rd iteration are those of a 3-iteration fit
    at3 = next(c[0] for it, c, _ in seen if it[0] == 3)
    alone = gs.fit(X, y, "adam", lr=0.05, max_iter=3, tol=1e-8, backend=backend)
    np.testing.assert_allclose(at3, alone.coef, rtol=1e-12, atol=1e-15)
    assert all(c.shape == (3, 4) and b.shape == (3,) for _, c, b in seen)
    with pytest.raises(ValueError, match="monitor must be callable"):
        gs.fit(X, y, "adam", monitor=3)
