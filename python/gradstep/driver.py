"""Drivers: the fit loop over an oracle (see ``gradstep.oracle`` for the oracle contract).

A driver owns everything but the data: step rules, schedules, line searches, stopping,
divergence and history. The kinds:

- ``ReferenceDriver``: the specification, in NumPy, on ANY oracle. Full batch, it advances all
  K runs in *rounds*: in each round every first-order run takes its step and every curvature run
  (rules.curvature) states its next request; then ONE ``loss_grad`` pass answers every gradient
  request and ONE ``hessp`` pass every Hessian product, so line-search trials of different runs
  share the passes. Mini-batch, it walks the seeded shuffled order, one step per batch.
- ``CompiledDriver``: the C++ or Numba loop (``module.run``) for first-order rules on an
  in-memory oracle (dense, or CSR with a proven structure); it follows the reference step for
  step (to ~1e-15).
- ``CompiledCurvatureDriver``: the C++ loops (``module.curvature_run``: lbfgs_loop.hpp,
  backtrack_loop.hpp) for ONE lbfgs, armijo, bb or newton run on an in-memory oracle of the C++
  backend (dense or CSR, binary or multinomial; lbfgs with an L1 term OWL-QN, armijo proximal
  steps): the reference's rounds for that run, line search included, without Python in
  between; it follows the reference iteration for iteration, to rounding.
- ``SplitDriver``: on a small X, the runs of a fit split by the driver each would get alone
  (the compiled loop's first-order runs together, each curvature run in its compiled loop, the
  rest in the reference rounds), the C++ groups side by side on the fit's threads, one kernel
  thread each: a pass costs less than the Python round around it.

``make_driver`` picks the compiled one when it can. Both advance a ``FitState`` in place and
stop when asked (``run(n)`` does n rounds or iterations), so the caller can report progress and
honour Ctrl-C between calls.

An L1 term (``spec.l1`` > 0 for some run: gs.fit's l1_ratio, ``spec.penalized`` the columns it
covers) runs on any of them but the Numba loop (CompiledDriver's C++ loop, module.RUN_TAKES_L1),
each with the reference driver's conventions. The oracle's loss
and gradient stay the smooth part's (its alpha is the L2 part); the driver adds l1 ||w||_1
over the coefficient columns (penalty.penalized_columns) to every loss it records, so
``state.loss`` and the history hold the objective, and it tests convergence and records the
gradient norm on the minimum-norm subgradient (penalty.l1_residual), which vanishes at the
optimum. ``state.grad`` keeps the smooth gradient: the rules step from it. First-order rules
take a proximal step after each update (soft-thresholding by the rule's ``step_scale`` * l1);
the curvature rules that support L1 get l1 and the mask when started.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
from typing import Any

import numpy as np

from ._backends.state import (
    CONVERGED,
    DIVERGED,
    DIVERGENCE_WEIGHT_NORM,
    H_DISTANCE,
    H_GRAD_NORM,
    H_LOSS,
    H_LR,
    H_PASSES,
    H_STEP_NORM,
    MAX_ITER,
    N_ITER_NO_CHANGE,
    RUNNING,
    STALLED,
    FitState,
    RunSpec,
    divergence_limit,
    shuffle_order,
)
from ._validate import cpu_count
from .oracle import DenseOracle
from .penalty import l1_norms, l1_residual, penalized_columns, soft_threshold
from .rules import BB, LBFGS, Armijo, Newton, StepRule
from .rules.curvature import Grad, HessP, LBFGSRuns, Stall, Step

# A run whose line search cannot move is "converged" when its gradient is within this factor of
# tol (the optimum is reached to machine precision), else "stalled".
STALL_TOL_FACTOR = 1e3

# lbfgs runs (without L1) of one rule run together (rules.curvature.LBFGSRuns) when there are at
# least this many: a round of the batch costs a fixed ~60 NumPy calls whatever its size, a
# generator's iteration ~15 per run (measured on breast cancer: 160 us per iteration alone,
# ~600 us per round batched, before the two-loop recursion was compiled for both), so fewer runs
# go one generator each. With it, GDClassifierCV's 50 runs there (tol 1e-4, 1 thread) took
# 101 ms batched and 260 ms one generator each.
MIN_BATCH = 4


def _finite(*arrays) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)


def _norm(v: np.ndarray) -> float:
    """np.linalg.norm of a real vector, as it computes it (sqrt(v.dot(v))), without its
    argument checks: the full-batch loop takes several per run and round."""
    return math.sqrt(v.dot(v))


def _weights_diverged(p: np.ndarray) -> bool:
    """Weights that are not finite or whose norm exceeds DIVERGENCE_WEIGHT_NORM (state.py).
    One dot product decides both: p.p is NaN or inf whenever p is not finite (a sum of
    squares), and a finite p whose p.p overflows has a norm far above the limit."""
    return not math.sqrt(p.dot(p)) <= DIVERGENCE_WEIGHT_NORM


def init_state(oracle: Any, spec: RunSpec, state: FitState) -> None:
    """History entry 0 and the loss and gradient at the starting point (one pass)."""
    n_runs, D = state.P.shape
    loss, grad = oracle.loss_grad(state.P, np.ones(n_runs, np.uint8))
    grad = np.array(grad, dtype=np.float64)
    if not spec.fit_intercept:
        grad[:, D - 1] = 0.0
    l1 = spec.l1_strengths(n_runs)
    residual = grad
    if l1.any():  # the objective and its minimum-norm subgradient (module docstring)
        mask = penalized_columns(oracle, D)
        loss = loss + l1 * l1_norms(state.P, mask)
        residual = np.array([l1_residual(state.P[k], grad[k], l1[k], mask)
                             for k in range(n_runs)])
    state.loss[:] = loss
    state.start_loss[:] = loss  # the divergence test's scale (state.divergence_limit)
    state.grad[:] = grad
    if spec.record_history:
        state.history[:, :, 0] = 0.0
        state.history[H_LOSS, :, 0] = loss
        state.history[H_GRAD_NORM, :, 0] = np.linalg.norm(residual, axis=1)
        state.history[H_PASSES, :, 0] = 1.0
        state.history[H_DISTANCE, :, 0] = (
            np.linalg.norm(state.P - state.reference, axis=1) if spec.has_reference else np.nan
        )
    if spec.batch_size:  # the starting loss is the first to improve on: 5 epochs without
        state.best_loss[:] = loss  # an improvement by tol stop a run at n_iter == 5
    else:
        state.status[np.abs(residual).max(axis=1) <= spec.tol] = CONVERGED


class ReferenceDriver:
    """The NumPy fit loop on any oracle (the specification of the compiled drivers)."""

    def __init__(self, oracle: Any, spec: RunSpec, rules: list[StepRule], state: FitState):
        self.oracle, self.spec, self.rules, self.state = oracle, spec, rules, state
        n_runs = state.P.shape[0]
        self.passes = np.ones(n_runs)  # init_state's pass
        self._iterations: dict[int, Any] = {}  # curvature runs: their generators ...
        self._pending: dict[int, Any] = {}  # ... and the request each is waiting on
        self._mean_weight: np.ndarray | None = None
        if hasattr(oracle, "mean_weight"):
            self._mean_weight = np.asarray(oracle.mean_weight(n_runs), dtype=np.float64)
        self.l1 = spec.l1_strengths(n_runs)
        self.penalized = penalized_columns(oracle, state.P.shape[1])
        # lbfgs runs without an L1 term: one LBFGSRuns per rule, made at the first round
        self._batches: list[LBFGSRuns] | None = None
        self._batched = np.zeros(n_runs, dtype=bool)

    def run(self, n_steps: int) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected, not warned
            for _ in range(n_steps):
                if not (self.state.status == RUNNING).any():
                    return
                if self.spec.batch_size:
                    self._epoch()
                else:
                    self._round()

    # ---- bookkeeping shared by both loops ----------------------------------------------------
    def _lr_at(self, k: int, t: int) -> float:
        rule = self.rules[k]
        return rule.schedule.value(float(rule.lr), t, self.spec.total_updates)

    def _record(self, k, loss, grad_norm, step_norm, lr) -> None:
        spec, st = self.spec, self.state
        if not spec.record_history:
            return
        i = st.n_iter[k]
        h = st.history
        h[H_LOSS, k, i] = loss
        h[H_GRAD_NORM, k, i] = grad_norm
        h[H_STEP_NORM, k, i] = step_norm
        h[H_LR, k, i] = lr
        h[H_PASSES, k, i] = self.passes[k]
        if spec.has_reference:
            h[H_DISTANCE, k, i] = np.linalg.norm(st.P[k] - st.reference[k])

    # ---- the L1 term (module docstring); a run with l1 == 0 never reaches these -------------
    def _objective(self, k: int, loss: float, p: np.ndarray) -> float:
        """Run k's objective from its smooth loss at p."""
        if self.l1[k] == 0.0:
            return loss
        return loss + self.l1[k] * float(np.abs(p[self.penalized]).sum())

    def _residual(self, k: int, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """What run k's stopping test and history see: g, or with L1 the minimum-norm
        subgradient at p."""
        if self.l1[k] == 0.0:
            return g
        return l1_residual(p, g, self.l1[k], self.penalized)

    def _step(self, k: int, p: np.ndarray, g: np.ndarray, lr_t: float) -> None:
        """Run k's first-order update in place on p, then its proximal L1 step."""
        st, rule = self.state, self.rules[k]
        t = int(st.t[k])
        if self.l1[k] == 0.0:
            rule.update(p, g, st.slots[k], lr_t, t)
            return
        scale = rule.step_scale(g, st.slots[k], lr_t, t)  # before update advances the slots
        rule.update(p, g, st.slots[k], lr_t, t)
        soft_threshold(p, scale * self.l1[k], self.penalized)

    def _stop_test(self, k: int, residual: np.ndarray | None = None) -> None:
        """Converged or out of iterations; residual: run k's, when the caller has it."""
        st = self.state
        if residual is None:
            residual = self._residual(k, st.P[k], st.grad[k])
        if np.abs(residual).max() <= self.spec.tol:
            st.status[k] = CONVERGED
        elif st.n_iter[k] >= self.spec.max_iter:
            st.status[k] = MAX_ITER

    def _loss_diverged(self, k: int, loss: float) -> bool:
        """A finite loss above run k's divergence limit (state.divergence_limit)."""
        return bool(loss > divergence_limit(self.state.start_loss[k]))

    def _zero_intercept(self, A: np.ndarray) -> np.ndarray:
        A = np.array(A, dtype=np.float64)
        if not self.spec.fit_intercept:
            A[:, -1] = 0.0
        return A

    # ---- full batch --------------------------------------------------------------------------
    def _make_batches(self, running: list[int]) -> None:
        """LBFGSRuns for the running lbfgs runs without an L1 term, one per rule value."""
        st = self.state
        groups: dict[Any, list[int]] = {}
        for k in running:
            rule = self.rules[k]
            if isinstance(rule, LBFGS) and self.l1[k] == 0.0 and not self.spec.batch_size:
                groups.setdefault(rule, []).append(k)
        self._batches = []
        for rule, runs in groups.items():
            if len(runs) < MIN_BATCH:  # a generator per run costs less (see MIN_BATCH)
                continue
            self._batches.append(LBFGSRuns(rule, runs, st.P[runs], st.loss[runs],
                                           st.grad[runs]))
            self._batched[runs] = True

    def _round(self) -> None:
        st = self.state
        n_runs = st.P.shape[0]
        # a list comprehension: np.flatnonzero(...).tolist() cost ~10 us a round, a small fit's
        # iteration being ~200 us
        running = [k for k, status in enumerate(st.status.tolist()) if status == RUNNING]
        if self._batches is None:
            self._make_batches(running)
        batched = self._batched
        first_order = [k for k in running if self.rules[k].compiled]
        for k in running:
            if (not self.rules[k].compiled and k not in self._iterations
                    and not batched[k]):
                self._start(k)
        batches = []  # (LBFGSRuns, its runs asking, their points)
        for b in self._batches or ():
            stopped = st.status[b.runs] != RUNNING  # stopped between calls (monitor, report)
            if stopped.any():
                b.drop(stopped)
            if not len(b):
                continue
            runs_b, points_b, stalls = b.requests()
            self._stall_runs(b, stalls)
            batches.append((b, runs_b, points_b))
        self._batches = [b for b in self._batches or () if len(b)]
        # a curvature run may have stopped at its start (a Stall before any request)
        pending = self._pending
        curvature = [k for k in running if k in pending]

        P_old = st.P.copy() if first_order else st.P  # read only for first-order runs
        lr_used = np.zeros(n_runs)
        for k in first_order:
            st.t[k] += 1
            lr_used[k] = self._lr_at(k, int(st.t[k]))
            self._step(k, st.P[k], st.grad[k], lr_used[k])

        grad_asks = [k for k in curvature if isinstance(pending[k], Grad)]
        grad_runs = first_order + grad_asks
        hess_runs = [k for k in curvature if isinstance(pending[k], HessP)]
        answers: dict[int, Any] = {}
        batch_asks = [x for x in batches if x[1].size]
        if grad_runs or batch_asks:
            at = st.P.copy()
            for k in grad_asks:
                at[k] = pending[k].p
            active = np.zeros(n_runs, np.uint8)
            active[grad_runs] = 1
            for _, runs_b, points_b in batch_asks:
                at[runs_b] = points_b
                active[runs_b] = 1
            loss, grad = self.oracle.loss_grad(at, active)
            # _zero_intercept's copy is this round's own: its rows go to the runs as they are
            # (a rule never writes into a gradient it is given; the state copies them in)
            grad = self._zero_intercept(grad)
            loss = np.asarray(loss, dtype=np.float64)
            losses = loss.tolist()
            passes = self.passes
            for k in grad_runs:
                answers[k] = (losses[k], grad[k])
                passes[k] += 1
            for b, runs_b, _ in batch_asks:
                passes[runs_b] += 1
                rows, t, stalls = b.receive(loss[runs_b], grad[runs_b])
                self._batch_steps(b, rows, t)
                self._stall_runs(b, stalls)
            for b, _, _ in batches:
                stopped = st.status[b.runs] != RUNNING
                if stopped.any():
                    b.drop(stopped)
            self._batches = [b for b in self._batches if len(b)]
        if hess_runs:
            at, vec = np.zeros_like(st.P), np.zeros_like(st.P)
            for k in hess_runs:
                at[k], vec[k] = self._pending[k].p, self._pending[k].v
            vec = self._zero_intercept(vec)
            active = np.zeros(n_runs, np.uint8)
            active[hess_runs] = 1
            hv = self._zero_intercept(self.oracle.hessp(at, vec, active))
            for k in hess_runs:
                answers[k] = hv[k].copy()
                self.passes[k] += 1

        for k in first_order:
            loss_k, g = answers[k]
            loss_k = self._objective(k, loss_k, st.P[k])
            if (_weights_diverged(st.P[k]) or not _finite(loss_k, g)
                    or self._loss_diverged(k, loss_k)):
                st.P[k] = P_old[k]  # keep the last good weights
                st.status[k] = DIVERGED
                continue
            st.loss[k] = loss_k
            st.grad[k] = g
            st.n_iter[k] += 1
            step_norm = np.linalg.norm(st.P[k] - P_old[k])
            self._record(k, loss_k, np.linalg.norm(self._residual(k, st.P[k], g)), step_norm,
                         lr_used[k])
            self._stop_test(k)
        for k in curvature:
            self._resume(k, answers[k])

    def _batch_steps(self, b: LBFGSRuns, rows: np.ndarray, t: np.ndarray) -> None:
        """_handle's bookkeeping of a Step, for the rows of b that completed an iteration (no
        L1 term: the loss is the objective and the gradient the residual)."""
        if not rows.size:
            return
        st, spec = self.state, self.spec
        if rows.size == len(b):  # every row, in order (rows is arange then)
            runs, P, loss, G = b.runs, b.p, b.loss, b.g
        else:
            runs, P, loss, G = b.runs[rows], b.p[rows], b.loss[rows], b.g[rows]
        with np.errstate(over="ignore", invalid="ignore"):
            good = ((np.einsum("ij,ij->i", P, P) <= DIVERGENCE_WEIGHT_NORM**2)
                    & (loss <= divergence_limit(st.start_loss[runs])))  # False for NaN
            good &= np.isfinite(G).all(axis=1)
        if not good.all():  # st.P keeps the last good weights
            st.status[runs[~good]] = DIVERGED
            runs, P, loss, G, t = runs[good], P[good], loss[good], G[good], t[good]
        if spec.record_history:  # the step's norm, before st.P moves on
            step = P - st.P[runs]
            step_norm = np.sqrt(np.einsum("ij,ij->i", step, step))
        st.P[runs] = P
        st.loss[runs] = loss
        st.grad[runs] = G
        n_iter = st.n_iter[runs] + 1
        st.n_iter[runs] = n_iter
        st.t[runs] += 1
        if spec.record_history:
            h = st.history
            h[H_LOSS, runs, n_iter] = loss
            h[H_GRAD_NORM, runs, n_iter] = np.sqrt(np.einsum("ij,ij->i", G, G))
            h[H_STEP_NORM, runs, n_iter] = step_norm
            h[H_LR, runs, n_iter] = t
            h[H_PASSES, runs, n_iter] = self.passes[runs]
            if spec.has_reference:
                h[H_DISTANCE, runs, n_iter] = np.linalg.norm(P - st.reference[runs], axis=1)
        converged = np.abs(G).max(axis=1) <= spec.tol
        st.status[runs[converged]] = CONVERGED
        st.status[runs[~converged & (n_iter >= spec.max_iter)]] = MAX_ITER

    def _stall_runs(self, b: LBFGSRuns, runs: list[int]) -> None:
        """_handle's bookkeeping of a Stall, for runs of b."""
        st = self.state
        for k in runs:
            close_enough = np.max(np.abs(st.grad[k])) <= STALL_TOL_FACTOR * self.spec.tol
            st.status[k] = CONVERGED if close_enough else STALLED

    def _start(self, k: int) -> None:
        st = self.state
        if self.l1[k] == 0.0:
            gen = self.rules[k].iterate(st.P[k].copy(), float(st.loss[k]), st.grad[k].copy())
        else:  # the generator works on the smooth loss (st.loss holds the objective)
            p = st.P[k].copy()
            smooth = float(st.loss[k]) - self.l1[k] * float(np.abs(p[self.penalized]).sum())
            gen = self.rules[k].iterate(p, smooth, st.grad[k].copy(),  # type: ignore[call-arg]
                                        l1=float(self.l1[k]), penalized=self.penalized)
        self._iterations[k] = gen
        self._handle(k, next(gen))

    def _resume(self, k: int, answer: Any) -> None:
        self._handle(k, self._iterations[k].send(answer))

    def _handle(self, k: int, event: Any) -> None:
        """Consume iteration events until the run's next request (or its end)."""
        st = self.state
        gen = self._iterations[k]
        while isinstance(event, (Step, Stall)):
            if isinstance(event, Stall):
                residual = self._residual(k, st.P[k], st.grad[k])
                close_enough = np.max(np.abs(residual)) <= STALL_TOL_FACTOR * self.spec.tol
                st.status[k] = CONVERGED if close_enough else STALLED
            else:
                loss = self._objective(k, event.loss, event.p)
                if (_weights_diverged(event.p) or not math.isfinite(loss)
                        or not np.isfinite(event.g).all() or self._loss_diverged(k, loss)):
                    st.status[k] = DIVERGED  # st.P[k] still holds the last good weights
                else:
                    step_norm = _norm(event.p - st.P[k])
                    st.P[k] = event.p
                    st.loss[k] = loss
                    st.grad[k] = event.g
                    st.n_iter[k] += 1
                    st.t[k] += 1
                    residual = self._residual(k, event.p, event.g)
                    self._record(k, loss, _norm(residual), step_norm, event.t)
                    self._stop_test(k, residual)
            if st.status[k] != RUNNING:
                gen.close()
                self._pending.pop(k, None)
                return
            event = next(gen)
        self._pending[k] = event

    # ---- mini-batch --------------------------------------------------------------------------
    def _epoch(self) -> None:
        st, spec, oracle = self.state, self.spec, self.oracle
        n = oracle.n_samples
        n_runs = st.P.shape[0]
        P_prev = st.P.copy()  # weights before each run's latest step: kept on divergence
        order = shuffle_order(n, spec.seed, int(st.epoch[0]), spec.shuffle_blocks)
        st.epoch[0] += 1
        in_epoch = st.status == RUNNING
        P_start = st.P.copy()
        loss_sum = np.zeros(n_runs)
        grad_norm_sum = np.zeros(n_runs)
        lr_used = np.zeros(n_runs)
        for start in range(0, n, spec.batch_size):
            rows = order[start : start + spec.batch_size]
            # With sample weights a batch's sums are divided by its expected weight,
            # m * mean(s), not by its own weight: the batch gradient is then an unbiased
            # estimate of the full gradient, and a batch of light rows takes a light step.
            denominator = None if self._mean_weight is None else rows.size * self._mean_weight
            loss, grad = oracle.loss_grad(st.P, in_epoch.astype(np.uint8), rows, denominator)
            grad = self._zero_intercept(grad)
            for k in map(int, np.flatnonzero(in_epoch)):
                if not _finite(loss[k], grad[k]) or self._loss_diverged(k, loss[k]):
                    st.P[k] = P_prev[k]
                    st.status[k] = DIVERGED
                    in_epoch[k] = False
                    continue
                batch_loss = self._objective(k, float(loss[k]), st.P[k])
                loss_sum[k] += rows.size * batch_loss
                grad_norm_sum[k] += rows.size * np.linalg.norm(
                    self._residual(k, st.P[k], grad[k]))
                st.t[k] += 1
                lr_used[k] = self._lr_at(k, int(st.t[k]))
                P_prev[k] = st.P[k]
                self._step(k, st.P[k], grad[k], lr_used[k])
                if _weights_diverged(st.P[k]):
                    st.P[k] = P_prev[k]
                    st.status[k] = DIVERGED
                    in_epoch[k] = False
        for k in map(int, np.flatnonzero(in_epoch)):
            self.passes[k] += 1
            epoch_loss = loss_sum[k] / n
            st.loss[k] = epoch_loss
            st.n_iter[k] += 1
            step_norm = np.linalg.norm(st.P[k] - P_start[k])
            self._record(k, epoch_loss, grad_norm_sum[k] / n, step_norm, lr_used[k])
            # scikit-learn's n_iter_no_change rule on the epoch loss
            if epoch_loss > st.best_loss[k] - spec.tol:
                st.no_improve[k] += 1
            else:
                st.no_improve[k] = 0
            st.best_loss[k] = min(st.best_loss[k], epoch_loss)
            if st.no_improve[k] >= N_ITER_NO_CHANGE:
                st.status[k] = CONVERGED
            elif st.n_iter[k] >= spec.max_iter:
                st.status[k] = MAX_ITER


class CompiledDriver:
    """The C++ or Numba fit loop for first-order rules on an in-memory dense oracle, or the C++
    one on a CSR oracle (``sparse_cpp.run``)."""

    def __init__(self, oracle: DenseOracle, spec: RunSpec, state: FitState):
        self.oracle, self.spec, self.state = oracle, spec, state

    def run(self, n_steps: int) -> None:
        o, st = self.oracle, self.state
        self.spec.alpha = o.alphas(st.P.shape[0])
        o.module.run(o.X, o.Y, o.SW, self.spec, st, n_steps, o.n_threads)
        if self.spec.record_history:  # a first-order iteration (or epoch) is one pass over X
            entries = np.arange(st.history.shape[2], dtype=np.float64) + 1.0
            reached = entries[None, :] <= (st.n_iter[:, None] + 1)
            st.history[H_PASSES] = np.where(reached, entries[None, :], np.nan)

    @property
    def passes(self) -> np.ndarray:
        return self.state.n_iter.astype(np.float64) + 1.0


class CompiledCurvatureDriver:
    """One lbfgs, armijo, bb or newton run (lbfgs: OWL-QN with an L1 term; armijo: proximal
    steps), full batch, on an in-memory oracle (dense or CSR) whose backend has the compiled
    loops (``module.curvature_run``: lbfgs_loop.hpp, backtrack_loop.hpp). The run's state between
    calls lives here, where the loop reads it (as ``loop``): its ``kind``, lbfgs's memory in
    _Pairs' layout and OWL-QN's next first trial (``step``), or the other rules' constants
    (``params``) and state (``reals``, ``ints``) in backtrack_loop.hpp's. ``run(n)`` does up to
    n iterations (the reference's ``run(n)``: n rounds of one pass each)."""

    def __init__(self, oracle: Any, spec: RunSpec, rule: StepRule, state: FitState):
        self.oracle, self.spec, self.state = oracle, spec, state
        self.passes = np.ones(1)  # init_state's pass
        D = state.P.shape[1]
        if isinstance(rule, LBFGS):
            self.kind, self.m, self.lr = "lbfgs", int(rule.m), float(rule.lr)
            slots = self.m + 1
            self.memory = np.zeros((2 * slots, D))  # s vectors, then y vectors
            self.rho = np.zeros(slots)
            self.gamma = np.ones(1)
            self.ints = np.array([0, 0, 1], dtype=np.int64)  # free slot, pairs kept, first
            self.step = np.array([self.lr])  # OWL-QN's next first trial (owlqn_next_trial)
            return
        window = rule.window if isinstance(rule, BB) else 1
        lr = math.nan if rule.lr is None else float(rule.lr)  # bb's NaN: its probe
        # backtrack_loop.hpp's Rule (its kind from self.kind): lr, c1, shrink, grow, variant,
        # window, cg_tol, max_cg
        if isinstance(rule, BB):
            self.kind = "bb"
            self.params = np.array([lr, rule.c1, 0.5, 1.0, _BB_VARIANTS.index(rule.variant),
                                    window, 0.1, 1.0])
        elif isinstance(rule, Newton):  # its _backtrack: c1 = 1e-4, halving
            self.kind = "newton"
            self.params = np.array([lr, 1e-4, 0.5, 1.0, 0.0, 1.0, rule.cg_tol, rule.max_cg])
        else:
            assert isinstance(rule, Armijo)
            self.kind = "armijo"
            self.params = np.array([lr, rule.c1, rule.shrink, rule.grow, 0.0, 1.0, 0.1, 1.0])
        self.reals = np.zeros(2 + window)  # t, the smooth loss, bb's last losses
        self.ints = np.zeros(4, dtype=np.int64)  # started, bb's steps, losses kept, next slot

    def run(self, n_steps: int) -> None:
        o = self.oracle
        self.spec.alpha = o.alphas(1)
        o.module.curvature_run(o, self.spec, self.state, self, int(n_steps))


# backtrack_loop.hpp's variant codes of BB.variant
_BB_VARIANTS = ("long", "short", "alternate")
# the rules with a compiled loop of their own (CompiledCurvatureDriver); exactly these classes:
# a subclass may change what iterate does
_COMPILED_CURVATURE = (LBFGS, Armijo, BB, Newton)


class SplitDriver:
    """The runs of a fit on a small in-memory X split by the driver that would run them alone,
    each group advanced by its own driver over its rows of the state: the first-order runs with
    a compiled version together in the compiled loop (CompiledDriver), each lbfgs, armijo, bb or
    newton run in its compiled loop (CompiledCurvatureDriver), the rest (rules or oracles
    without a compiled loop) together in the reference driver's rounds. The C++ groups run side
    by side on the fit's threads, one kernel thread each (_run_side_by_side; the same bits as one
    after another), the others after them. On a small X a
    pass costs less than the Python round around it, so sharing passes buys nothing:
    GDClassifierCV(l1_ratio=1) on breast cancer ran 8,962 rounds, 15 s under the profiler, 1.5 s
    of them in the kernel; GDClassifierCV()'s 50 lbfgs runs there took LBFGSRuns' ~0.4 ms per
    round (268 rounds). On a larger X one pass shared by the runs costs less than their passes
    one group at a time, and the rounds stay (SPLIT_MAX_WORK)."""

    def __init__(self, oracle: Any, spec: RunSpec, rules: list[StepRule], state: FitState,
                 groups: list[np.ndarray]):
        self.state = state
        n_runs = len(rules)
        l1 = spec.l1_strengths(n_runs)
        self.groups: list[tuple[Any, Any, FitState]] = []
        taken: dict = {}  # _oracle_rows' cuts of the oracle's arrays, shared by the groups
        for runs in groups:
            rows = _rows_of(runs)
            group_spec = dataclasses.replace(
                spec, rule_code=spec.rule_code[rows], sched_code=spec.sched_code[rows],
                hyper=spec.hyper[rows], alpha=spec.alpha[rows],
                l1=l1[rows].copy() if spec.l1.size else spec.l1)
            group_state = _state_rows(state, rows)
            driver = make_driver(_oracle_rows(oracle, rows, n_runs, taken), group_spec,
                                 [rules[k] for k in runs], group_state)
            self.groups.append((rows, driver, group_state))
        self.threads = int(getattr(oracle, "n_threads", None) or cpu_count())

    def run(self, n_steps: int) -> None:
        st = self.state
        history = st.history.shape[2] > 0
        running = [group for group in self.groups if (st.status[group[0]] == RUNNING).any()]
        for rows, _, group_state in running:
            # the caller may have stopped runs (status) or grown the history (api._drive)
            if not isinstance(rows, slice):  # the group's rows of the state are copies
                group_state.status[:] = st.status[rows]
            if history:
                group_state.history = np.ascontiguousarray(st.history[:, rows])
        side = [driver for _, driver, _ in running if _side_by_side(driver)]
        rest = [driver for _, driver, _ in running if not _side_by_side(driver)]
        workers = min(self.threads, len(side))
        for driver in side:  # one thread each where they run side by side, else every thread
            driver.oracle.n_threads = 1 if workers > 1 else self.threads
        if workers > 1:
            _run_side_by_side(side, n_steps, workers)
        else:
            rest = side + rest
        for driver in rest:
            driver.run(n_steps)
        for rows, _, group_state in running:
            if history:
                st.history[:, rows] = group_state.history
            if not isinstance(rows, slice):
                for name in _PER_RUN_FIELDS:
                    getattr(st, name)[rows] = getattr(group_state, name)

    @property
    def passes(self) -> np.ndarray:
        out = np.zeros(self.state.P.shape[0])
        for rows, driver, _ in self.groups:
            out[rows] = driver.passes
        return out


# the FitState fields with a row per run (not the shared shuffle counter; the history's run axis
# is its second)
_PER_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(FitState)
                        if f.name not in ("epoch", "history"))


