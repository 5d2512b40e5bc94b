"""L1 and elastic net in gs.fit (l1_ratio, penalty): exact zeros, the optimality (KKT)
conditions checked with an independent gradient, agreement with scikit-learn's saga, the
per-run sequences, the L2 path left bit for bit as it was, and the errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit, logsumexp

import gradstep as gs
from conftest import oracle_loss_grad
from gradstep.rules import RULES


def _sparse_truth_data(n=300, d=10, seed=0):
    """Standardized features of which only the first 3 carry signal: the L1 optimum has zeros."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    w = np.zeros(d)
    w[:3] = [1.5, -1.0, 0.7]
    y = (rng.random(n) < expit(X @ w + 0.3)).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def small():
    return _sparse_truth_data()


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def sparse_csr():
    """2000 x 200 CSR, 5% nonzeros, labels from 20 informative features."""
    rng = np.random.default_rng(0)
    X = sp.random(2000, 200, density=0.05, format="csr", random_state=1,
                  data_rvs=rng.standard_normal)
    w = np.zeros(200)
    w[:20] = 2.0 * rng.standard_normal(20)
    y = (rng.random(2000) < expit(X @ w)).astype(np.int64)
    return X, y


def objective(X, y, coef, intercept, alpha, l1_ratio):
    """The elastic-net logistic objective, independently of gradstep."""
    z = X @ coef + intercept
    loss = np.mean(np.logaddexp(0.0, z) - y * z)
    return loss + alpha * (l1_ratio * np.abs(coef).sum() + 0.5 * (1 - l1_ratio) * coef @ coef)


def kkt_violation(X, y, coef, intercept, alpha, l1_ratio):
    """How far (coef, intercept) is from the elastic-net optimality conditions: the smooth
    gradient g (loss + L2 part) must satisfy g_j = -l1 sign(w_j) where w_j != 0, |g_j| <= l1
    where w_j == 0, and g = 0 on the intercept."""
    l1 = alpha * l1_ratio
    _, g, g0, _ = oracle_loss_grad(X, y, coef, intercept, alpha=alpha * (1 - l1_ratio))
    nonzero = coef != 0.0
    return max(np.max(np.abs(g[nonzero] + l1 * np.sign(coef[nonzero])), initial=0.0),
               np.max(np.abs(g[~nonzero]) - l1, initial=0.0), abs(g0))


# ---- exact zeros and the optimality conditions ---------------------------------------------


@pytest.mark.parametrize("rule", ["lbfgs", "armijo", "sgd"])
def test_exact_zeros_where_the_truth_is_zero(small, rule):
    X, y = small
    res = gs.fit(X, y, rule, alpha=0.05, l1_ratio=1.0, tol=1e-8, max_iter=3000,
                 lr=2.0 if rule == "sgd" else None)
    assert res.status == "converged"
    np.testing.assert_array_equal(res.coef[3:], 0.0)  # exact zeros, not 1e-17
    assert np.all(res.coef[:3] != 0.0)
    # the L2 fit at the same strength has no zeros at all
    assert np.all(gs.fit(X, y, rule, alpha=0.05, tol=1e-8, max_iter=3000,
                         lr=2.0 if rule == "sgd" else None).coef != 0.0)


def test_owlqn_reaches_the_kkt_point(small, cancer):
    for (X, y), alpha in ((small, 0.05), (cancer, 1 / (0.1 * 569))):
        res = gs.fit(X, y, "lbfgs", alpha=alpha, l1_ratio=1.0, tol=1e-10, max_iter=1000)
        assert res.status == "converged"
        assert (res.coef == 0.0).sum() >= 3
        assert kkt_violation(X, y, res.coef, res.intercept, alpha, 1.0) < 1e-9
        # what fit reports: the objective, and the norm of the minimum-norm subgradient
        assert res.loss == pytest.approx(objective(X, y, res.coef, res.intercept, alpha, 1.0),
                                         rel=1e-13)
        assert res.history.grad_norm[-1] <= np.sqrt(X.shape[1] + 1) * 1e-10
        assert np.all(np.diff(res.history.loss) <= 1e-12)  # monotone line search on F


