"""Each step rule against a two-step example computed here from DESIGN.md's table; the defaults
of that table; every schedule's lr_t; the normalized rule's zero-gradient guard."""

import math

import numpy as np
import pytest

import gradstep as gs

# tiny problem: n = 4, d = 2
X4 = np.array([[0.5, -1.0], [1.5, 0.3], [-0.7, 0.8], [0.2, -0.4]])
Y4 = np.array([1, 0, 1, 0])
W0 = np.array([0.1, -0.2])
B0 = 0.05


def _grad(p, alpha, fit_intercept):
    """Gradient of DESIGN.md's J over (w, b) on X4, written out (the intercept's entry is 0
    when it is not fitted)."""
    w, b = p[:2], p[2]
    z = X4 @ w + b
    r = 1.0 / (1.0 + np.exp(-z)) - Y4
    g = np.empty(3)
    g[:2] = X4.T @ r / 4 + alpha * w
    g[2] = r.sum() / 4 if fit_intercept else 0.0
    return g


def _loss(p, alpha):
    z = X4 @ p[:2] + p[2]
    return np.mean(np.log1p(np.exp(z)) - Y4 * z) + 0.5 * alpha * p[:2] @ p[:2]


def _two_steps(rule, hp, p, alpha, fit_intercept):
    """DESIGN.md's update, literally, for t = 1, 2 with a constant rate. Returns the 3 points."""
    lr = hp["lr"]
    s1 = np.zeros(3)  # v | G | v | E | m
    s2 = np.zeros(3)  # D | v (adam)
    points = [p.copy()]
    for t in (1, 2):
        g = _grad(p, alpha, fit_intercept)
        if rule == "sgd":
            p = p - lr * g
        elif rule == "momentum":
            s1 = hp["mu"] * s1 + g
            p = p - lr * s1
        elif rule == "nesterov":
            s1 = hp["mu"] * s1 + g
            p = p - lr * (g + hp["mu"] * s1)
        elif rule == "normalized":
            p = p - lr * g / max(np.sqrt(g @ g), hp["eps"])
        elif rule == "adagrad":
            s1 = s1 + g * g
            p = p - lr * g / (np.sqrt(s1) + hp["eps"])
        elif rule == "rmsprop":
            s1 = hp["rho"] * s1 + (1 - hp["rho"]) * g * g
            p = p - lr * g / (np.sqrt(s1) + hp["eps"])
        elif rule == "adadelta":
            rho, eps = hp["rho"], hp["eps"]
            s1 = rho * s1 + (1 - rho) * g * g  # E
            delta = np.sqrt(s2 + eps) / np.sqrt(s1 + eps) * g
            s2 = rho * s2 + (1 - rho) * delta * delta  # D
            p = p - lr * delta
        elif rule == "adam":
            b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
            s1 = b1 * s1 + (1 - b1) * g
            s2 = b2 * s2 + (1 - b2) * g * g
            m_hat = s1 / (1 - b1**t)
            v_hat = s2 / (1 - b2**t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        else:
            raise AssertionError(rule)
        points.append(p.copy())
    return points


# Non-default hyperparameters (so a swapped or ignored one shows), eps large enough to matter.
CUSTOM = {
    "sgd": dict(lr=0.5),
    "momentum": dict(lr=0.3, mu=0.7),
    "nesterov": dict(lr=0.3, mu=0.7),
    "normalized": dict(lr=0.2, eps=1e-12),
    "adagrad": dict(lr=0.1, eps=1e-3),
    "rmsprop": dict(lr=0.05, rho=0.8, eps=1e-3),
    "adadelta": dict(lr=0.9, rho=0.85, eps=1e-3),
    "adam": dict(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-3),
}

# DESIGN.md's defaults column (lr where the table gives one; otherwise passed explicitly).
DEFAULTS = {
    "sgd": dict(),
    "momentum": dict(mu=0.9),
    "nesterov": dict(mu=0.9),
    "normalized": dict(eps=1e-12),
    "adagrad": dict(lr=0.01, eps=1e-10),
    "rmsprop": dict(lr=0.01, rho=0.99, eps=1e-8),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6),
    "adam": dict(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8),
}
EXPLICIT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "normalized": 0.1}