def _run_side_by_side(drivers: list[Any], n_steps: int, workers: int) -> None:
    """driver.run(n_steps) for each driver on `workers` threads, each thread taking the next
    driver not yet taken; those that took the most passes so far first, so that a long run does
    not start last (a CV path's largest Cs take 10-30 x the passes of its smallest). Threads of
    this call only: a pool kept between calls would not survive a fork. After a driver raises
    (an error, or Ctrl-C in the calling thread) no thread starts another; the first error is
    raised in the calling thread once the drivers already running have returned."""
    order = iter(sorted(drivers, key=lambda driver: -float(np.sum(driver.passes))))
    errors: list[BaseException] = []
    failed = threading.Event()

    def work() -> None:
        for driver in order:  # next() on a shared iterator: each driver taken once
            if failed.is_set():
                return
            try:
                driver.run(n_steps)
            except BaseException as error:  # raised again in the calling thread
                errors.append(error)
                failed.set()
                return

    threads = [threading.Thread(target=work) for _ in range(workers - 1)]
    for thread in threads:
        thread.start()
    work()  # the calling thread is one of the workers
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _side_by_side(driver: Any) -> bool:
    """Whether SplitDriver may run this group's driver on a thread of its own, beside the
    others: a compiled loop (one call per run() that holds no GIL) of a backend whose calls on one
    thread share no state with other calls (``SIDE_BY_SIDE``: the C++ ones; Numba's parallel
    functions must not be entered from two threads at once)."""
    return (isinstance(driver, (CompiledDriver, CompiledCurvatureDriver))
            and getattr(driver.oracle.module, "SIDE_BY_SIDE", False))


