"""One BLAS thread for NumPy while a fit runs on gradstep's compiled kernels.

A fit on the C++ kernels spends its time in gradstep's own thread pool; between passes its
Python driver calls NumPy on d-vectors (the line search's and L-BFGS's dot products), and
OpenBLAS runs a dot product of more than 10,000 doubles on all its threads, which then spin
for ~0.1 s waiting for more work — on the cores gradstep's workers need for the next pass.
Measured (Zen 3, 2 cores, 50,000 x 20,000 CSR, lbfgs to tol 1e-5, 86 passes): 2 threads took
1.79-1.87 s, slower than 1 thread (1.62 s); with NumPy's BLAS at 1 thread, 0.99-1.12 s.
scikit-learn's KMeans limits BLAS to one thread around its OpenMP loops for the same reason.

The limit is process-wide (BLAS libraries have one thread count), so nested or concurrent fits
share it: the first to enter sets it, the last to leave restores what was there.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_depth = 0
_limiter: Any = None  # threadpoolctl's limiter of the outermost fit (restores the old limits)
_controller: Any = None


def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, found once (a scan of the loaded
    shared objects takes milliseconds; a limit through it takes tens of microseconds)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


@contextlib.contextmanager
def one_blas_thread(active: bool = True) -> Iterator[None]:
    """Limit every loaded BLAS to one thread inside the block (when ``active``)."""
    global _depth, _limiter
    if not active:
        yield
        return
    with _lock:
        if _depth == 0:
            _limiter = _blas_controller().limit(limits=1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None
