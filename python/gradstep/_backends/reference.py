"""Plain NumPy: the executable specification of every backend.

Each formula of DESIGN.md is written here once, literally, for readability rather than speed.
The Numba and C++ backends must agree with these functions (tests/test_backends.py).
"""

from __future__ import annotations

import numpy as np

from ..rules import HYPER_A, HYPER_B, HYPER_EPS, HYPER_LR, HYPER_SCHED, schedule_value
from .state import (
    CONVERGED,
    DIVERGED,
    H_DISTANCE,
    H_GRAD_NORM,
    H_LOSS,
    H_LR,
    H_STEP_NORM,
    MAX_ITER,
    N_ITER_NO_CHANGE,
    RUNNING,
    FitState,
    RunSpec,
    shuffle_order,
)


def log1pexp_and_sigmoid(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(1 + exp(z)) and 1 / (1 + exp(-z)) without overflow, from one exp(-|z|)."""
    e = np.exp(-np.abs(z))
    log1pexp = np.maximum(z, 0.0) + np.log1p(e)
    sigmoid = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return log1pexp, sigmoid


def loss_grad(X, Y, sw, P, alpha, rows, active, n_threads=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see state.py for the contract)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run overflows: reported
        return _loss_grad(X, Y, sw, P, alpha, rows, active)


def _loss_grad(X, Y, sw, P, alpha, rows, active, denominator=0.0):
    """denominator > 0 replaces the weight of the rows used as the divisor of the sums."""
    n_runs, n_params = P.shape
    d = n_params - 1
    loss = np.zeros(n_runs)
    grad = np.zeros((n_runs, n_params))
    if rows.size:
        X, Y = X[rows], Y[rows]
        sw = sw[rows] if sw.size else sw
    s = sw if sw.size else np.ones(X.shape[0])
    total = s.sum()
    idx = np.flatnonzero(active)
    if idx.size == 0 or total == 0.0:
        return loss, grad
    if denominator > 0.0:
        total = denominator
    W, b = P[idx, :d], P[idx, d]
    Xf = X.astype(np.float64, copy=False)  # float32 X widened per element, as in the kernels
    Yk = Y if Y.shape[1] == 1 else Y[:, idx]
    Z = Xf @ W.T + b  # (m, k)
    log1pexp, sigmoid = log1pexp_and_sigmoid(Z)
    loss[idx] = (s[:, None] * (log1pexp - Yk * Z)).sum(axis=0) / total
    R = s[:, None] * (sigmoid - Yk) / total
    grad[idx, :d] = R.T @ Xf
    grad[idx, d] = R.sum(axis=0)
    if alpha != 0.0:  # with alpha == 0 the penalty is not computed at all
        loss[idx] += 0.5 * alpha * (W * W).sum(axis=1)
        grad[idx, :d] += alpha * W
    return loss, grad


def step(rule_code, hyper_row, lr_t, t, g, p, slots) -> None:
    """One update of one run, in place on p (D,) and slots (N_SLOTS, D): DESIGN.md's table."""
    a, b, eps = hyper_row[HYPER_A], hyper_row[HYPER_B], hyper_row[HYPER_EPS]
    if rule_code == 0:  # sgd
        p -= lr_t * g
    elif rule_code in (1, 2):  # momentum, nesterov
        v = slots[0]
        v[:] = a * v + g
        p -= lr_t * (g + a * v) if rule_code == 2 else lr_t * v
    elif rule_code == 3:  # normalized
        norm = np.sqrt(np.sum(g * g))
        if norm > 0.0:
            p -= lr_t * g / max(norm, eps)
    elif rule_code == 4:  # adagrad
        G = slots[0]
        G += g * g
        p -= lr_t * g / (np.sqrt(G) + eps)
    elif rule_code == 5:  # rmsprop
        v = slots[0]
        v[:] = a * v + (1.0 - a) * g * g
        p -= lr_t * g / (np.sqrt(v) + eps)
    elif rule_code == 6:  # adadelta
        E, D = slots[0], slots[1]
        E[:] = a * E + (1.0 - a) * g * g
        delta = np.sqrt(D + eps) / np.sqrt(E + eps) * g
        D[:] = a * D + (1.0 - a) * delta * delta
        p -= lr_t * delta
    elif rule_code == 7:  # adam
        m, v = slots[0], slots[1]
        m[:] = a * m + (1.0 - a) * g
        v[:] = b * v + (1.0 - b) * g * g
        m_hat = m / (1.0 - a**t)
        v_hat = v / (1.0 - b**t)
        p -= lr_t * m_hat / (np.sqrt(v_hat) + eps)
    else:
        raise ValueError(f"unknown rule code {rule_code}")


def _lr_at(spec: RunSpec, k: int, t: int) -> float:
    h = spec.hyper[k]
    return schedule_value(
        int(spec.sched_code[k]), h[HYPER_LR], h[HYPER_SCHED], t, spec.total_updates
    )


def _record(spec, state, k, loss, grad_norm, step_norm, lr) -> None:
    if not spec.record_history:
        return
    i = state.n_iter[k]
    h = state.history
    h[H_LOSS, k, i] = loss
    h[H_GRAD_NORM, k, i] = grad_norm
    h[H_STEP_NORM, k, i] = step_norm
    h[H_LR, k, i] = lr
    if spec.has_reference:
        h[H_DISTANCE, k, i] = np.linalg.norm(state.P[k] - state.reference[k])


def _finite(*arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays)


def run(X, Y, sw, spec: RunSpec, state: FitState, n_steps: int, n_threads=None) -> None:
    """Advance the running runs by up to n_steps iterations (see state.py for the contract)."""
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected, not warned
        if spec.batch_size:
            _run_minibatch(X, Y, sw, spec, state, n_steps)
        else:
            _run_full_batch(X, Y, sw, spec, state, n_steps)


def _run_full_batch(X, Y, sw, spec, state, n_steps) -> None:
    d = state.P.shape[1] - 1
    all_rows = np.empty(0, dtype=np.int64)
    for _ in range(n_steps):
        running = np.flatnonzero(state.status == RUNNING)
        if running.size == 0:
            return
        P_old = state.P.copy()
        lr_used = np.zeros(state.P.shape[0])
        for k in running:
            state.t[k] += 1
            lr_used[k] = _lr_at(spec, k, state.t[k])
            step(spec.rule_code[k], spec.hyper[k], lr_used[k], state.t[k],
                 state.grad[k], state.P[k], state.slots[k])
        active = (state.status == RUNNING).astype(np.uint8)
        loss, grad = loss_grad(X, Y, sw, state.P, spec.alpha, all_rows, active)
        if not spec.fit_intercept:
            grad[:, d] = 0.0
        for k in running:
            if not _finite(state.P[k], loss[k], grad[k]):
                state.P[k] = P_old[k]  # keep the last finite weights
                state.status[k] = DIVERGED
                continue
            state.loss[k] = loss[k]
            state.grad[k] = grad[k]
            state.n_iter[k] += 1
            step_norm = np.linalg.norm(state.P[k] - P_old[k])
            _record(spec, state, k, loss[k], np.linalg.norm(grad[k]), step_norm, lr_used[k])
            if np.max(np.abs(grad[k])) <= spec.tol:
                state.status[k] = CONVERGED
            elif state.n_iter[k] >= spec.max_iter:
                state.status[k] = MAX_ITER


def _run_minibatch(X, Y, sw, spec, state, n_steps) -> None:
    n = X.shape[0]
    d = state.P.shape[1] - 1
    P_prev = state.P.copy()  # weights before each run's latest step: kept on divergence
    # With sample weights a batch's sums are divided by its expected weight, m * mean(s), not by
    # its own weight: the batch gradient is then an unbiased estimate of the full gradient, and
    # a batch of light rows takes a light step (as in SGDClassifier). Unit weights: the same.
    mean_weight = sw.sum() / n if sw.size else 0.0
    for _ in range(n_steps):
        if not (state.status == RUNNING).any():
            return
        order = shuffle_order(n, spec.seed, int(state.epoch[0]))
        state.epoch[0] += 1
        in_epoch = state.status == RUNNING
        P_start = state.P.copy()
        loss_sum = np.zeros(state.P.shape[0])
        grad_norm_sum = np.zeros(state.P.shape[0])
        lr_used = np.zeros(state.P.shape[0])
        for start in range(0, n, spec.batch_size):
            rows = order[start : start + spec.batch_size]
            loss, grad = _loss_grad(X, Y, sw, state.P, spec.alpha, rows,
                                    in_epoch.astype(np.uint8), rows.size * mean_weight)
            if not spec.fit_intercept:
                grad[:, d] = 0.0
            for k in np.flatnonzero(in_epoch):
                if not _finite(loss[k], grad[k]):
                    state.P[k] = P_prev[k]
                    state.status[k] = DIVERGED
                    in_epoch[k] = False
                    continue
                loss_sum[k] += rows.size * loss[k]
                grad_norm_sum[k] += rows.size * np.linalg.norm(grad[k])
                state.t[k] += 1
                lr_used[k] = _lr_at(spec, k, state.t[k])
                P_prev[k] = state.P[k]
                step(spec.rule_code[k], spec.hyper[k], lr_used[k], state.t[k],
                     grad[k], state.P[k], state.slots[k])
                if not _finite(state.P[k]):
                    state.P[k] = P_prev[k]
                    state.status[k] = DIVERGED
                    in_epoch[k] = False
        for k in np.flatnonzero(in_epoch):
            epoch_loss = loss_sum[k] / n
            state.loss[k] = epoch_loss
            state.n_iter[k] += 1
            step_norm = np.linalg.norm(state.P[k] - P_start[k])
            _record(spec, state, k, epoch_loss, grad_norm_sum[k] / n, step_norm, lr_used[k])
            # scikit-learn's n_iter_no_change rule on the epoch loss
            if epoch_loss > state.best_loss[k] - spec.tol:
                state.no_improve[k] += 1
            else:
                state.no_improve[k] = 0
            state.best_loss[k] = min(state.best_loss[k], epoch_loss)
            if state.no_improve[k] >= N_ITER_NO_CHANGE:
                state.status[k] = CONVERGED
            elif state.n_iter[k] >= spec.max_iter:
                state.status[k] = MAX_ITER
