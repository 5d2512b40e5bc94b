"""Backends: agreement with the NumPy specification rule by rule, batched = alone, fallback when
numba or the compiled core is missing, and thread-count determinism."""

import sys

import numpy as np
import pytest

import gradstep as gs
from conftest import make_data
from gradstep import _backends

# (rule, fit keyword arguments): rates that are not chaotic on standardized data, so that
# rounding differences between backends stay at rounding level after 100 iterations
CASES = {
    "sgd": dict(lr="auto"),
    "momentum": dict(lr=0.05, mu=0.9),
    "nesterov": dict(lr=0.05, mu=0.8),
    "normalized": dict(lr=0.2, schedule="inverse_power", power=0.7),
    "adagrad": dict(lr=0.1),
    "rmsprop": dict(lr=0.005, schedule="inverse_time", decay=0.05),
    "adadelta": dict(lr=1.0),
    "adam": dict(lr=0.01),
}


def _fit_pair(backend, X, y, rule, **kw):
    got = gs.fit(X, y, rule, backend=backend, **kw, **CASES[rule])
    ref = gs.fit(X, y, rule, backend="numpy", **kw, **CASES[rule])
    return got, ref


def _assert_same_run(got, ref, rtol):
    assert got.n_iter == ref.n_iter and got.status == ref.status
    scale = np.abs(ref.coef).max()
    np.testing.assert_allclose(got.coef, ref.coef, rtol=rtol, atol=rtol * scale)
    assert got.intercept == pytest.approx(ref.intercept, rel=rtol, abs=rtol * scale)
    assert got.loss == pytest.approx(ref.loss, rel=rtol)
    for name in ("loss", "grad_norm", "step_norm", "lr"):
        a, b = getattr(got.history, name), getattr(ref.history, name)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("rule", list(CASES))
@pytest.mark.parametrize("batch_size", [None, 32])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backend_agrees_with_numpy(compiled_backend, rule, batch_size, dtype):
    X, y = make_data(n=300, d=5, seed=0, dtype=dtype)  # batch 32: the last batch has 12 rows
    got, ref = _fit_pair(compiled_backend, X, y, rule, alpha=1e-3, max_iter=100, tol=None,
                         batch_size=batch_size, random_state=42)
    _assert_same_run(got, ref, 1e-9)
    assert got.backend == compiled_backend and ref.backend == "numpy"


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adam", "adadelta"])
@pytest.mark.parametrize("batch_size", [None, 32])
def test_backend_agrees_with_weights_and_no_intercept(compiled_backend, rule, batch_size):
    X, y = make_data(n=300, d=6, seed=9)
    sw = np.random.default_rng(9).uniform(0.0, 3.0, 300)
    got, ref = _fit_pair(compiled_backend, X, y, rule, alpha=0.01, sample_weight=sw,
                         fit_intercept=False, max_iter=100, tol=None, batch_size=batch_size,
                         random_state=3)
    _assert_same_run(got, ref, 1e-9)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_backend_agrees_on_stopping(compiled_backend, batch_size):
    """Same n_iter and status when runs stop on their own criterion."""
    X, y = make_data(n=300, d=5, seed=1)
    kw = dict(lr=["auto", 0.05, 0.01], alpha=0.01, max_iter=3000, random_state=7,
              batch_size=batch_size, tol=1e-6 if batch_size is None else 1e-4)
    got = gs.fit(X, y, ["sgd", "momentum", "adam"], backend=compiled_backend, **kw)
    ref = gs.fit(X, y, ["sgd", "momentum", "adam"], backend="numpy", **kw)
    np.testing.assert_array_equal(got.n_iter, ref.n_iter)
    np.testing.assert_array_equal(got.status, ref.status)
    assert "converged" in list(ref.status)
    np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.history.loss, ref.history.loss, rtol=1e-9)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_batched_call_equals_each_run_alone(backend, batch_size):
    X, y = make_data(n=300, d=5, seed=0)
    rules = list(CASES)
    # per-run rule objects carry their own rates and schedules
    objs = [gs.fit(X, y, r, max_iter=1, backend="numpy", **CASES[r]).rules for r in rules]
    kw = dict(alpha=1e-3, max_iter=100, tol=None, batch_size=batch_size, random_state=5,
              backend=backend)
    batched = gs.fit(X, y, objs, **kw)
    assert batched.coef.shape == (len(rules), 5)
    for k, obj in enumerate(objs):
        alone = gs.fit(X, y, obj, **kw)
        np.testing.assert_allclose(batched.coef[k], alone.coef, rtol=1e-12,
                                   atol=1e-12 * np.abs(alone.coef).max())
        assert batched.intercept[k] == pytest.approx(alone.intercept, rel=1e-12, abs=1e-14)
        assert batched.n_iter[k] == alone.n_iter and batched.status[k] == alone.status
        np.testing.assert_allclose(batched.history.loss[k], alone.history.loss, rtol=1e-12)