@pytest.mark.parametrize("backend", ["numpy", "cpp"])
def test_owlqn_backtracking_starts_from_the_last_accepted_step(cancer, backend):
    """Each OWL-QN search halves from its first trial, one pass per trial; that first trial
    is lr after the first iteration, then the step the previous search accepted, doubled (up
    to lr) when it was that search's own first trial. So every iteration's passes follow from
    the steps in the history. Starting at lr every time (the rule before) gives other counts
    on this problem, whose unit steps often fail."""
    X, y = cancer
    res = gs.fit(X, y, "lbfgs", alpha=1 / 569, l1_ratio=1.0, tol=1e-6, max_iter=400,
                 backend=backend)
    steps, passes = res.history.lr, np.diff(res.history.passes)
    t0, below_lr = 1.0, 0  # iteration 2's first trial: lr, after the first iteration
    for k in range(2, len(steps)):
        t = steps[k]
        trials = 1 + np.log2(t0 / t)
        assert trials == round(trials) and passes[k - 1] == trials, (k, t0, t)
        below_lr += t0 < 1.0
        t0 = min(1.0, 2 * t) if t == t0 else t
    assert below_lr > 10  # the rule was exercised, not only t0 = lr


# Each first-order rule's proximal step must be scaled by the step the rule takes per unit
# gradient, or the fixed point is the optimum of another penalty: with lr_t instead of
# lr_t / (1 - mu) momentum fits l1 (1 - mu); without the per-coordinate scale the adaptive
# rules fit a coordinate-dependent penalty. Hence the KKT test at the end of long runs.
FIRST_ORDER_SETTINGS = [
    ("sgd", dict(lr=2.0), 1e-7),
    ("momentum", dict(lr=0.5), 1e-7),
    ("nesterov", dict(lr=0.5), 1e-7),
    ("normalized", dict(lr=0.2), 1e-7),
    ("adagrad", dict(lr=0.5), 1e-7),
    ("adadelta", dict(lr=1.0), 1e-7),
    ("adam", dict(lr=0.05), 1e-7),
    # RMSProp's intercept oscillates where its gradient (and v) vanish: a decaying rate
    ("rmsprop", dict(lr=0.01, schedule="inverse_time", decay=0.01), 1e-4),
]


@pytest.mark.parametrize("rule,kw,bound", FIRST_ORDER_SETTINGS,
                         ids=[s[0] for s in FIRST_ORDER_SETTINGS])
def test_first_order_proximal_steps_reach_the_kkt_point(small, rule, kw, bound):
    X, y = small
    for l1_ratio in (1.0, 0.5):
        alpha = 0.05 / l1_ratio  # the same L1 strength, plus an L2 part for the elastic net
        res = gs.fit(X, y, rule, alpha=alpha, l1_ratio=l1_ratio, tol=1e-8, max_iter=3000,
                     **kw)
        assert kkt_violation(X, y, res.coef, res.intercept, alpha, l1_ratio) < bound
        np.testing.assert_array_equal(res.coef[3:], 0.0)
        if bound < 1e-6:
            assert res.status == "converged"


def test_the_intercept_is_never_penalized(small):
    X, y = small
    res = gs.fit(X, y, "lbfgs", alpha=10.0, l1_ratio=1.0, tol=1e-10)
    np.testing.assert_array_equal(res.coef, 0.0)
    p = y.mean()
    assert res.intercept == pytest.approx(np.log(p / (1 - p)), abs=1e-8)
    # and without an intercept the fit runs and stays at 0 there
    res = gs.fit(X, y, "lbfgs", alpha=0.05, l1_ratio=1.0, tol=1e-10, fit_intercept=False)
    assert res.status == "converged" and res.intercept == 0.0
    assert (res.coef == 0.0).sum() >= 3


# ---- scikit-learn's saga reaches the same objective and support ----------------------------


def _saga(X, y, C, l1_ratio):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():  # scikit-learn >= 1.8 deprecates penalty: not used here
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegression(C=C, l1_ratio=l1_ratio, solver="saga", tol=1e-10,
                                   max_iter=100000)
        return model.fit(X, y)


