"""The measurements behind `gradstep bench`: one loss+gradient pass and one whole fit per backend,
against plain NumPy, with the time of one ``X @ w`` as the memory-bound floor.

Every number of a table is measured in the same process on the same arrays, so the ratios
compare like with like. Times are the median of ``repeat`` runs after one warm-up (which also
triggers Numba's compilation).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np

from . import _backends
from ._data import sigmoid
from .api import fit


@dataclass
class Row:
    what: str  # "X @ w (floor)", "gradient", "fit"
    backend: str
    seconds: float
    bytes_read: float  # bytes of X read per gradient (for GB/s)
    floor: float  # the X @ w time of this table
    numpy_seconds: float | None  # plain NumPy's time for the same job

    @property
    def gb_per_s(self) -> float:
        return self.bytes_read / self.seconds / 1e9

    @property
    def vs_floor(self) -> float:
        return self.seconds / self.floor

    @property
    def speedup_vs_numpy(self) -> float | None:
        return None if self.numpy_seconds is None else self.numpy_seconds / self.seconds


# Seconds to wait before each measurement: OpenBLAS's threads keep spinning for about 0.1 s
# after a threaded call, so a gradstep timing taken right after a NumPy one shares the cores with
# them (measured on 16 cores: 16.7 ms for a gradient that takes 9 ms on an idle machine).
SETTLE_SECONDS = 0.3


def median_time(func: Callable[[], object], repeat: int) -> float:
    time.sleep(SETTLE_SECONDS)  # let other libraries' spinning threads go to sleep
    func()  # warm-up: caches, page faults, JIT compilation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def blas_threads(n_threads: int) -> Iterator[str]:
    """Limit BLAS to n_threads while timing NumPy (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        yield "unknown BLAS (install threadpoolctl to see and limit it)"
        return
    with threadpool_limits(limits=n_threads, user_api="blas"):
        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        desc = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('num_threads')} threads)" for i in info
        ) or "no BLAS found by threadpoolctl"
        yield desc


def make_data(n: int, d: int, k: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float64).astype(dtype, copy=False)
    w = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < sigmoid(X @ w)).astype(np.float64)
    W = rng.standard_normal((k, d)) * 0.1
    return X, y, W


def backend_gradient(name: str, X, y, W, b, n_threads: int) -> Callable[[], object]:
    """One loss+gradient pass of a backend on inputs validated once, as inside a fit (the public
    gs.loss_and_grad adds one validating pass over X per call)."""
    from ._validate import check_targets

    module = _backends.get(name)[1]
    Y, _ = check_targets(y, X.shape[0], labels=False)
    P = np.column_stack([W, b])
    rows, active = np.empty(0, np.int64), np.ones(P.shape[0], np.uint8)
    unit_weights, alpha = np.empty((X.shape[0], 0)), np.zeros(P.shape[0])
    return lambda: module.loss_grad(X, Y, unit_weights, P, alpha, rows, active, n_threads)


def numpy_gradient(X, y, W, b):
    """What a user writes in NumPy: two passes over X (X @ w, then X.T @ r)."""
    Z = X @ W.T + b
    R = sigmoid(Z) - y[:, None]
    return R.T @ X / X.shape[0]


def numpy_adam_fit(X, y, n_iter: int, lr: float = 0.01):
    """A user's full-batch Adam in NumPy, the baseline of the whole-fit rows."""
    n, d = X.shape
    w, b = np.zeros(d), 0.0
    m, v = np.zeros(d + 1), np.zeros(d + 1)
    for t in range(1, n_iter + 1):
        z = X @ w + b
        r = (sigmoid(z) - y) / n
        g = np.append(X.T @ r, r.sum())
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        step = lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        w -= step[:d]
        b -= step[d]
    return w, b


def torch_adam_fit(X, y, n_iter: int, lr: float = 0.01, n_threads: int | None = None):
    """The same full-batch Adam in PyTorch: nn.Linear + BCEWithLogitsLoss + torch.optim.Adam
    (torch is imported here: it is an optional comparison, never a dependency)."""
    import torch

    if n_threads is not None:
        torch.set_num_threads(n_threads)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(X.dtype))
    model = torch.nn.Linear(X.shape[1], 1).to(Xt.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(n_iter):
        opt.zero_grad()
        loss = loss_fn(model(Xt).squeeze(1), yt)
        loss.backward()
        opt.step()
    return loss.item()


def run(n: int, d: int, k: int, dtype: str, threads: int, fit_iters: int, repeat: int,
        backends: list | None = None) -> tuple[list, str]:
    """All rows of one table and a description of the BLAS that NumPy used."""
    X, y, W = make_data(n, d, k, np.dtype(dtype))
    Y = np.repeat(y[:, None], k, axis=1) if k > 1 else y
    b = np.zeros(k)
    names = backends or [name for name in _backends.ORDER if _backends.available()[name]]
    rows = []
    with blas_threads(threads) as blas:
        floor = median_time(lambda: X @ W[0].astype(X.dtype), repeat)
        np_grad = median_time(lambda: numpy_gradient(X, y, W, b), repeat)
        np_fit = median_time(lambda: numpy_adam_fit(X, y, fit_iters), max(1, repeat // 3))
        bytes_x = float(X.nbytes)
        rows.append(Row("X @ w (floor)", "numpy", floor, bytes_x, floor, None))
        rows.append(Row("gradient", "plain numpy", np_grad, 2 * bytes_x, floor, np_grad))
        for name in names:
            grad = backend_gradient(name, X, Y, W, b, threads)
            seconds = median_time(grad, repeat)
            rows.append(Row("gradient", name, seconds, bytes_x, floor, np_grad))
        rows.append(Row(f"fit adam x{fit_iters}", "plain numpy", np_fit,
                        fit_iters * 2 * bytes_x, floor * fit_iters, np_fit))
        for name in names:
            fit_once = partial(fit, X, y, "adam", lr=0.01, max_iter=fit_iters, tol=0.0,
                               backend=name, n_threads=threads, history=False)
            seconds = median_time(fit_once, max(1, repeat // 3))
            rows.append(Row(f"fit adam x{fit_iters}", name, seconds, fit_iters * bytes_x,
                            floor * fit_iters, np_fit))
    return rows, blas


def format_table(rows: list, title: str) -> str:
    head = f"{'job':<18} {'backend':<12} {'seconds':>10} {'GB/s':>7} {'x floor':>8} {'vs numpy':>9}"
    lines = [title, head, "-" * len(head)]
    for r in rows:
        speed = "" if r.speedup_vs_numpy is None else f"{r.speedup_vs_numpy:8.2f}x"
        lines.append(f"{r.what:<18} {r.backend:<12} {r.seconds:10.5f} {r.gb_per_s:7.2f} "
                     f"{r.vs_floor:8.2f} {speed:>9}")
    return "\n".join(lines)


def machine_description() -> str:
    import gradstep

    try:
        from . import _core

        kernel = f", C++ kernel {_core.kernel()}"
    except ImportError:
        kernel = ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, "
            f"gradstep {gradstep.__version__}{kernel}")