# ---- fallback --------------------------------------------------------------------------------


def _fresh_registry(monkeypatch):
    """Forget what the registry loaded; monkeypatch puts the old caches back afterwards."""
    monkeypatch.setattr(_backends, "_loaded", {})
    monkeypatch.setattr(_backends, "_why_missing", {})


def _hide_numba(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.delitem(sys.modules, "gradstep._backends.numba", raising=False)


def _hide_core(monkeypatch):
    import gradstep

    monkeypatch.setitem(sys.modules, "gradstep._core", None)
    monkeypatch.delattr(gradstep, "_core", raising=False)  # `from .. import _core` looks here
    monkeypatch.delitem(sys.modules, "gradstep._backends.cpp", raising=False)


def test_without_numba(monkeypatch):
    X, y = make_data(n=200, d=4, seed=2)
    expected = gs.fit(X, y, "adam", lr=0.05, max_iter=30, backend="numpy")
    _fresh_registry(monkeypatch)
    _hide_numba(monkeypatch)
    avail = gs.backends()
    assert avail["numba"] is False and avail["numpy"] is True
    reason = avail["why"]["numba"]
    assert "numba" in reason and "pip install" in reason
    with pytest.raises(ValueError, match="backend 'numba' is not available") as info:
        gs.fit(X, y, backend="numba")
    assert reason in str(info.value)
    with pytest.raises(ValueError, match="not available"):
        gs.loss_and_grad(X, y, np.zeros(4), backend="numba")
    res = gs.fit(X, y, "adam", lr=0.05, max_iter=30)
    assert res.backend != "numba"
    assert res.backend == ("cpp" if avail["cpp"] else "numpy")
    np.testing.assert_allclose(res.coef, expected.coef, rtol=1e-9)


def test_without_compiled_core(monkeypatch):
    X, y = make_data(n=200, d=4, seed=2)
    expected = gs.fit(X, y, "adam", lr=0.05, max_iter=30, backend="numpy")
    _fresh_registry(monkeypatch)
    _hide_core(monkeypatch)
    avail = gs.backends()
    assert avail["cpp"] is False
    reason = avail["why"]["cpp"]
    assert "gradstep._core" in reason and "pip install ." in reason  # how to build it
    with pytest.raises(ValueError, match="backend 'cpp' is not available"):
        gs.fit(X, y, backend="cpp")
    res = gs.fit(X, y, "adam", lr=0.05, max_iter=30, backend="auto")
    assert res.backend == ("numba" if avail["numba"] else "numpy")
    np.testing.assert_allclose(res.coef, expected.coef, rtol=1e-9)
    loss = gs.loss_and_grad(X, y, res.coef, res.intercept)[0]
    assert loss == pytest.approx(res.loss, rel=1e-12)


def test_without_numba_and_core(monkeypatch):
    X, y = make_data(n=200, d=4, seed=2)
    _fresh_registry(monkeypatch)
    _hide_numba(monkeypatch)
    _hide_core(monkeypatch)
    assert gs.backends() == {"cpp": False, "numba": False, "numpy": True,
                             "why": gs.backends()["why"]}
    assert set(gs.backends()["why"]) == {"cpp", "numba"}
    assert gs.fit(X, y, max_iter=5).backend == "numpy"


def test_registry_is_restored_after_hiding():
    """Runs after the tests above (file order): the caches were put back by monkeypatch."""
    avail = gs.backends()
    for name in ("cpp", "numba"):
        if avail[name]:
            assert gs.fit(*make_data(n=50, d=2), max_iter=2, backend=name).backend == name


def test_unknown_backend_lists_valid_names():
    X, y = make_data(n=20, d=2)
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'.*'cpp'.*'numba'.*'numpy'"):
        gs.fit(X, y, backend="gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        gs.loss_and_grad(X, y, np.zeros(2), backend="torch")


# ---- determinism -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big():
    """n = 50000, d = 20: large enough that the compiled backends use several threads."""
    return make_data(n=50_000, d=20, seed=4)


def test_thread_count_gives_identical_bits(backend, big):
    X, y = big
    sw = np.random.default_rng(1).uniform(0.5, 1.5, len(y))
    w = np.linspace(-1, 1, 20)
    one = gs.loss_and_grad(X, y, w, 0.1, sample_weight=sw, n_threads=1, backend=backend)
    two = gs.loss_and_grad(X, y, w, 0.1, sample_weight=sw, n_threads=2, backend=backend)
    assert one[0] == two[0] and one[2] == two[2]
    np.testing.assert_array_equal(one[1], two[1])
    kw = dict(lr=["auto", 0.01], alpha=1e-3, max_iter=8, tol=None, sample_weight=sw,
              backend=backend)
    a = gs.fit(X, y, ["sgd", "adam"], n_threads=1, **kw)
    b = gs.fit(X, y, ["sgd", "adam"], n_threads=2, **kw)
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.intercept, b.intercept)
    np.testing.assert_array_equal(a.history.loss, b.history.loss)
    c = gs.fit(X[:20_000], y[:20_000], "sgd", lr=0.5, batch_size=4096, max_iter=2,
               random_state=0, n_threads=1, backend=backend)
    d = gs.fit(X[:20_000], y[:20_000], "sgd", lr=0.5, batch_size=4096, max_iter=2,
               random_state=0, n_threads=2, backend=backend)
    np.testing.assert_array_equal(c.coef, d.coef)


@pytest.mark.parametrize("shuffle", ["rows", "blocks"])
def test_small_batches_shared_among_threads_give_identical_bits(backend, shuffle):
    # The C++ fit loop shares even a 256-row batch among threads (its calls come back to back, so
    # the pool's workers are awake); its blocks depend on the batch, never on the threads.
    X, y = make_data(n=3_000, d=60, seed=9)
    sw = np.random.default_rng(2).uniform(0.5, 1.5, len(y))
    fits = [gs.fit(X, y, ["adam", "sgd"], lr=[0.01, 0.1], batch_size=batch, max_iter=3,
                   tol=None, sample_weight=sw, random_state=0, shuffle=shuffle,
                   n_threads=n_threads, backend=backend)
            for batch in (100, 256, 1000) for n_threads in (1, 2, 3)]
    for first, other in zip(fits[::3] * 2, fits[1::3] + fits[2::3]):
        np.testing.assert_array_equal(first.coef, other.coef)
        np.testing.assert_array_equal(first.intercept, other.intercept)
        np.testing.assert_array_equal(first.history.loss, other.history.loss)
    assert not np.array_equal(fits[0].coef, fits[3].coef)  # the batches made different paths


def test_big_data_agrees_with_numpy(compiled_backend, big):
    X, y = big
    w = np.linspace(-1, 1, 20)
    got = gs.loss_and_grad(X, y, w, 0.1, n_threads=2, backend=compiled_backend)
    ref = gs.loss_and_grad(X, y, w, 0.1, backend="numpy")
    assert got[0] == pytest.approx(ref[0], rel=1e-12)
    np.testing.assert_allclose(np.append(got[1], got[2]), np.append(ref[1], ref[2]),
                               rtol=1e-12, atol=1e-12 * np.abs(ref[1]).max())
