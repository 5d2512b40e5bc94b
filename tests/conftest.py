"""Shared fixtures: backend parametrization, standardized data, and an independent oracle.

The oracle functions below (imported by the test modules: ``from conftest import ...``) are
written from DESIGN.md's formulas with different numerics than ``gradstep._backends.reference``
(scipy's expit / numpy's logaddexp on the signed margin, Newton's method for the minimizer), so
a test that compares a backend with them can fail when the reference itself is wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

import gradstep as gs

ALL_BACKENDS = ("cpp", "numba", "numpy")
COMPILED_BACKENDS = ("cpp", "numba")


def _require(name: str) -> str:
    avail = gs.backends()
    if not avail[name]:
        pytest.skip(f"backend {name!r} is not available: {avail['why'].get(name, '?')}")
    return name


def fit_recording_drivers(monkeypatch, *args, refuse=(), **kw):
    """(gs.fit(*args, **kw), the class names of the drivers it made): each name in ``refuse``
    is one of gradstep.driver's choices (_split, _compiled_curvature, ...) made to say no."""
    from gradstep import api, driver

    made = []
    real = driver.make_driver

    def spy(*a):
        d = real(*a)
        made.append(type(d).__name__)
        return d

    with monkeypatch.context() as m:
        m.setattr(api, "make_driver", spy)
        for choice in refuse:
            m.setattr(driver, choice, lambda *a: None)
        result = gs.fit(*args, **kw)
    return result, made


@pytest.fixture(scope="session", params=ALL_BACKENDS)
def backend(request) -> str:
    """Every backend that ``gs.backends()`` lists as available (the others are skipped)."""
    return _require(request.param)


@pytest.fixture(scope="session", params=COMPILED_BACKENDS)
def compiled_backend(request) -> str:
    """The backends that must agree with the NumPy specification (skipped when missing)."""
    return _require(request.param)


def make_data(n=300, d=5, seed=0, dtype=np.float64, noise=True):
    """Standardized, correlated features and a non-separable 0/1 target."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    w = rng.standard_normal(d)
    p = expit(X @ w + 0.3)
    y = (rng.random(n) < p).astype(np.int64) if noise else (p > 0.5).astype(np.int64)
    return np.ascontiguousarray(X, dtype=dtype), y


@pytest.fixture(scope="session")
def data():
    """n=300, d=5 standardized data with labels drawn from a logistic model."""
    return make_data()


# ---- the independent oracle ------------------------------------------------------------------


def oracle_loss_grad(X, y, w, b=0.0, sw=None, alpha=0.0):
    """J, grad_w, grad_b for ONE run from DESIGN.md, plus the scale of the gradient's terms.

    Per-sample loss log(1 + exp(z)) - y z is written as logaddexp(0, (1 - 2y) z) and
    sigmoid(z) - y as (1 - 2y) * expit((1 - 2y) z) (exact for 0/1 y, no cancellation).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    s = np.ones(X.shape[0]) if sw is None else np.asarray(sw, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    z = X @ w + b
    sign = 1.0 - 2.0 * y
    total = s.sum()
    loss = np.sum(s * np.logaddexp(0.0, sign * z)) / total
    r = sign * expit(sign * z)  # sigmoid(z) - y
    grad_w = (s * r) @ X / total
    grad_b = np.sum(s * r) / total
    scale = np.max(np.abs(s * r) @ np.abs(X) / total, initial=abs(grad_b))
    if alpha:
        loss += 0.5 * alpha * w @ w
        grad_w = grad_w + alpha * w
        scale += alpha * np.max(np.abs(w))
    return loss, grad_w, grad_b, scale


def oracle_hessian(X, y, w, b, sw, alpha, fit_intercept):
    """Hessian of J over (w, b) (or w alone)."""
    X = np.asarray(X, dtype=np.float64)
    s = np.ones(X.shape[0]) if sw is None else np.asarray(sw, dtype=np.float64)
    A = np.hstack([X, np.ones((X.shape[0], 1))]) if fit_intercept else X
    p = expit(X @ w + b)
    H = (A * (s * p * (1 - p))[:, None]).T @ A / s.sum()
    H[: X.shape[1], : X.shape[1]] += alpha * np.eye(X.shape[1])
    return H


def oracle_solution(X, y, sw=None, alpha=0.0, fit_intercept=True):
    """The minimizer by Newton's method with exact Hessian (gradient ~1e-15 at the end)."""
    d = X.shape[1]
    w, b = np.zeros(d), 0.0
    for _ in range(100):
        _, gw, gb, _ = oracle_loss_grad(X, y, w, b, sw, alpha)
        g = np.append(gw, gb) if fit_intercept else gw
        if np.max(np.abs(g)) < 1e-15:
            break
        H = oracle_hessian(X, y, w, b, sw, alpha, fit_intercept)
        step = np.linalg.solve(H, g)
        w = w - step[:d]
        if fit_intercept:
            b = b - step[d]
    return w, b


def assert_close(actual, expected, rtol, scale=None):
    """assert_allclose with an absolute floor of rtol * scale (default: the largest |expected|):
    entries that cancel to near zero are judged against the size of the whole vector."""
    expected = np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = np.max(np.abs(expected), initial=0.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)
