"""Dask input (``gradstep.dask.DaskOracle``) on a 2-worker LocalCluster: the same results as
the in-memory fit, determinism, the mini-batch and finiteness errors, a worker killed mid-fit,
and Ctrl-C during a pass."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import gradstep as gs  # noqa: E402
import gradstep.dask as gsd  # noqa: E402
from conftest import make_data  # noqa: E402

RTOL = 1e-10
BACKENDS = ("cpp", "numpy")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, worker_dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def problem():
    X, y = make_data(n=3000, d=6, seed=3)
    rng = np.random.default_rng(7)
    sw = rng.random(X.shape[0]) + 0.1
    return X, y, sw


def _backend(name: str) -> str:
    if not gs.backends()[name]:
        pytest.skip(f"backend {name!r} is not available")
    return name


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert float(np.max(np.abs(a - b))) <= rtol * scale, (a, b)


@pytest.mark.parametrize("name", BACKENDS)
def test_loss_grad_and_hessp_equal_the_in_memory_ones(client, problem, name):
    backend = _backend(name)
    X, y, sw = problem
    Xd = da.from_array(X, chunks=(700, 6))  # 5 row chunks, the last one short
    swd = da.from_array(sw, chunks=1000)  # chunked unlike X: rechunked to X's rows
    coef = np.linspace(-0.5, 0.5, 6)
    # the weights as NumPy (cpp) or dask (numpy) arrays; unit weights in the other tests
    weights = sw if name == "cpp" else swd
    want = gs.loss_and_grad(X, y, coef, 0.3, sample_weight=sw, alpha=0.2, backend=backend)
    got = gs.loss_and_grad(Xd, y, coef, 0.3, sample_weight=weights, alpha=0.2, backend=backend)
    for g, w in zip(got, want):
        _close(g, w)
    want = gs.hessp(X, y, coef, 0.3, coef[::-1], 1.0, sample_weight=sw, alpha=0.2,
                    backend=backend)
    got = gs.hessp(Xd, y, coef, 0.3, coef[::-1], 1.0, sample_weight=weights, alpha=0.2,
                   backend=backend)
    for g, w in zip(got, want):
        _close(g, w)


def test_runs_columns_chunks_and_float32(client, problem):
    X, y, _ = problem
    Y = np.column_stack([y, 1 - y, y])
    coef = np.array([np.linspace(-1, 1, 6), np.zeros(6), np.ones(6)])
    alpha = [0.0, 0.1, 1.0]
    want = gs.loss_and_grad(X, Y, coef, [0.1, 0.2, 0.3], alpha=alpha)
    Xd = da.from_array(X, chunks=(1000, 4))  # chunked across columns: rechunked to whole rows
    got = gs.loss_and_grad(Xd, da.from_array(Y, chunks=(500, 3)), coef, [0.1, 0.2, 0.3],
                           alpha=alpha)
    for g, w in zip(got, want):
        _close(g, w)
    X32 = X.astype(np.float32)
    want = gs.loss_and_grad(X32, y, coef[0], 0.1)
    got = gs.loss_and_grad(da.from_array(X32, chunks=(1000, 6)), y, coef[0], 0.1)
    assert gsd.DaskOracle(da.from_array(X32, chunks=(1000, 6)), y).X.dtype == np.float32
    for g, w in zip(got, want):
        _close(g, w)


FIT_CASES = [("cpp", "lbfgs", dict(tol=1e-8)),
             ("cpp", "sgd", dict(lr="auto", max_iter=8, tol=None)),  # lipschitz: Lanczos
             ("cpp", "newton", dict(tol=1e-6)),  # hessp
             ("numpy", "lbfgs", dict(tol=1e-8))]


@pytest.mark.parametrize("name, rule, kw", FIT_CASES, ids=[f"{b}-{r}" for b, r, _ in FIT_CASES])
def test_fit_equals_the_in_memory_fit(client, problem, name, rule, kw):
    backend = _backend(name)
    X, y, sw = problem
    Xd = da.from_array(X, chunks=(600, 6))
    yd = da.from_array(y, chunks=600)
    want = gs.fit(X, y, rule, alpha=1e-2, sample_weight=sw, backend=backend, **kw)
    got = gs.fit(Xd, yd, rule, alpha=1e-2, sample_weight=sw, backend=backend, **kw)
    assert got.backend == f"{backend}-dask"
    assert got.status == want.status and got.n_iter == want.n_iter
    _close(got.coef, want.coef)
    _close(got.intercept, want.intercept)
    _close(got.loss, want.loss)
    assert got.classes.tolist() == [0, 1]


def test_labels_dataframe_and_lazy_chunks(client, problem):
    X, y, _ = problem
    labels = np.where(y == 1, "yes", "no")
    kw = dict(alpha=1e-2, max_iter=5, tol=None)
    want = gs.fit(X, labels, "lbfgs", **kw)
    Xd = da.from_array(X, chunks=(1000, 6))
    got = gs.fit(Xd, da.from_array(labels, chunks=1000), "lbfgs", **kw)
    assert got.classes.tolist() == ["no", "yes"]
    _close(got.coef, want.coef)
    lazy = gsd.DaskOracle(Xd, y, alpha=1e-2, persist=False)
    kept = gsd.DaskOracle(Xd, y, alpha=1e-2, persist=True)
    assert not lazy.persisted and kept.persisted
    P, on = np.full((2, 7), 0.1), np.ones(2, np.uint8)
    for a, b in zip(lazy.loss_grad(P, on), kept.loss_grad(P, on)):
        np.testing.assert_array_equal(a, b)  # the same chunks, the same tree: the same bits


def test_a_dask_dataframe(client, problem, monkeypatch):
    dd = pytest.importorskip("dask.dataframe")  # needs pandas and pyarrow
    import pandas as pd

    X, y, _ = problem
    kw = dict(alpha=1e-2, max_iter=5, tol=None)
    want = gs.fit(X, y, "lbfgs", **kw)
    # in this process (the workers need not import pandas and pyarrow for this test)
    monkeypatch.setattr(gsd, "current_client", lambda: None)
    with dask.config.set(scheduler="threads"):
        frame = dd.from_pandas(pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]),
                               npartitions=3)
        got = gs.fit(frame.to_dask_array(lengths=True), y, "lbfgs", **kw)
        _close(got.coef, want.coef)
        got = gs.fit(frame, y, "lbfgs", **kw)  # the frame itself: read the same way
        _close(got.coef, want.coef)
        with pytest.raises(ValueError, match="lengths=True"):
            gs.fit(frame.to_dask_array(), y, "lbfgs")


def test_working_set_rounds_stay_on_the_cluster(client, monkeypatch):
    """fit(..., working_set=True) on a dask X: each round's X is a lazy column slice of it (a
    dask array, not the whole array pulled to the client), and the fit is the in-memory one."""
    from gradstep import working_set

    rng = np.random.default_rng(11)
    n, d = 600, 700  # d > working_set.START: the first round's X is a slice
    X = rng.standard_normal((n, d))
    w = np.zeros(d)
    w[rng.choice(d, 8, replace=False)] = 2.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-X @ w))).astype(float)
    slices = []
    columns = working_set.columns

    def recording(X_, features):
        out = columns(X_, features)
        slices.append(out)
        return out

    monkeypatch.setattr(working_set, "columns", recording)
    kw = dict(alpha=0.05, l1_ratio=1.0, tol=1e-8, max_iter=2000, working_set=True,
              backend=_backend("cpp"))
    got = gs.fit(da.from_array(X, chunks=(200, d)), y, "lbfgs", **kw)
    assert slices and all(hasattr(S, "__dask_graph__") for S in slices)
    assert slices[0].shape == (n, working_set.START)
    want = gs.fit(X, y, "lbfgs", **kw)
    assert got.status == want.status == "converged" and got.backend == "cpp-dask"
    np.testing.assert_array_equal(got.coef != 0, want.coef != 0)
    np.testing.assert_allclose(got.coef, want.coef, atol=1e-6)


def test_results_are_deterministic_and_need_no_client(client, problem, monkeypatch):
    X, y, sw = problem
    Xd = da.from_array(X, chunks=(500, 6))
    kw = dict(alpha=1e-3, sample_weight=sw, max_iter=4, tol=None)
    first = gs.fit(Xd, y, "lbfgs", **kw)
    second = gs.fit(Xd, y, "lbfgs", **kw)
    np.testing.assert_array_equal(first.coef, second.coef)
    assert first.intercept == second.intercept
    # no client: dask's default scheduler (threads) in this process, the same bits
    monkeypatch.setattr(gsd, "current_client", lambda: None)
    with dask.config.set(scheduler="threads"):
        local = gs.fit(Xd, y, "lbfgs", **kw)
        np.testing.assert_array_equal(local.coef, first.coef)
        assert gsd.DaskOracle(Xd, y).client is None


def test_minibatch_is_refused_before_any_update(client, problem):
    X, y, _ = problem
    Xd = da.from_array(X, chunks=(1000, 6))
    seen = []
    with pytest.raises(ValueError, match="batch_size"):
        gs.fit(Xd, y, "sgd", lr=0.1, batch_size=100, callback=seen.append)
    assert seen == []  # no progress report: not a single update was made


def test_nan_is_named_with_its_chunk(client, problem):
    X, y, _ = problem
    bad = X.copy()
    bad[1234, 2] = np.nan
    Xd = da.from_array(bad, chunks=(1000, 6))
    message = r"row 1234, column 2: nan, in chunk 1 of rows 1000-1999"
    with pytest.raises(ValueError, match=message):
        gs.fit(Xd, y, "lbfgs")
    with pytest.raises(ValueError, match=message):
        gs.loss_and_grad(Xd, y, np.zeros(6))
    with pytest.raises(ValueError, match=message):
        gsd.DaskOracle(Xd, y)


def test_input_errors(client, problem):
    X, y, _ = problem
    Xd = da.from_array(X, chunks=(1000, 6))
    with pytest.raises(ValueError, match="2-D"):
        gs.fit(Xd[:, 0], y)
    with pytest.raises(ValueError, match="rows but X has"):
        gs.fit(Xd, da.from_array(y[:-1], chunks=1000))
    with pytest.raises(ValueError, match="exactly two classes"):
        gs.fit(Xd, da.from_array(np.arange(X.shape[0]) % 3, chunks=1000))
    with pytest.raises(ValueError, match="only 0 and 1"):
        gs.loss_and_grad(Xd, da.from_array(2 * y, chunks=1000), np.zeros(6))
    with pytest.raises(ValueError, match=">= 0"):
        gs.fit(Xd, y, sample_weight=da.from_array(-np.ones(X.shape[0]), chunks=1000))


def test_a_worker_killed_mid_fit_loses_nothing(client, problem):
    X, y, _ = problem
    Xd = da.from_array(X, chunks=(300, 6))  # 10 chunks over both workers
    kw = dict(alpha=1e-4, tol=None, max_iter=12)
    want = gs.fit(Xd, y, "lbfgs", **kw)
    calls, victims = [], []

    def kill_one_worker(progress):
        calls.append(int(progress.iteration[0]))
        if len(calls) == 2:  # a few iterations in: one worker process dies
            victims.append(sorted(client.scheduler_info()["workers"])[0])
            client.run(os._exit, 1, workers=victims, on_error="ignore")

    got = gs.fit(Xd, y, "lbfgs", callback=kill_one_worker, **kw)
    assert len(calls) > 2 and calls[1] < 12  # killed mid-fit, and the fit went on
    assert victims[0] not in client.scheduler_info()["workers"]  # it is gone
    np.testing.assert_array_equal(got.coef, want.coef)  # the chunks were recomputed
    assert got.n_iter == want.n_iter and got.status == want.status
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the tests after


def test_ctrl_c_cancels_the_pass(client, problem):
    X, y, _ = problem

    def slow(block):  # a chunk that takes a while to read from its source
        time.sleep(1.5)
        return block

    Xd = da.from_array(X, chunks=(1000, 6)).map_blocks(slow, dtype=X.dtype)
    oracle = gsd.dask_oracle(Xd, y, sample_weight=None, alpha=0.0, backend="auto",
                             n_threads=None, labels=False, finite=False, persist=False)[0]
    # KeyboardInterrupt needs Python's handler: a background job inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    began = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            oracle.loss_grad(np.zeros((1, 7)), np.ones(1, np.uint8))
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - began < 1.5  # at once: no chunk of the pass had finished
    gc.collect()
    assert not client.futures  # the pass's futures were cancelled and released

    def ours(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if "chunk_loss_grad" in str(k)]

    deadline = time.monotonic() + 10
    while client.run_on_scheduler(ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(ours) == []