def _rows_of(runs: np.ndarray) -> Any:
    """A slice for adjacent run indices (the state's rows are then views), else the indices."""
    if runs.size and np.array_equal(runs, np.arange(runs[0], runs[0] + runs.size)):
        return slice(int(runs[0]), int(runs[0]) + runs.size)
    return runs


def _state_rows(state: FitState, rows: Any) -> FitState:
    """The given runs' rows of the state as a FitState: views for a slice (copies for
    indices), except the shared shuffle counter and the history (its run axis is not the
    first), which SplitDriver.run copies in and out."""
    part = {name: getattr(state, name)[rows] for name in _PER_RUN_FIELDS}
    return FitState(**part, epoch=state.epoch,
                    history=np.ascontiguousarray(state.history[:, rows]))


def _oracle_rows(oracle: Any, rows: Any, n_runs: int, taken: dict | None = None) -> Any:
    """The oracle of the given runs: a shallow copy with their target and weight columns where
    it has one per run, and their alphas; without the samples that weigh 0 in every one of
    those runs (cross-validation folds: a fold's held-out rows), which add nothing to the loss
    or gradient but their pass's time (their sums then take other blocks: rounding). `taken`
    keeps the oracle's own arrays (X, shared targets) cut to a set of samples, for the next
    group with the same set (a CV fold's runs: one copy of X per fold, not per run)."""
    taken = {} if taken is None else taken
    part = copy.copy(oracle)
    for name in ("Y", "SW"):
        A = getattr(oracle, name, None)
        if A is not None and A.ndim == 2 and A.shape[1] > 1:
            setattr(part, name, np.ascontiguousarray(A[:, rows]))
    part.alpha = np.array(oracle.alphas(n_runs)[rows], dtype=np.float64)
    SW = getattr(part, "SW", None)
    if SW is not None and SW.ndim == 2 and SW.shape[1] > 0:
        kept = np.flatnonzero(SW.max(axis=1) > 0.0)
        if 0 < kept.size < SW.shape[0]:
            for name in ("X", "Y", "labels", "SW"):
                A = getattr(part, name, None)
                if A is None or A.shape[0] != SW.shape[0]:
                    continue
                # the oracle's own array (not a column cut for these runs): the same for every
                # group, so its cut to the same samples is too
                key = (name, kept.tobytes()) if A is getattr(oracle, name, None) else None
                cut = taken.get(key) if key else None
                if cut is None:
                    cut = A[kept] if hasattr(A, "indptr") else A.take(kept, 0)  # CSR: by index
                    if key:
                        taken[key] = cut
                setattr(part, name, cut)
            part.n_samples = int(kept.size)
    return part


