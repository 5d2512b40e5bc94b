"""fit(..., working_set=True): an L1 fit solved on growing sets of features.

An L1 solution is usually sparse (a few hundred nonzero weights of 10^4-10^6 features), yet every
pass of a plain fit reads every column of X. With a working set, each round fits the problem
restricted to a set W of the features (the sub-problem's X[:, W]: its passes read only those
columns' nonzeros), warm-started from the weights so far, then checks the optimality of the
features left out in one pass over all of X:

- W holds the features that are nonzero and the ones whose gradient most violates the L1
  optimality condition |g_j| <= l1 (alpha l1_ratio) at a zero weight (for the multinomial loss, the
  largest |g| over a feature's classes: a feature's C weights enter W together);
- its size starts at ``START`` (or twice the nonzeros) and, after every round that leaves a
  feature outside W violating it by more than tol, becomes the larger of twice the size and
  the nonzeros plus every violating feature (a solution denser than W: its next W about as
  large as it, in one step). So the rounds end, at the latest with W = every feature (a plain
  fit on X); a round that only stopped early (its loose tol) is followed by one on a set of
  the same size at tol;
- a round's tolerance is max(tol, ``INNER`` x the largest violation left outside W) (as celer and
  blitz do: loose while W is still wrong, tol once the features outside W are optimal);
- the fit ends when the sub-problem converged at tol and every feature outside W meets
  |g_j| <= l1 + tol: the plain fit's stopping test (max |minimum-norm subgradient| <= tol) on
  the whole problem, since those features' weights are 0.

The weights outside W are 0, so a sub-problem's objective at its weights is the whole problem's
objective at the whole weights: the rounds' histories join into one (each later round's entry
0 is the previous round's last point, dropped). ``history.grad_norm`` is the norm over W of the
round that recorded it; ``history.passes`` and ``FitResult.passes`` count the rounds' passes
(over X[:, W], each round's first included) and the checks' (over X) alike, FitResult's the
last check too; ``n_iter`` sums the rounds' iterations.

A round's X is a column slice of the X the whole problem's oracle holds (checked once: a COO
matrix is converted to CSR once, not per round); on a dask X it is a lazy slice, so the rounds
run on the cluster as a plain dask fit does, each one reading X's chunks again.

Any rule that takes an L1 term runs the rounds (the benchmark's is lbfgs, OWL-QN). Each round
starts afresh (OWL-QN without curvature pairs), and a round's passes read X[:, W]: on Zipf data
the common features carry most nonzeros and are in W, so a pass over X[:, W] reads 55-65 % of
X's nonzeros, not the set's share of the columns. Whether the rounds win is then decided by
OWL-QN's path lengths, which vary severalfold between neighbouring problems (the plain fit of
seed 8 below takes 95 passes, that of seed 7 215), more than by the sparsity of the solution.
Measured (lbfgs, one thread, Zen 3) on nine 50,000 x 20,000 Zipf CSR problems
(sparse_bench.make_csr seeds 7, 8, 9 x C = 1, 3, 10; 254-8,400 nonzero weights of 20,000),
each fit at the loosest tol that reaches the optimum's objective to 1e-6: working_set=True
against the plain fit 2.5, 2.2, 0.91 x as fast on seed 7, 0.83, 1.09, 1.03 x on seed 8, 1.77,
1.02, 0.88 x on seed 9 (before OWL-QN's searches started from the last accepted step: 0.46-2.4
x). START and INNER were chosen among 256, 512 and 1024 and 0 to 0.5 on five problems of seed
7's kind. Hence an option, not the default.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import scipy.sparse as sp

from .oracle import first_pass

if TYPE_CHECKING:
    from .api import FitResult

START = 512  # the first working set's size (at least twice the starting point's nonzeros)
INNER = 0.3  # a round's tol: this fraction of the largest violation left outside the set


def feature_scores(oracle: Any, coef: np.ndarray, intercept: Any) -> np.ndarray:
    """Each feature's score: |g_j| (the largest over a feature's classes for the multinomial
    loss) from one pass over all of X at (coef, intercept), +inf where a weight is nonzero."""
    from .api import _public_params, _public_result  # api calls this module: loaded by then

    P, _ = _public_params(oracle, coef, intercept, "coef")
    grad = _public_result(oracle, first_pass(oracle, P)[1], single=True)[0]  # (d,) or (C, d)
    score = np.abs(np.atleast_2d(grad)).max(axis=0)
    score[np.atleast_2d(coef != 0.0).any(axis=0)] = np.inf
    return score


def largest_violation(score: np.ndarray, l1: float, candidates: np.ndarray) -> float:
    """max(|g_j|) - l1 over the candidate features whose weight is 0 (0.0 without any): the
    largest breach of their L1 optimality condition |g_j| <= l1."""
    zero = candidates & np.isfinite(score)
    return float(score[zero].max()) - l1 if zero.any() else 0.0


def columns(X: Any, features: np.ndarray) -> Any:
    """The columns `features` (sorted) of the whole problem oracle's X, a round's X: a CSR
    matrix of them from its canonical CSR, a lazy dask array from its dask array (the round
    runs on the cluster as the whole fit does), an array from its array."""
    if sp.issparse(X) or hasattr(X, "__dask_graph__"):
        return X[:, features]
    return np.ascontiguousarray(X[:, features])


def fit_working_set(fit: Callable[..., FitResult], X: Any, y: Any, oracle: Any,
                    start: np.ndarray, l1: float, tol: float, max_iter: int, batched: bool,
                    fit_kwargs: dict) -> FitResult:
    """fit(X, y, **fit_kwargs) with working_set=True (see the module docstring): `oracle` is
    the whole problem's (its smooth loss and gradient) and X its data as it holds them (checked
    once: a COO matrix already CSR, a dask DataFrame already an array), `start` its starting
    row (1, D), `l1` the L1 strength alpha l1_ratio; `batched`: the call's one run is returned
    with a leading axis. fit_kwargs hold the other arguments of the call."""
    from .api import _public_result  # api calls this module: loaded by then

    d = oracle.n_features
    coef_all, intercept = _public_result(oracle, start, single=True)
    score = feature_scores(oracle, coef_all, intercept)
    full_passes = 1
    violation = largest_violation(score, l1, np.ones(d, dtype=bool))
    size = min(d, max(START, 2 * int(np.isinf(score).sum())))
    rounds: list[FitResult] = []
    offsets: list[int] = []  # passes before each round
    used = 0
    while True:
        everything = size == d
        features = np.arange(d) if everything else np.sort(
            np.argpartition(-score, size - 1)[:size])  # the nonzero (inf) and largest scores
        round_tol = tol if everything else max(tol, INNER * violation)
        sub_X = X if everything else columns(X, features)
        sub_coef = coef_all if everything else coef_all[..., features]
        offsets.append(sum(int(r.passes) for r in rounds) + full_passes)
        result = _single(fit(sub_X, y, **fit_kwargs, tol=round_tol, max_iter=max_iter - used,
                             coef_init=sub_coef,
                             intercept_init=intercept if fit_kwargs["fit_intercept"] else None))
        rounds.append(result)
        used += int(result.n_iter)
        coef_all = np.zeros_like(coef_all)
        coef_all[..., features] = result.coef
        intercept = result.intercept
        if everything or result.status != "converged":
            status = result.status
            break
        score = feature_scores(oracle, coef_all, intercept)
        full_passes += 1
        left = np.ones(d, dtype=bool)
        left[features] = False
        violation = largest_violation(score, l1, left)
        if violation <= tol and round_tol <= tol:
            status = "converged"
            break
        if used >= max_iter:
            status = "max_iter"
            break
        if violation > tol:  # features outside W are not optimal: a larger set, one that
            # holds at least the nonzeros and every feature left out that violates
            wanted = int(np.isinf(score).sum()) + int(np.count_nonzero(score[left] > l1 + tol))
            size = min(d, max(2 * size, wanted))
    joined = _joined(rounds, offsets, coef_all, status, full_passes)
    return _batch(joined) if batched else joined


def _single(result: FitResult) -> FitResult:
    """A batched result of one run (a 2-D y or a sequence of one alpha, as the estimators
    pass) as the unbatched one."""
    if not result.batched:
        return result
    h = result.history
    history = None if h is None else dataclasses.replace(
        h, **{name: getattr(h, name)[0] for name in _TRACES if getattr(h, name) is not None})
    intercept = result.intercept[0]
    return dataclasses.replace(
        result, coef=result.coef[0], intercept=float(intercept) if np.ndim(intercept) == 0
        else intercept, n_iter=int(result.n_iter[0]),
        status=str(result.status[0]), loss=float(result.loss[0]), rules=result.rules[0],
        history=history, passes=int(result.passes[0]))


def _batch(result: FitResult) -> FitResult:
    """The batched form (a leading axis of one run) of an unbatched result."""
    h = result.history
    history = None if h is None else dataclasses.replace(
        h, **{name: getattr(h, name)[None] for name in _TRACES if getattr(h, name) is not None})
    return dataclasses.replace(
        result, coef=result.coef[None], intercept=np.asarray(result.intercept)[None],
        n_iter=np.array([result.n_iter]), status=np.array([result.status]),
        loss=np.array([result.loss]), rules=(result.rules,), history=history,
        passes=np.array([result.passes]))


_TRACES = ("loss", "grad_norm", "step_norm", "lr", "distance", "passes")


def _joined(rounds: list[FitResult], offsets: list[int], coef: np.ndarray, status: str,
            full_passes: int) -> FitResult:
    """One FitResult of the rounds: the last round's weights spread over every feature, the
    histories joined, the iterations and passes summed."""
    from .api import FitResult, History  # api calls this module: imported once it is loaded

    last = rounds[-1]
    history = None
    if last.history is not None:
        parts = [(r.history, offset, 0 if i == 0 else 1)
                 for i, (r, offset) in enumerate(zip(rounds, offsets))]

        def join(name: str, shift: bool = False) -> np.ndarray:
            return np.concatenate([getattr(h, name)[skip:] + (offset if shift else 0)
                                   for h, offset, skip in parts])

        history = History(loss=join("loss"), grad_norm=join("grad_norm"),
                          step_norm=join("step_norm"), lr=join("lr"), distance=None,
                          passes=join("passes", shift=True))
    passes = sum(int(r.passes) for r in rounds) + full_passes
    return FitResult(coef=coef, intercept=last.intercept,
                     n_iter=sum(int(r.n_iter) for r in rounds), status=status, loss=last.loss,
                     rules=last.rules, history=history, backend=last.backend,
                     classes=last.classes, state=None, passes=passes)