def _check_two_steps(backend, rule, fit_kwargs, hp, alpha, fit_intercept):
    p0 = np.array([*W0, B0 if fit_intercept else 0.0])
    res = gs.fit(X4, Y4, rule, max_iter=2, tol=0, alpha=alpha, fit_intercept=fit_intercept,
                 coef_init=W0, intercept_init=B0 if fit_intercept else None,
                 backend=backend, **fit_kwargs)
    points = _two_steps(rule, hp, p0, alpha, fit_intercept)
    assert res.n_iter == 2 and res.status == "max_iter"
    got = np.append(res.coef, res.intercept)
    np.testing.assert_allclose(got, points[2], rtol=1e-12, atol=1e-12 * np.abs(points[2]).max())
    assert got[2] != points[0][2] or not fit_intercept  # the intercept moved
    # the history follows the same path
    h = res.history
    np.testing.assert_allclose(h.loss, [_loss(q, alpha) for q in points], rtol=1e-12)
    np.testing.assert_allclose(
        h.grad_norm, [np.linalg.norm(_grad(q, alpha, fit_intercept)) for q in points],
        rtol=1e-11)
    np.testing.assert_allclose(
        h.step_norm, [0.0] + [np.linalg.norm(points[i] - points[i - 1]) for i in (1, 2)],
        rtol=1e-11)
    np.testing.assert_allclose(h.lr, [0.0, hp["lr"], hp["lr"]], rtol=1e-15)


@pytest.mark.parametrize("rule", list(CUSTOM))
@pytest.mark.parametrize("alpha,fit_intercept", [(0.0, True), (0.2, True), (0.2, False)])
def test_two_steps_by_hand(backend, rule, alpha, fit_intercept):
    hp = CUSTOM[rule]
    _check_two_steps(backend, rule, hp, hp, alpha, fit_intercept)


@pytest.mark.parametrize("rule", list(DEFAULTS))
def test_two_steps_with_design_defaults(backend, rule):
    """fit(rule=name) without parameters uses DESIGN.md's defaults."""
    hp = dict(DEFAULTS[rule])
    fit_kwargs = {}
    if rule in EXPLICIT_LR:
        hp["lr"] = fit_kwargs["lr"] = EXPLICIT_LR[rule]
    _check_two_steps(backend, rule, fit_kwargs, hp, 0.0, True)


def test_rule_objects_carry_design_defaults():
    for rule, hp in DEFAULTS.items():
        obj = gs.fit(X4, Y4, rule, max_iter=1, backend="numpy").rules
        for name, value in hp.items():
            assert getattr(obj, name) == value, (rule, name)
        assert isinstance(obj.schedule, gs.Constant)
        assert obj.name == rule


@pytest.mark.parametrize("rule", ["sgd", "momentum", "nesterov"])
def test_vanilla_and_momentum_rules_default_to_one_over_L(rule):
    obj = gs.fit(X4, Y4, rule, max_iter=1, backend="numpy").rules
    assert obj.lr == 1.0 / gs.lipschitz_constant(X4, backend="numpy")
    assert gs.rules.default_lr(rule) == "auto"


@pytest.mark.parametrize("rule", list(CUSTOM))
def test_rule_object_equals_rule_name(backend, rule):
    hp = CUSTOM[rule]
    cls = {"sgd": gs.SGD, "momentum": gs.Momentum, "nesterov": gs.Momentum,
           "normalized": gs.Normalized, "adagrad": gs.AdaGrad, "rmsprop": gs.RMSProp,
           "adadelta": gs.AdaDelta, "adam": gs.Adam}[rule]
    extra = {"nesterov": True} if rule == "nesterov" else {}
    by_name = gs.fit(X4, Y4, rule, max_iter=3, tol=0, backend=backend, **hp)
    by_obj = gs.fit(X4, Y4, cls(**hp, **extra), max_iter=3, tol=0, backend=backend)
    np.testing.assert_array_equal(by_obj.coef, by_name.coef)
    assert by_obj.intercept == by_name.intercept
    assert by_obj.rules == by_name.rules


