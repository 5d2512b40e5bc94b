"""Shared data for the benchmarks; the BLAS NumPy uses is printed in the header of the run."""

import os

import numpy as np
import pytest

import gradstep as gs
from gradstep.bench import blas_threads, make_data

ALL_THREADS = os.cpu_count() or 1
BACKENDS = [name for name in ("cpp", "numba", "numpy") if gs.backends()[name]]
# the NumPy backend is the spec, not a contender
COMPILED = [name for name in BACKENDS if name != "numpy"]


def pytest_report_header(config):
    with blas_threads(ALL_THREADS) as blas:
        pass
    return [f"gradstep backends: {BACKENDS}", f"BLAS: {blas}",
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


# A context that limits NumPy's BLAS to n threads (no-op without threadpoolctl): the one of
# gradstep.bench, under the name the benchmark files use.
blas_limit = blas_threads