@pytest.mark.parametrize("problem,C", [("cancer", 0.1), ("sparse_csr", 0.1)])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_objective_and_support_of_saga(request, problem, C, l1_ratio):
    X, y = request.getfixturevalue(problem)
    n = X.shape[0]
    alpha = 1.0 / (C * n)  # LogisticRegression's C * sum(loss) + penalty, divided by C n
    res = gs.fit(X, y, "lbfgs", alpha=alpha, l1_ratio=l1_ratio, tol=1e-10, max_iter=2000)
    assert res.status == "converged"
    model = _saga(X, y, C, l1_ratio)
    mine = objective(X, y, res.coef, res.intercept, alpha, l1_ratio)
    theirs = objective(X, y, model.coef_[0], model.intercept_[0], alpha, l1_ratio)
    assert mine <= theirs * (1 + 1e-6) and theirs <= mine * (1 + 1e-6)
    np.testing.assert_array_equal(res.coef != 0.0, model.coef_[0] != 0.0)
    assert 0 < (res.coef != 0.0).sum() < X.shape[1]


# ---- per-run sequences and the L2 path unchanged -------------------------------------------


@pytest.mark.parametrize("rule,kw", [("lbfgs", {}), ("sgd", dict(lr=2.0))])
def test_a_sequence_of_l1_ratio_equals_separate_fits(small, rule, kw):
    X, y = small
    ratios = [0.0, 0.5, 1.0]
    alphas = [0.05, 0.08, 0.1]
    both = gs.fit(X, y, rule, alpha=alphas, l1_ratio=ratios, tol=1e-8, max_iter=3000, **kw)
    assert both.batched and both.coef.shape == (3, X.shape[1])
    for k, (a, r) in enumerate(zip(alphas, ratios)):
        one = gs.fit(X, y, rule, alpha=a, l1_ratio=r, tol=1e-8, max_iter=3000, **kw)
        np.testing.assert_allclose(both.coef[k], one.coef, rtol=1e-12, atol=1e-12)
        assert both.loss[k] == pytest.approx(one.loss, rel=1e-12)
        assert both.n_iter[k] == one.n_iter
        np.testing.assert_array_equal(both.coef[k] == 0.0, one.coef == 0.0)
    # a list of one l1_ratio is a batch of one run, like a list of one alpha
    assert gs.fit(X, y, rule, alpha=0.05, l1_ratio=[1.0], max_iter=5, **kw).batched


@pytest.mark.parametrize("rule,kw", [("sgd", {}), ("lbfgs", {}),
                                     ("adam", dict(batch_size=32, random_state=0))])
def test_l1_ratio_zero_is_the_l2_fit_bit_for_bit(small, rule, kw):
    X, y = small
    plain = gs.fit(X, y, rule, alpha=0.05, max_iter=50, **kw)
    for extra in (dict(l1_ratio=0.0), dict(penalty="l2"), dict(penalty="elasticnet"),
                  dict(l1_ratio=0, penalty="auto")):
        same = gs.fit(X, y, rule, alpha=0.05, max_iter=50, **kw, **extra)
        np.testing.assert_array_equal(same.coef, plain.coef)
        assert same.intercept == plain.intercept and same.loss == plain.loss
        np.testing.assert_array_equal(same.history.loss, plain.history.loss)
        np.testing.assert_array_equal(same.history.grad_norm, plain.history.grad_norm)
    no_penalty = gs.fit(X, y, rule, max_iter=50, **kw)
    none = gs.fit(X, y, rule, penalty=None, max_iter=50, **kw)
    np.testing.assert_array_equal(none.coef, no_penalty.coef)


# ---- the penalty spelling and the errors ---------------------------------------------------


def test_penalty_names_map_onto_l1_ratio(small):
    X, y = small
    kw = dict(alpha=0.05, tol=1e-8, max_iter=200)
    l1 = gs.fit(X, y, "lbfgs", l1_ratio=1.0, **kw)
    np.testing.assert_array_equal(gs.fit(X, y, "lbfgs", penalty="l1", **kw).coef, l1.coef)
    np.testing.assert_array_equal(
        gs.fit(X, y, "lbfgs", penalty="l1", l1_ratio=1.0, **kw).coef, l1.coef)
    enet = gs.fit(X, y, "lbfgs", l1_ratio=0.5, **kw)
    np.testing.assert_array_equal(
        gs.fit(X, y, "lbfgs", penalty="elasticnet", l1_ratio=0.5, **kw).coef, enet.coef)
    assert not np.array_equal(enet.coef, l1.coef)