def test_normalized_zero_gradient_gives_no_step(backend):
    # X = [[1], [1]], y = [1, 0]: the gradient at 0 is exactly zero (residuals -1/2 and 1/2)
    X = np.array([[1.0], [1.0]])
    y = np.array([1, 0])
    res = gs.fit(X, y, ["normalized", "adam", "rmsprop", "adagrad"], lr=0.1, max_iter=3,
                 tol=None, backend=backend)
    assert np.all(res.coef == 0.0) and np.all(res.intercept == 0.0)
    np.testing.assert_array_equal(res.history.step_norm, 0.0)
    np.testing.assert_array_equal(res.history.grad_norm, 0.0)
    assert list(res.status) == ["max_iter"] * 4
    # with a tolerance the zero gradient is recognised at the start
    res = gs.fit(X, y, "normalized", lr=0.1, tol=0.0, backend=backend)
    assert res.status == "converged" and res.n_iter == 0


# ---- schedules ------------------------------------------------------------------------------

def _schedule_formula(name, lr, t, T, param):
    if name == "constant":
        return lr
    if name == "inverse_time":
        return lr / (1 + param * (t - 1))
    if name == "inverse_power":
        return lr / t**param
    if name == "exponential":
        return lr * param ** (t - 1)
    if name == "cosine":
        return lr * (1 + math.cos(math.pi * (t - 1) / T)) / 2
    raise AssertionError(name)


SCHEDULE_CASES = [
    ("constant", {}, None),
    ("inverse_time", {"decay": 0.3}, 0.3),
    ("inverse_power", {"power": 0.7}, 0.7),
    ("exponential", {"gamma": 0.8}, 0.8),
    ("cosine", {}, None),
]


@pytest.mark.parametrize("name,params,param", SCHEDULE_CASES)
def test_schedule_values_full_batch(backend, data, name, params, param):
    X, y = data
    T, lr = 12, 0.5
    res = gs.fit(X, y, "sgd", lr=lr, schedule=name, max_iter=T, tol=None, backend=backend,
                 **params)
    h = res.history
    assert res.n_iter == T and h.lr[0] == 0.0
    expected = [_schedule_formula(name, lr, t, T, param) for t in range(1, T + 1)]
    assert h.lr[1] == lr  # every schedule gives the base lr at t = 1
    np.testing.assert_allclose(h.lr[1:], expected, rtol=1e-13)
    if name != "constant":
        assert h.lr[-1] < 0.75 * lr  # it does decay
    # and the rate is the one the step used: vanilla step = lr_t * ||g_{t-1}||
    np.testing.assert_allclose(h.step_norm[1:], h.lr[1:] * h.grad_norm[:-1], rtol=1e-12)


def test_schedule_object_equals_schedule_name(backend, data):
    X, y = data
    by_name = gs.fit(X, y, "adam", lr=0.05, schedule="exponential", gamma=0.9, max_iter=20,
                     backend=backend)
    by_obj = gs.fit(X, y, gs.Adam(lr=0.05, schedule=gs.Exponential(gamma=0.9)), max_iter=20,
                    backend=backend)
    np.testing.assert_array_equal(by_obj.coef, by_name.coef)
    np.testing.assert_array_equal(by_obj.history.lr, by_name.history.lr)


def test_cosine_counts_mini_batch_updates(backend, data):
    """T is the total number of updates (epochs * batches); an epoch's recorded lr is the rate of
    its last update."""
    X, y = data
    n_batches, epochs, lr = 10, 4, 0.2  # n = 300, batch 32: 9 full batches and one of 12
    res = gs.fit(X, y, "sgd", lr=lr, schedule="cosine", batch_size=32, max_iter=epochs,
                 tol=None, random_state=0, backend=backend)
    T = n_batches * epochs
    expected = [_schedule_formula("cosine", lr, e * n_batches, T, None)
                for e in range(1, epochs + 1)]
    np.testing.assert_allclose(res.history.lr[1:], expected, rtol=1e-13)
