"""The seams of the architecture: the rule registry against the compiled drivers, a
user-supplied oracle through the reference driver, the progress callback, and resume."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.special import expit

import gradstep as gs
from gradstep.rules import RULES, compiled_codes


def test_every_registered_rule_constructs_and_names_itself():
    for name, cls in RULES.items():
        rule = cls(nesterov=True) if name == "nesterov" else cls()
        assert rule.name == name
        assert isinstance(rule, gs.StepRule)


def test_compiled_codes_agree_with_the_cpp_core():
    core = pytest.importorskip("gradstep._core")
    assert dict(core.rule_codes()) == compiled_codes()


def test_compiled_codes_agree_with_numba():
    pytest.importorskip("numba")
    from gradstep._backends import numba_rules

    assert dict(numba_rules.RULE_CODES) == compiled_codes()


class TinyOracle:
    """A logistic-loss oracle in a few lines of NumPy, independent of gradstep's kernels."""

    def __init__(self, X, y, alpha):
        self.X, self.y, self.alpha = X, y, alpha
        self.n_samples, self.n_features = X.shape
        self.calls = 0

    def loss_grad(self, P, active, rows=None, denominator=None):
        self.calls += 1
        X, y = (self.X, self.y) if rows is None else (self.X[rows], self.y[rows])
        Z = X @ P[:, :-1].T + P[:, -1]
        loss = np.mean(np.logaddexp(0.0, Z) - y[:, None] * Z, axis=0)
        R = (expit(Z) - y[:, None]) / (len(y) if denominator is None else denominator)
        if denominator is not None:
            loss = loss * len(y) / denominator
        G = np.column_stack([R.T @ X, R.sum(axis=0)])
        W = P[:, :-1]
        return loss + 0.5 * self.alpha * (W * W).sum(axis=1), G + np.column_stack(
            [self.alpha * W, np.zeros(len(P))])

    def hessp(self, P, V, active):
        Z = self.X @ P[:, :-1].T + P[:, -1]
        S = expit(Z) * (1 - expit(Z)) * (self.X @ V[:, :-1].T + V[:, -1]) / self.n_samples
        return np.column_stack([S.T @ self.X + self.alpha * V[:, :-1], S.sum(axis=0)])


@pytest.mark.parametrize("rule", ["sgd", "adam", "lbfgs", "newton", "bb"])
def test_a_user_oracle_runs_the_reference_driver(rule, data):
    X, y = data
    tiny = TinyOracle(X, y.astype(float), 0.01)
    kw = dict(lr=0.5 if rule in ("sgd", "adam") else None, max_iter=60, tol=1e-9)
    mine = gs.fit(tiny, None, rule, **kw)
    builtin = gs.fit(gs.DenseOracle(X, y, alpha=0.01, backend="numpy"), None, rule, **kw)
    assert tiny.calls > 0
    assert mine.n_iter == builtin.n_iter
    np.testing.assert_allclose(mine.coef, builtin.coef, rtol=1e-12, atol=1e-12)
    assert mine.intercept == pytest.approx(builtin.intercept, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(mine.history.loss, builtin.history.loss, rtol=1e-12)
    # and the dense oracle through the reference driver is the plain fit
    plain = gs.fit(X, y, rule, alpha=0.01, backend="numpy", **kw)
    np.testing.assert_allclose(builtin.coef, plain.coef, rtol=1e-12, atol=1e-14)


def test_a_user_oracle_with_minibatches(data):
    X, y = data
    tiny = TinyOracle(X, y.astype(float), 0.0)
    res = gs.fit(tiny, None, "adam", lr=0.05, batch_size=32, max_iter=3, random_state=0)
    ref = gs.fit(X, y, "adam", lr=0.05, batch_size=32, max_iter=3, random_state=0,
                 backend="numpy")
    np.testing.assert_allclose(res.coef, ref.coef, rtol=1e-10)


def test_oracle_input_errors(data):
    X, y = data
    tiny = TinyOracle(X, y.astype(float), 0.0)
    with pytest.raises(ValueError, match="pass y=None"):
        gs.fit(tiny, y)
    with pytest.raises(ValueError, match="leave alpha at 0"):
        gs.fit(tiny, None, alpha=0.1)
    with pytest.raises(ValueError, match="lipschitz"):
        gs.fit(tiny, None, "sgd", lr="auto")


def test_callback_sees_progress_and_can_stop(data):
    X, y = data
    seen = []

    def stop_early(progress):
        seen.append(progress)
        assert not progress.loss.flags.writeable
        return False

    res = gs.fit(X, y, ["sgd", "adam"], lr=1e-4, max_iter=10**6, tol=0.0, callback=stop_early)
    assert list(res.status) == ["stopped", "stopped"]
    assert seen and seen[0].iteration.shape == (2,)
    assert seen[-1].status == ("stopped", "stopped")
    assert 0 < res.n_iter[0] < 10**6


def test_callback_is_called_at_the_end(data):
    X, y = data
    seen = []
    res = gs.fit(X, y, "lbfgs", callback=seen.append)
    assert seen[-1].status == (res.status,)
    assert seen[-1].iteration[0] == res.n_iter


def test_verbose_draws_a_progress_bar(data, capsys):
    X, y = data
    gs.fit(X, y, "lbfgs", verbose=1)
    assert "gradstep.fit(lbfgs)" in capsys.readouterr().err


def test_resume_continues_the_rule_state(backend, data):
    X, y = data
    kw = dict(lr=0.05, tol=None, backend=backend)
    whole = gs.fit(X, y, "adam", max_iter=6, **kw)
    first = gs.fit(X, y, "adam", max_iter=3, **kw)
    second = gs.fit(X, y, "adam", max_iter=3, resume=pickle.loads(pickle.dumps(first)), **kw)
    np.testing.assert_allclose(second.coef, whole.coef, rtol=1e-13)


def test_resume_through_a_curvature_fit_keeps_the_first_order_state(data):
    """A curvature fit allocates no first-order slots of its own, but one resumed from an adam
    fit carries adam's moments through to the next adam fit; a fresh curvature fit hands on
    zero moments, as a fresh adam fit has."""
    X, y = data
    kw = dict(lr=0.05, tol=None)
    adam = gs.fit(X, y, "adam", max_iter=3, **kw)
    lbfgs = gs.fit(X, y, "lbfgs", max_iter=2, tol=None, resume=adam)
    np.testing.assert_array_equal(lbfgs.state.slots, adam.state.slots)
    again = gs.fit(X, y, "adam", max_iter=3, resume=lbfgs, **kw)
    fresh = gs.fit(X, y, "lbfgs", max_iter=2, tol=None)
    assert fresh.state.slots.size == 0
    from_fresh = gs.fit(X, y, "adam", max_iter=3, resume=fresh, **kw)
    assert again.status == from_fresh.status == "max_iter"
    np.testing.assert_array_equal(from_fresh.state.slots.shape, adam.state.slots.shape)


def test_passes_count_every_pass_of_every_run(backend, data):
    X, y = data
    res = gs.fit(X, y, ["lbfgs", "newton", "adam", "bb"], alpha=1e-2, tol=1e-9, backend=backend)
    at_end = res.history.passes[np.arange(4), res.n_iter]
    np.testing.assert_array_equal(res.passes, at_end)
    assert res.passes[2] == res.n_iter[2] + 1  # a first-order iteration is one pass
    assert res.passes[1] > res.n_iter[1] + 1  # Newton's CG adds Hessian-vector passes
    single = gs.fit(X, y, "adam", max_iter=7, tol=None, backend=backend)
    assert single.passes == 8
