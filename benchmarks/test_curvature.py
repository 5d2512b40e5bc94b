"""The curvature rules against their baselines, each group one case of benchmarks/curvature.py:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_curvature.py

* time to loss gap 1e-7 on 200,000 x 100 (alpha = 1e-4, 2 threads): gradstep ``lbfgs`` vs
  LogisticRegression(solver="lbfgs") and torch.optim.LBFGS (when torch is importable);
  gradstep ``newton`` vs LogisticRegression(solver="newton-cholesky"). How far each runs comes
  from an untimed probe (see curvature.py): gradstep's max_iter from its history, scikit-learn's
  loosest tol of a grid, torch's iteration count.
* a regularization path of 16 alphas as ONE gradstep fit vs 16 scikit-learn fits.

Each benchmarked call is checked: the gap is reached; for the path, every gradstep run converged
and every scikit-learn fit is as good as gradstep's. Two rounds each (one for the 16 scikit-learn
fits): the file runs in a few minutes on an idle 2-core machine.
"""

import numpy as np
import pytest
from curvature import (
    ALPHA,
    GAP,
    SKLEARN_TOLS,
    THREADS,
    gradstep_fit,
    gradstep_probe,
    make_problem,
    objective,
    sklearn_fit,
    torch_fit,
    torch_probe,
    torch_problem,
)

import gradstep as gs
from conftest import blas_limit
from gradstep.optimum import solve

N = 200_000
ROUNDS = 2


@pytest.fixture(scope="module")
def problem():
    """X, y, alpha, C and loss* of the time-to-gap cases (solved once for the module)."""
    X, y = make_problem(N)
    with blas_limit(THREADS):
        loss_star = solve(X, y, alpha=ALPHA, n_threads=THREADS).loss
    return X, y, ALPHA, 1.0 / (ALPHA * N), loss_star


def gap(problem, coef, intercept) -> float:
    X, y, alpha, _, loss_star = problem
    return objective(X, y, coef, intercept, alpha) - loss_star


def sklearn_tol(problem, solver) -> float:
    """The loosest tol of the grid whose fit reaches the gap."""
    X, y, _, C, _ = problem
    for tol in SKLEARN_TOLS:
        model = sklearn_fit(X, y, solver, C, tol)
        if gap(problem, model.coef_, model.intercept_) <= GAP:
            return tol
    pytest.fail(f"{solver} never reaches the gap")


@pytest.mark.parametrize("who", ["gradstep lbfgs", "sklearn lbfgs", "torch LBFGS"])
def test_lbfgs_to_gap(benchmark, problem, who):
    X, y, alpha, C, loss_star = problem
    benchmark.group = f"time to gap {GAP:g}, {N} x 100, lbfgs"
    with blas_limit(THREADS):
        if who == "gradstep lbfgs":
            n_iter, passes = gradstep_probe(X, y, "lbfgs", alpha, loss_star)
            assert n_iter is not None
            benchmark.extra_info.update(n_iter=n_iter, passes=passes)
            res = benchmark.pedantic(gradstep_fit, args=(X, y, "lbfgs", alpha, n_iter),
                                     rounds=ROUNDS, iterations=1, warmup_rounds=1)
            coef, intercept = res.coef, res.intercept
        elif who == "sklearn lbfgs":
            tol = sklearn_tol(problem, "lbfgs")
            benchmark.extra_info["tol"] = tol
            model = benchmark.pedantic(sklearn_fit, args=(X, y, "lbfgs", C, tol),
                                       rounds=ROUNDS, iterations=1)
            coef, intercept = model.coef_, model.intercept_
        else:
            pytest.importorskip("torch")
            fresh = torch_problem(X, y, alpha)
            n_iter = torch_probe(fresh, X, y, alpha, loss_star)
            assert n_iter is not None
            benchmark.extra_info["n_iter"] = n_iter
            coef, intercept, _ = benchmark.pedantic(torch_fit, args=(fresh, n_iter),
                                                    rounds=ROUNDS, iterations=1)
    reached = gap(problem, coef, intercept)
    benchmark.extra_info["gap"] = reached
    assert reached <= GAP


@pytest.mark.parametrize("who", ["gradstep newton", "sklearn newton-cholesky"])
def test_newton_to_gap(benchmark, problem, who):
    X, y, alpha, C, loss_star = problem
    benchmark.group = f"time to gap {GAP:g}, {N} x 100, newton"
    with blas_limit(THREADS):
        if who == "gradstep newton":
            n_iter, passes = gradstep_probe(X, y, "newton", alpha, loss_star)
            assert n_iter is not None
            benchmark.extra_info.update(n_iter=n_iter, passes=passes)
            res = benchmark.pedantic(gradstep_fit, args=(X, y, "newton", alpha, n_iter),
                                     rounds=ROUNDS, iterations=1, warmup_rounds=1)
            coef, intercept = res.coef, res.intercept
        else:
            tol = sklearn_tol(problem, "newton-cholesky")
            benchmark.extra_info["tol"] = tol
            model = benchmark.pedantic(sklearn_fit, args=(X, y, "newton-cholesky", C, tol),
                                       rounds=ROUNDS, iterations=1)
            coef, intercept = model.coef_, model.intercept_
    reached = gap(problem, coef, intercept)
    benchmark.extra_info["gap"] = reached
    assert reached <= GAP


@pytest.mark.parametrize("who", ["gradstep one call", "sklearn 16 fits"])
def test_regularization_path(benchmark, who):
    """16 alphas (log grid 1e-6 .. 1e-1), lbfgs to tol 1e-6: gradstep's runs must all converge
    (max |gradient| <= 1e-6, checked with gs.loss_and_grad); each scikit-learn fit must be as
    good as gradstep's run for its alpha (a gradstep fit made outside the timing)."""
    X, y = make_problem(N, seed=1)
    alphas = np.logspace(-6, -1, 16)
    Cs = 1.0 / (alphas * N)
    benchmark.group = f"regularization path, 16 alphas, {N} x 100"

    def ours():
        return gs.fit(X, y, "lbfgs", alpha=alphas, tol=1e-6, max_iter=1000, n_threads=THREADS,
                      history=False)

    def theirs():
        return [sklearn_fit(X, y, "lbfgs", C, 1e-6, 1000) for C in Cs]

    with blas_limit(THREADS):
        if who == "gradstep one call":
            res = benchmark.pedantic(ours, rounds=ROUNDS, iterations=1, warmup_rounds=1)
            assert np.all(res.status == "converged")
            for k, a in enumerate(alphas):
                _, g, g0 = gs.loss_and_grad(X, y, res.coef[k], res.intercept[k], alpha=a)
                assert max(np.abs(g).max(), abs(g0)) <= 1e-6
        else:
            models = benchmark.pedantic(theirs, rounds=1, iterations=1)
            res = ours()
            for k, (m, a) in enumerate(zip(models, alphas)):
                theirs_loss = objective(X, y, m.coef_, m.intercept_, a)
                ours_loss = objective(X, y, res.coef[k], [res.intercept[k]], a)
                assert theirs_loss <= ours_loss + 1e-7