@pytest.mark.parametrize("kw,match", [
    (dict(penalty="l2", l1_ratio=0.5), "penalty='l2'.*l1_ratio"),
    (dict(penalty="l1", l1_ratio=0.5), "penalty='l1'.*l1_ratio"),
    (dict(penalty=None, alpha=0.1), "penalty=None.*alpha"),
    (dict(penalty="lasso"), "penalty must be"),
    (dict(l1_ratio=1.5), "l1_ratio must be in \\[0, 1\\]"),
    (dict(l1_ratio=-0.1), "l1_ratio must be in \\[0, 1\\]"),
    (dict(l1_ratio="l1"), "l1_ratio must be a number"),
    (dict(l1_ratio=[[0.5]]), "l1_ratio must be a number or a 1-D sequence"),
    (dict(alpha=[0.1, 0.2], l1_ratio=[0.0, 0.5, 1.0]), "alpha has 2.*l1_ratio has 3"),
])
def test_conflicts_are_errors_that_name_the_arguments(small, kw, match):
    X, y = small
    with pytest.raises(ValueError, match=match):
        gs.fit(X, y, "lbfgs", **kw)


@pytest.mark.parametrize("rule", ["newton", "bb"])
def test_rules_without_l1_say_which_rules_have_it(small, rule):
    X, y = small
    with pytest.raises(ValueError, match=f"rule '{rule}' cannot fit an L1 term") as info:
        gs.fit(X, y, rule, alpha=0.1, l1_ratio=1.0)
    supporting = [name for name, cls in RULES.items() if cls.supports_l1]
    assert "lbfgs" in supporting and "sgd" in supporting
    listed = str(info.value).split("use one of ")[1]
    for name in supporting:
        assert name in listed
    for name in ("newton", "bb"):
        assert f"{name}," not in listed
    # a run without L1 beside one with it is fine, and is the plain fit
    both = gs.fit(X, y, [rule, "lbfgs"], alpha=0.1, l1_ratio=[0.0, 1.0], tol=1e-8)
    alone = gs.fit(X, y, rule, alpha=0.1, tol=1e-8)
    np.testing.assert_allclose(both.coef[0], alone.coef, rtol=1e-12, atol=1e-14)


def test_an_oracle_keeps_l1_ratio_at_zero(small):
    X, y = small
    oracle = gs.DenseOracle(X, y, backend="numpy")
    with pytest.raises(ValueError, match="oracle.*leave l1_ratio at 0"):
        gs.fit(oracle, None, "lbfgs", l1_ratio=0.5)
    assert gs.fit(oracle, None, "lbfgs", l1_ratio=0.0, max_iter=5).n_iter == 5


# ---- backends, multinomial, mini-batch, sparse input ---------------------------------------


@pytest.mark.parametrize("rule,kw", [("lbfgs", {}), ("sgd", dict(lr=2.0)),
                                     ("adam", dict(lr=0.05, batch_size=50, random_state=3))])
def test_backends_agree_on_an_l1_fit(small, backend, rule, kw):
    X, y = small
    want = gs.fit(X, y, rule, alpha=0.05, l1_ratio=0.8, tol=1e-8, max_iter=300,
                  backend="numpy", **kw)
    got = gs.fit(X, y, rule, alpha=0.05, l1_ratio=0.8, tol=1e-8, max_iter=300,
                 backend=backend, **kw)
    np.testing.assert_allclose(got.coef, want.coef, rtol=1e-9, atol=1e-9)
    assert got.intercept == pytest.approx(want.intercept, rel=1e-9, abs=1e-9)
    assert got.loss == pytest.approx(want.loss, rel=1e-9)
    np.testing.assert_array_equal(got.coef == 0.0, want.coef == 0.0)


