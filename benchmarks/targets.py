"""The performance targets of the README, measured in one run and printed as its Markdown table.

    python benchmarks/targets.py            # all targets (about 3 minutes on 2 cores)
    python benchmarks/targets.py --quick    # smaller sizes, to check the script itself

Every ratio compares two timings taken in this process on the same arrays. Times are medians of
a few repeats after a warm-up. NumPy's BLAS is limited (threadpoolctl) to the threads of the row.
Unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command if they are set: they slow NumPy.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import textwrap
import time
from functools import partial

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import gradstep as gs
from gradstep import _core
from gradstep.bench import backend_gradient, make_data, median_time, numpy_gradient, torch_adam_fit

ALL = os.cpu_count() or 1


def blas_kernel() -> str:
    return ", ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')})"
                     for i in threadpool_info() if i.get("user_api") == "blas")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def public_gradient(X, y, W, b, threads):
    """The public function a user's optimizer loop calls: validation included."""
    coef = W[0] if W.shape[0] == 1 else W
    intercept = float(b[0]) if b.size == 1 else b
    return lambda: gs.loss_and_grad(X, y, coef, intercept, n_threads=threads)


def gradient_rows(n: int, repeat: int) -> list:
    rows = []
    X64, y, W = make_data(n, 100, 16, np.float64)
    b1, b16 = np.zeros(1), np.zeros(16)
    Y16 = np.repeat(y[:, None], 16, axis=1)
    times = {}
    for threads in (1, ALL):
        with threadpool_limits(threads, user_api="blas"):
            times["floor", threads] = median_time(partial(np.matmul, X64, W[0]), repeat)
            times["numpy", threads] = median_time(partial(numpy_gradient, X64, y, W[:1], b1),
                                                  repeat)
            times["cpp", threads] = median_time(backend_gradient("cpp", X64, y, W[:1], b1, threads),
                                                repeat)
            times["public", threads] = median_time(public_gradient(X64, y, W[:1], b1, threads),
                                                   repeat)
    k16 = max(1, repeat // 2)
    times["numba"] = median_time(backend_gradient("numba", X64, y, W[:1], b1, 1), repeat)
    times["k16"] = median_time(backend_gradient("cpp", X64, Y16, W, b16, 1), k16)
    times["numba k16"] = median_time(backend_gradient("numba", X64, Y16, W, b16, 1), k16)
    X32 = X64.astype(np.float32)
    del X64
    times["f32"] = median_time(backend_gradient("cpp", X32, y, W[:1], b1, 1), repeat)
    times["numba f32"] = median_time(backend_gradient("numba", X32, y, W[:1], b1, 1), repeat)
    times["k16 f32"] = median_time(backend_gradient("cpp", X32, Y16, W, b16, 1), k16)
    times["numba k16 f32"] = median_time(backend_gradient("numba", X32, Y16, W, b16, 1), k16)

    for threads, label in ((1, "1 thread"), (ALL, f"all {ALL} cores")):
        f, t, numpy_t = times["floor", threads], times["public", threads], times["numpy", threads]
        rows.append((f"gs.loss_and_grad, {n:,} x 100 float64, {label}",
                     "<= 1.15 x one X @ w (same BLAS threads); >= 2 x NumPy's gradient",
                     f"{t / f:.2f} x X @ w ({t * 1e3:.0f} vs {f * 1e3:.0f} ms); "
                     f"{numpy_t / t:.2f} x faster than NumPy ({numpy_t * 1e3:.0f} ms); "
                     f"kernel alone {times['cpp', threads] / f:.2f} x X @ w",
                     t / f <= 1.15 and numpy_t / t >= 2))
    r = times["f32"] / times["cpp", 1]
    rows.append(("float32 X (1 thread)", "<= 0.6 x the float64 time",
                 f"{r:.2f} x ({times['f32'] * 1e3:.0f} ms)", r <= 0.6))
    r, r32 = times["k16"] / times["cpp", 1], times["k16 f32"] / times["f32"]
    rows.append(("K = 16 runs in one call (1 thread)", "<= 3 x the time of K = 1",
                 f"float64 {r:.2f} x ({times['k16'] * 1e3:.0f} ms); float32 {r32:.2f} x "
                 f"({times['k16 f32'] * 1e3:.0f} ms)", max(r, r32) <= 3))
    ratios = {f"{k} {dt}": times[cpp] / times[nb] for k, dt, cpp, nb in (
        ("K=1", "f64", ("cpp", 1), "numba"), ("K=1", "f32", "f32", "numba f32"),
        ("K=16", "f64", "k16", "numba k16"), ("K=16", "f32", "k16 f32", "numba k16 f32"))}
    rows.append((f"Numba path, {n:,} x 100, 1 thread", ">= 0.6 x the C++ throughput, every case",
                 "; ".join(f"{k} {r:.2f} x" for k, r in ratios.items()),
                 min(ratios.values()) >= 0.6))
    return rows


def small_fit_row(repeat: int) -> tuple:
    X, y, _ = make_data(1000, 20, 1, np.float64)

    def run(backend):
        return lambda: gs.fit(X, y, "adam", lr=0.01, max_iter=1000, tol=0.0, backend=backend,
                              history=False)

    cpp = median_time(run("cpp"), repeat)
    ref = median_time(run("numpy"), max(1, repeat // 2))
    return ("whole fit, 1,000 x 20, Adam, 1,000 iterations",
            ">= 10 x faster than the NumPy backend",
            f"{ref / cpp:.1f} x ({cpp * 1e3:.1f} vs {ref * 1e3:.0f} ms)", ref / cpp >= 10)


def minibatch_row(n: int, shuffle: str = "rows") -> tuple:
    """The mini-batch target; shuffle="blocks" is the same run in the block order (a different
    sampling scheme, state.shuffle_order_blocks), which reads X in runs of consecutive rows."""
    from sklearn.linear_model import SGDClassifier

    X, y, _ = make_data(n, 100, 1, np.float64)
    alpha = 1e-4  # SGDClassifier's default, so both minimize the same objective
    fit = lambda: gs.fit(X, y, "adam", lr=0.001, batch_size=256, max_iter=20, tol=None,  # noqa
                         alpha=alpha, random_state=0, history=False, shuffle=shuffle)
    sgd = lambda: SGDClassifier(loss="log_loss", max_iter=20, tol=None,  # noqa
                                random_state=0).fit(X, y)
    ours = median_time(fit, 2)
    theirs = median_time(sgd, 2)
    res, model = fit(), sgd()
    ours_loss = gs.loss_and_grad(X, y, res.coef, res.intercept, alpha=alpha)[0]
    their_loss = gs.loss_and_grad(X, y, model.coef_[0], model.intercept_[0], alpha=alpha)[0]
    ok = theirs / ours >= 5 and ours_loss <= their_loss
    order = "" if shuffle == "rows" else f', shuffle="{shuffle}"'
    return (f"20 epochs mini-batch (256, Adam{order}), {n:,} x 100",
            '>= 5 x faster than SGDClassifier(loss="log_loss", max_iter=20, tol=None), '
            "loss no worse",
            f"{theirs / ours:.1f} x ({ours:.2f} vs {theirs:.2f} s); objective {ours_loss:.5f} vs "
            f"{their_loss:.5f}", ok)


def torch_row(n: int) -> tuple:
    try:
        import torch
    except ImportError:
        return ("200 iterations full-batch Adam, float32", ">= 2 x faster than torch.optim.Adam",
                "torch not installed", None)
    X, y, _ = make_data(n, 100, 1, np.float32)
    ours = median_time(lambda: gs.fit(X, y, "adam", lr=0.01, max_iter=200, tol=None,
                                      n_threads=ALL, history=False), 3)
    theirs = median_time(lambda: torch_adam_fit(X, y, 200, 0.01, ALL), 3)
    return (f"200 iterations full-batch Adam, {n:,} x 100 float32, {ALL} threads",
            f">= 2 x faster than torch.optim.Adam (torch {torch.__version__})",
            f"{theirs / ours:.1f} x ({ours:.2f} vs {theirs:.2f} s)", theirs / ours >= 2)


PEAK_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, gradstep as gs
    from gradstep.bench import make_data

    def kib(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))

    n, batch = int(sys.argv[1]), int(sys.argv[2]) or None
    X, y, _ = make_data(n, 100, 1, np.float64)
    gs.fit(X[:100], y[:100], "adam", max_iter=2)  # imports and first-call allocations
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    before = kib("VmRSS:")
    gs.fit(X, y, "adam", max_iter=5, batch_size=batch, history=True)
    print((kib("VmHWM:") - before) * 1024 / X.nbytes)
""")


def peak_memory_row(n: int) -> tuple:
    """Peak resident memory added by a fit, in a fresh process, as a fraction of X's bytes (Linux:
    the peak is reset after X is made, so only what the fit allocates counts)."""
    extra = []
    for batch in (0, 256):
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(n), str(batch)],
                             capture_output=True, text=True, check=True)
        extra.append(float(out.stdout.strip()))
    return (f"peak memory during a fit, {n:,} x 100 float64",
            "X's bytes plus at most 5 % (no copy of a C-contiguous X)",
            f"X + {100 * extra[0]:.2f} % full-batch, X + {100 * extra[1]:.2f} % mini-batch",
            max(extra) <= 0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (checks the script)")
    args = parser.parse_args()
    big, mid, mb, repeat = (20_000, 10_000, 20_000, 2) if args.quick else (
        1_000_000, 100_000, 200_000, 5)
    start = time.perf_counter()
    rows = gradient_rows(big, repeat)
    rows.append(small_fit_row(repeat))
    rows.append(minibatch_row(mb))
    rows.append(minibatch_row(mb, shuffle="blocks"))
    rows.append(torch_row(mid))
    rows.append(peak_memory_row(big))
    print(f"CPU: {cpu_model()}")
    print(f"gradstep {gs.__version__}, kernel {_core.kernel()}, NumPy {np.__version__}, "
          f"BLAS {blas_kernel()}; {os.uname().machine}, {ALL} cores; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"{time.perf_counter() - start:.0f} s\n")
    print("| case | target | measured | met |\n| --- | --- | --- | --- |")
    for case, target, measured, ok in rows:
        met = "n/a" if ok is None else ("yes" if ok else "**no**")
        print(f"| {case} | {target} | {measured} | {met} |")


if __name__ == "__main__":
    main()
