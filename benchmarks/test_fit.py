"""Whole fits: each backend against gradstep's NumPy backend and against what other libraries
offer for the same job (scikit-learn, PyTorch when installed)."""

import numpy as np
import pytest

import gradstep as gs
from conftest import ALL_THREADS, BACKENDS, blas_limit
from gradstep.bench import numpy_adam_fit, torch_adam_fit


@pytest.mark.parametrize("who", ["plain numpy", *BACKENDS])
def test_fit_adam_small(benchmark, data, who):
    """1,000 x 20, Adam, 1,000 iterations: interpreter overhead dominates plain NumPy."""
    X, y, _ = data(1_000, 20, 1, "float64")
    benchmark.group = "fit adam 1000x20 x1000 iterations"
    if who == "plain numpy":
        benchmark(numpy_adam_fit, X, y, 1000, 0.01)
        return
    gs.fit(X, y, "adam", lr=0.01, max_iter=5, backend=who, history=False)  # warm-up / JIT
    res = benchmark(gs.fit, X, y, "adam", lr=0.01, max_iter=1000, tol=0.0, backend=who,
                    history=False)
    w_np, b_np = numpy_adam_fit(X, y, 1000, 0.01)
    np.testing.assert_allclose(res.coef, w_np, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("who", ["sklearn SGDClassifier", *BACKENDS])
def test_minibatch_vs_sgdclassifier(benchmark, data, who):
    """20 epochs of mini-batches (256, Adam) on 200,000 x 100 against SGDClassifier's 20 epochs,
    both with SGDClassifier's default alpha = 1e-4; the objective reached is in extra_info."""
    X, y, _ = data(200_000, 100, 1, "float64")
    alpha = 1e-4
    benchmark.group = "minibatch 200000x100 x20 epochs"
    if who == "sklearn SGDClassifier":
        from sklearn.linear_model import SGDClassifier

        model = benchmark.pedantic(
            lambda: SGDClassifier(loss="log_loss", max_iter=20, tol=None, alpha=alpha,
                                  random_state=0).fit(X, y), rounds=3, iterations=1)
        coef, intercept = model.coef_[0], model.intercept_[0]
    else:
        res = benchmark.pedantic(
            lambda: gs.fit(X, y, "adam", lr=0.001, batch_size=256, max_iter=20, tol=None,
                           alpha=alpha, random_state=0, backend=who, history=False),
            rounds=3, iterations=1, warmup_rounds=1)
        coef, intercept = res.coef, res.intercept
    objective = gs.loss_and_grad(X, y, coef, intercept, alpha=alpha)[0]
    benchmark.extra_info["objective"] = float(objective)
    assert np.isfinite(objective)


@pytest.mark.parametrize("who", ["sklearn lbfgs", *BACKENDS])
def test_fit_vs_lbfgs(benchmark, data, who):
    """To the same tolerance as LogisticRegression(solver="lbfgs") on 100,000 x 100."""
    X, y, _ = data(100_000, 100, 1, "float64")
    benchmark.group = "fit to optimum 100000x100"
    if who == "sklearn lbfgs":
        from sklearn.linear_model import LogisticRegression

        benchmark.pedantic(lambda: LogisticRegression(C=1.0).fit(X, y), rounds=3, iterations=1)
    else:
        alpha = 1.0 / X.shape[0]
        res = benchmark.pedantic(lambda: gs.fit(X, y, "sgd", lr="auto", alpha=alpha, tol=1e-4,
                                                max_iter=2000, backend=who, history=False),
                                 rounds=3, iterations=1, warmup_rounds=1)
        assert res.status == "converged"


@pytest.mark.parametrize("who", ["torch", *BACKENDS])
def test_fit_vs_torch_adam(benchmark, data, who):
    """200 full-batch Adam iterations on 100,000 x 100 float32, the same number of threads."""
    X, y, _ = data(100_000, 100, 1, "float32")
    benchmark.group = "adam x200 100000x100 float32"
    if who == "torch":
        pytest.importorskip("torch")
        benchmark.pedantic(torch_adam_fit, args=(X, y, 200, 0.01, ALL_THREADS), rounds=3,
                           iterations=1, warmup_rounds=1)
    else:
        with blas_limit(ALL_THREADS):
            benchmark.pedantic(lambda: gs.fit(X, y, "adam", lr=0.01, max_iter=200, tol=0.0,
                                              backend=who, history=False),
                               rounds=3, iterations=1, warmup_rounds=1)