def _three_classes(n=300, d=8, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = np.zeros((3, d))
    W[:, :2] = 2.0 * rng.standard_normal((3, 2))
    scores = X @ W.T + rng.gumbel(size=(n, 3))
    return X, scores.argmax(axis=1)


@pytest.mark.parametrize("rule,kw", [("lbfgs", {}), ("sgd", dict(lr=1.0))])
def test_multinomial_with_l1(rule, kw):
    X, y = _three_classes()
    alpha = 0.03
    res = gs.fit(X, y, rule, loss="multinomial", alpha=alpha, l1_ratio=1.0, tol=1e-9,
                 max_iter=5000, **kw)
    assert res.status == "converged"
    W, b = res.coef, res.intercept
    assert W.shape == (3, X.shape[1]) and (W == 0.0).sum() >= 6
    # independent softmax gradient: KKT on the C x d weights, 0 on the C intercepts
    Z = X @ W.T + b
    P = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
    Y = np.eye(3)[y]
    G, g0 = (P - Y).T @ X / len(y), (P - Y).mean(axis=0)
    nz = W != 0.0
    assert np.max(np.abs(G[nz] + alpha * np.sign(W[nz]))) < 1e-7
    assert np.max(np.abs(G[~nz])) <= alpha + 1e-9
    assert np.max(np.abs(g0)) < 1e-7
    cross_entropy = np.mean(logsumexp(Z, axis=1) - Z[np.arange(len(y)), y])
    assert res.loss == pytest.approx(cross_entropy + alpha * np.abs(W).sum(), rel=1e-12)


def test_minibatch_adam_with_l1(small):
    X, y = small
    res = gs.fit(X, y, "adam", lr=0.02, alpha=0.05, l1_ratio=1.0, batch_size=32,
                 random_state=0, max_iter=60, tol=None)
    assert res.status == "max_iter"
    assert np.isfinite(res.coef).all() and np.isfinite(res.loss)
    assert (res.coef[3:] == 0.0).sum() >= 4  # exact zeros despite the noisy gradients
    assert res.loss == pytest.approx(objective(X, y, res.coef, res.intercept, 0.05, 1.0),
                                     rel=1e-12)
    best = gs.fit(X, y, "lbfgs", alpha=0.05, l1_ratio=1.0, tol=1e-10)
    assert res.loss - best.loss < 5e-3
    assert np.isfinite(res.history.loss).all()


def test_sparse_csr_equals_dense(sparse_csr):
    X, y = sparse_csr
    kw = dict(alpha=1 / 200, l1_ratio=1.0, tol=1e-9, max_iter=500)
    from_csr = gs.fit(X, y, "lbfgs", **kw)
    dense = gs.fit(X.toarray(), y, "lbfgs", **kw)
    assert from_csr.backend.endswith("-csr")
    np.testing.assert_allclose(from_csr.coef, dense.coef, atol=1e-7)
    np.testing.assert_array_equal(from_csr.coef == 0.0, dense.coef == 0.0)


def test_every_first_order_rule_has_its_proximal_step():
    """A first-order rule fits L1 through its own step_scale (the base class raises)."""
    g, slots = np.array([0.5, -2.0, 0.0]), np.zeros((2, 3))
    for name, cls in RULES.items():
        rule = cls(nesterov=True) if name == "nesterov" else cls()
        if not rule.compiled:
            continue
        assert rule.supports_l1, name
        before = slots.copy()
        scale = np.broadcast_to(rule.step_scale(g, slots, 0.1, 1), (3,))
        np.testing.assert_array_equal(slots, before)  # it reads the slots, never advances them
        assert np.all(np.isfinite(scale)) and np.all(scale >= 0.0), name


def test_progress_reports_the_l1_residual_not_the_smooth_gradient():
    # at an L1 optimum the smooth gradient is not 0 on the zero coefficients; what a callback
    # and a monitor see is the residual the stopping test uses, which is
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    seen = []
    res = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, tol=1e-9, max_iter=500,
                 monitor=lambda p: seen.append(float(p.grad_norm[0])))
    assert res.status == "converged"
    assert np.count_nonzero(res.coef) < X.shape[1]  # zeros, so the two norms differ
    assert seen[-1] == pytest.approx(res.history.grad_norm[-1], rel=1e-12)
    assert seen[-1] < 1e-8


