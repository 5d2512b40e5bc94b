"""NumPy's BLAS runs on one thread while a fit runs on the compiled kernels (gradstep._blas), and
gets its thread count back afterwards, also when fits nest or overlap."""

import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import gradstep as gs
from gradstep._blas import one_blas_thread

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2 or not any(
    i.get("user_api") == "blas" for i in threadpool_info()), reason="needs a BLAS and 2 cores")


def blas_threads() -> set:
    return {i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"}


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8))
    return X, (X[:, 0] + 0.3 * rng.standard_normal(300) > 0).astype(float)


@pytest.mark.parametrize("backend, inside", [("cpp", {1}), ("numpy", {2})])
def test_fit_limits_blas_only_on_the_compiled_kernels(backend, inside):
    if backend == "cpp" and "cpp" not in gs.backends():
        pytest.skip("compiled core not built")
    X, y = data()
    seen = []
    with threadpool_limits(2, user_api="blas"):
        gs.fit(X, y, "lbfgs", backend=backend, callback=lambda p: seen.append(blas_threads()))
        after = blas_threads()
    assert seen and all(s == inside for s in seen)
    assert after == {2}


def test_limit_restored_by_the_last_of_overlapping_fits():
    with threadpool_limits(2, user_api="blas"):
        outer = one_blas_thread()
        outer.__enter__()
        inner = one_blas_thread()
        inner.__enter__()
        outer.__exit__(None, None, None)  # the first to leave: another fit still runs
        assert blas_threads() == {1}
        inner.__exit__(None, None, None)
        assert blas_threads() == {2}
        with one_blas_thread(active=False):
            assert blas_threads() == {2}


def test_concurrent_fits_leave_the_thread_count_as_it_was():
    if "cpp" not in gs.backends():
        pytest.skip("compiled core not built")
    X, y = data()
    errors = []

    def work():
        try:
            for _ in range(5):
                gs.fit(X, y, "lbfgs", backend="cpp")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with threadpool_limits(2, user_api="blas"):
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert blas_threads() == {2}