# X with at most this many entries (nonzeros, or n d): the runs of a fit split into groups
# (SplitDriver). GDClassifierCV (50 lbfgs runs), 1 thread, Zen 3, rounds -> one after another:
# breast cancer (13,650 entries) 101-105 -> 51-54 ms; digits (115,008, 10 classes) 727 ->
# 509 ms; synthetic 5,000 x 100 (500,000) 0.07 -> 0.09 s, 10,000 x 100 0.10 -> 0.16 s,
# 100,000 x 100 1.04 -> 2.25 s.
SPLIT_MAX_WORK = 1 << 18


def _in_memory(oracle: Any) -> bool:
    """An in-memory X: dense, or CSR whose structure the first pass proved (the compiled loops
    check no row)."""
    X = getattr(oracle, "X", None)
    return isinstance(X, np.ndarray) or (
        hasattr(X, "indptr") and getattr(oracle, "structure_proven", False))


def _has_compiled_curvature(oracle: Any) -> bool:
    """An in-memory X and a backend module with the compiled curvature loops (the C++ one)."""
    return _in_memory(oracle) and hasattr(getattr(oracle, "module", None), "curvature_run")


def _compiled_loop(oracle: Any, spec: RunSpec, rules: list[StepRule]) -> bool:
    """Whether CompiledDriver runs this fit: every rule has a compiled version, the oracle is
    an in-memory one whose backend has a compiled loop, and (with an L1 term) that loop takes
    proximal steps."""
    return (isinstance(oracle, DenseOracle) and hasattr(oracle.module, "run")
            and getattr(oracle, "structure_proven", True)  # CSR: its loop checks no row
            and all(r.compiled for r in rules)
            # proximal steps: the C++ loops only (RUN_TAKES_L1), not Numba's
            and (not spec.l1_strengths(len(rules)).any()
                 or getattr(oracle.module, "RUN_TAKES_L1", False)))


