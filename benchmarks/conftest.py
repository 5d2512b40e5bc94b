"""Shared data for the benchmarks; the BLAS NumPy uses is printed in the header of the run."""

import os

import numpy as np
import pytest

import gradstep as gs
from gradstep.bench import make_data

ALL_THREADS = os.cpu_count() or 1
BACKENDS = [name for name in ("cpp", "numba", "numpy") if gs.backends()[name]]
COMPILED = [name for name in BACKENDS if name != "numpy"]  # the NumPy backend is the spec, not a contender


def pytest_report_header(config):
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i['internal_api']} {i['version']} {i.get('architecture')}"
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        blas = ["threadpoolctl not installed"]
    return [f"gradstep backends: {BACKENDS}", f"BLAS: {', '.join(blas)}",
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}"]


_cache = {}


@pytest.fixture(scope="session")
def data():
    """data(n, d, k, dtype) -> (X, y, W), made once per size for the whole session."""

    def get(n, d, k, dtype):
        key = (n, d, k, np.dtype(dtype).name)
        if key not in _cache:
            _cache.clear()  # keep one size in memory at a time: the large one is 800 MB
            _cache[key] = make_data(n, d, k, np.dtype(dtype))
        return _cache[key]

    return get


def blas_limit(n_threads):
    """A context that limits NumPy's BLAS to n_threads (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=n_threads, user_api="blas")
