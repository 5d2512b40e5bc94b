"""The compiled kernels this CPU can run (baseline, avx2, avx512), timed against each other.

    python benchmarks/kernel_compare.py            # 1M x 100, 1 thread and all cores
    python benchmarks/kernel_compare.py --n 200000

For each kernel: the public ``gs.loss_and_grad`` at K = 1 (float64, float32) and K = 16 (float64),
as a ratio to one ``X @ w`` with the same BLAS threads, measured in this process on the same
arrays. The kernels give the same bits for avx2 and avx512 (tests/test_kernels.py), so this table
is what decides which one a CPU should run by default (block_kernel.hpp, kDefaultAvx512).
Unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command if they are set: they slow NumPy.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import gradstep as gs
from gradstep import _core
from gradstep.bench import make_data, median_time

sys.path.insert(0, str(Path(__file__).parent))
from targets import blas_kernel, cpu_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    all_cores = os.cpu_count() or 1
    X64, y, W = make_data(args.n, 100, 16, np.float64)
    X32 = X64.astype(np.float32)
    Y16 = np.repeat(y[:, None], 16, axis=1)
    b16 = np.zeros(16)
    cases = {
        "K=1 f64": (X64, y, W[0], 0.0),
        "K=1 f32": (X32, y, W[0], 0.0),
        "K=16 f64": (X64, Y16, W, b16),
    }
    print(f"CPU: {cpu_model()}; {all_cores} cores; BLAS {blas_kernel()}; "
          f"kernels {_core.kernels()} (default {_core.kernel()})")
    print("| threads | kernel | " + " | ".join(cases) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cases) + " |")
    before = _core.kernel()
    try:
        for threads in sorted({1, all_cores}):
            with threadpool_limits(threads, user_api="blas"):
                floor = median_time(partial(np.matmul, X64, W[0]), args.repeat)
            for name in _core.kernels():
                _core.set_kernel(name)
                cells = []
                for X, Y, coef, intercept in cases.values():
                    t = median_time(partial(gs.loss_and_grad, X, Y, coef, intercept,
                                            n_threads=threads), args.repeat)
                    cells.append(f"{t * 1e3:.1f} ms = {t / floor:.2f} x X @ w")
                print(f"| {threads} | {name} | " + " | ".join(cells) + " |")
            print(f"| {threads} | (X @ w) | {floor * 1e3:.1f} ms | | |")
    finally:
        _core.set_kernel(before)


if __name__ == "__main__":
    main()