def _compiled_curvature(oracle: Any, spec: RunSpec, rules: list[StepRule]) -> bool:
    """Whether CompiledCurvatureDriver runs this fit: one curvature run, full batch,
    on an oracle with the compiled loops (_has_compiled_curvature)."""
    return (len(rules) == 1 and type(rules[0]) in _COMPILED_CURVATURE and not spec.batch_size
            and _has_compiled_curvature(oracle))


def _split(oracle: Any, spec: RunSpec, rules: list[StepRule]) -> list[np.ndarray] | None:
    """SplitDriver's groups for this fit, or None where it does not run it: full batch on a
    small in-memory X (SPLIT_MAX_WORK) whose runs would not all go to one driver anyway
    (several lbfgs runs, or runs for different drivers)."""
    if len(rules) < 2 or spec.batch_size or not _in_memory(oracle):
        return None
    X = oracle.X
    if (X.nnz if hasattr(X, "indptr") else X.size) > SPLIT_MAX_WORK:
        return None
    l1 = spec.l1_strengths(len(rules))
    alone: list[list[int]] = []  # each curvature run: its compiled loop
    loop: list[int] = []  # first-order runs of the compiled loop
    reference: list[int] = []
    for k, rule in enumerate(rules):
        run_spec = dataclasses.replace(spec, l1=l1[k:k + 1])
        if _compiled_curvature(oracle, run_spec, [rule]):
            alone.append([k])
        elif _compiled_loop(oracle, run_spec, [rule]):
            loop.append(k)
        else:
            reference.append(k)
    groups = [np.array(g, dtype=np.int64) for g in (*alone, loop, reference) if g]
    return groups if len(groups) > 1 else None


def make_driver(oracle: Any, spec: RunSpec, rules: list[StepRule], state: FitState) -> Any:
    """The compiled driver when every rule has a compiled version, the oracle is an
    in-memory one (dense, or CSR whose structure the first pass proved) whose backend has a
    compiled loop, and (with an L1 term) that loop takes proximal steps; the compiled curvature
    loop of a single lbfgs, armijo, bb or newton run on such an oracle; on a small X, the runs
    split by the driver each would get alone (SplitDriver); else the reference driver (over the
    same compiled loss_grad kernels)."""
    if _compiled_loop(oracle, spec, rules):
        return CompiledDriver(oracle, spec, state)
    if _compiled_curvature(oracle, spec, rules):
        return CompiledCurvatureDriver(oracle, spec, rules[0], state)
    groups = _split(oracle, spec, rules)
    if groups:
        return SplitDriver(oracle, spec, rules, state, groups)
    return ReferenceDriver(oracle, spec, rules, state)