# ---- the compiled first-order loops' proximal steps ------------------------------------------


FIRST_ORDER_RUNS = ["sgd", "momentum", "nesterov", "normalized", "adagrad", "rmsprop", "adadelta",
                    "adam"]


@pytest.mark.parametrize("layout", ["dense", "float32", "csr"])
@pytest.mark.parametrize("batch", [dict(), dict(batch_size=40, random_state=4),
                                   dict(batch_size=40, random_state=4, shuffle="blocks")])
def test_compiled_loop_takes_the_reference_proximal_steps(monkeypatch, small, layout, batch):
    # The C++ first-order loop (fit.hpp: each rule's scale_* for its step_scale, the
    # soft-threshold after the update, the objective and residual in the history and stop
    # test) against the reference driver over the same kernels, every rule at once with its
    # own l1_ratio, sample weights, with and without an intercept.
    from gradstep import api, driver

    X, y = small
    if layout == "float32":
        X = X.astype(np.float32)
    elif layout == "csr":
        X = sp.csr_matrix(X * (np.random.default_rng(2).random(X.shape) < 0.7))
    sw = np.random.default_rng(3).uniform(0.5, 1.5, len(y))
    n = len(FIRST_ORDER_RUNS)
    kw = dict(lr=[0.5, 0.1, 0.1, 0.05, 0.2, 0.02, 1.0, 0.02], alpha=0.04,
              l1_ratio=[1.0, 0.5, 1.0, 0.8, 1.0, 0.6, 1.0, 0.9][:n], sample_weight=sw,
              max_iter=25, tol=1e-6, backend="cpp", **batch)
    made = []

    def spy(*args):
        made_driver = driver.make_driver(*args)
        made.append(type(made_driver).__name__)
        return made_driver

    for fit_intercept in (True, False):
        monkeypatch.setattr(api, "make_driver", spy)
        compiled = gs.fit(X, y, FIRST_ORDER_RUNS, fit_intercept=fit_intercept, **kw)
        monkeypatch.setattr(api, "make_driver", lambda *a: driver.ReferenceDriver(*a))
        reference = gs.fit(X, y, FIRST_ORDER_RUNS, fit_intercept=fit_intercept, **kw)
        assert made[-1] == "CompiledDriver"
        assert list(compiled.status) == list(reference.status)
        assert list(compiled.n_iter) == list(reference.n_iter)
        np.testing.assert_array_equal(compiled.coef == 0.0, reference.coef == 0.0)
        assert (compiled.coef == 0.0).any()  # the proximal steps made exact zeros
        np.testing.assert_allclose(compiled.coef, reference.coef, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(compiled.intercept, reference.intercept, rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(compiled.loss, reference.loss, rtol=1e-11)
        np.testing.assert_allclose(compiled.history.loss, reference.history.loss, rtol=1e-11)
        np.testing.assert_allclose(compiled.history.grad_norm, reference.history.grad_norm,
                                   rtol=1e-8, atol=1e-12)
        if not fit_intercept:
            assert np.all(compiled.intercept == 0.0)


def test_numba_loop_leaves_l1_fits_to_the_reference_driver(monkeypatch, small):
    # the Numba loop has no proximal step (no RUN_TAKES_L1): an L1 fit there is the reference's
    from gradstep import api, driver

    if not gs.backends()["numba"]:
        pytest.skip("numba not installed")
    X, y = small
    made = []

    def spy(*args):
        made_driver = driver.make_driver(*args)
        made.append(type(made_driver).__name__)
        return made_driver

    monkeypatch.setattr(api, "make_driver", spy)
    gs.fit(X, y, "sgd", lr=0.5, alpha=0.05, l1_ratio=1.0, max_iter=5, backend="numba")
    gs.fit(X, y, "sgd", lr=0.5, alpha=0.05, max_iter=5, backend="numba")
    assert made == ["ReferenceDriver", "CompiledDriver"]
