"""Property tests over the public API (hypothesis): whatever the shapes, dtypes, layouts,
special values, number of runs and batch sizes, a call either returns finite results that agree
with the NumPy reference, or raises a ValueError/TypeError with a message: never another
exception, a crash or a hang."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradstep as gs

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BACKENDS = [b for b in ("cpp", "numba") if gs.backends()[b]]

# entries that stress the kernels: tiny, huge, signed zeros, subnormals, and NaN/inf (errors)
special = st.sampled_from([0.0, -0.0, 1e-310, -1e-310, 1e-30, 1e30, -1e30, 1e150, 3.0, -2.5])
entries = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), special,
                    st.sampled_from([np.nan, np.inf, -np.inf]))


@st.composite
def problems(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64]))
    X = draw(hnp.arrays(np.float64, (n, d), elements=entries))
    with np.errstate(over="ignore", invalid="ignore"):
        X = X.astype(dtype) if dtype != np.int64 else np.nan_to_num(X).clip(-1e6, 1e6).astype(
            dtype)
    if draw(st.booleans()):
        X = np.asfortranarray(X)
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 1)))
    k = draw(st.integers(1, 3))
    coef = draw(hnp.arrays(np.float64, (k, d), elements=st.floats(-5, 5)))
    weighted = draw(st.booleans())
    sw = draw(hnp.arrays(np.float64, (n,), elements=st.floats(0, 10))) if weighted else None
    alpha = draw(st.sampled_from([0.0, 1e-3, 1.0]))
    return X, y, coef, sw, alpha


def _reference(X, y, coef, sw, alpha):
    Xf = np.asarray(X, dtype=np.float64)
    with np.errstate(all="ignore"):
        return gs.loss_and_grad(Xf, y, coef, np.zeros(len(coef)), sample_weight=sw,
                                alpha=alpha, backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(problem=problems())
def test_loss_and_grad_agrees_with_the_reference_or_raises(backend, problem):
    X, y, coef, sw, alpha = problem
    X_before = X.copy()
    try:
        got = gs.loss_and_grad(X, y, coef, np.zeros(len(coef)), sample_weight=sw, alpha=alpha,
                               backend=backend)
    except (ValueError, TypeError) as exc:
        assert str(exc)  # a message, not a bare exception
        return
    finally:
        np.testing.assert_array_equal(X, X_before)  # the user's array is never modified
    ref = _reference(X, y, coef, sw, alpha)
    for a, b in zip(got, ref):
        a, b = np.asarray(a), np.asarray(b)
        if np.isfinite(b).all():
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9 * max(1.0, np.abs(b).max()))


@SETTINGS
@given(problem=problems(), rule=st.sampled_from(list(gs.rules.RULES)),
       batch=st.sampled_from([None, 1, 7]))
def test_fit_returns_finite_weights_or_raises(problem, rule, batch):
    X, y, coef, sw, alpha = problem
    rule_is_full_batch = gs.rules.RULES[rule].full_batch_only
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # divergence, stalls: reported, not failures
            res = gs.fit(X, y, rule, alpha=alpha, sample_weight=sw, batch_size=batch,
                         max_iter=5, random_state=0, lr=None if rule_is_full_batch else 0.1)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    assert np.isfinite(res.coef).all() and np.isfinite(res.intercept)
    assert res.status in ("converged", "max_iter", "diverged", "stalled")
    assert not (batch and rule_is_full_batch)  # a full-batch rule with batches must raise
