"""The functional front door: ``fit``, ``loss_and_grad`` and their results."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _backends
from . import _validate as v
from ._backends.state import (
    CONVERGED,
    DIVERGED,
    H_DISTANCE,
    H_GRAD_NORM,
    H_LOSS,
    H_LR,
    H_STEP_NORM,
    RUNNING,
    STATUS_NAMES,
    FitState,
    RunSpec,
)
from .rules import SCHEDULE_PARAMS, StepRule, encode_runs, make_rule, make_schedule

_NO_ROWS = np.empty(0, dtype=np.int64)


class DivergenceWarning(RuntimeWarning):
    """A run's loss or weights stopped being finite; it kept its last finite weights."""


@dataclass(frozen=True)
class History:
    """Per-iteration traces; entry 0 is the starting point. Batched: (K, max n_iter + 1),
    shorter runs padded with NaN."""

    loss: np.ndarray
    grad_norm: np.ndarray  # L2 norm of the full gradient over coef and intercept
    step_norm: np.ndarray  # L2 length of the step taken (0 at entry 0)
    lr: np.ndarray  # the schedule's value (0 at entry 0)
    distance: Optional[np.ndarray]  # to `reference`, None when no reference was given


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns. A batched call (K runs) gives every array a leading axis of K."""

    coef: np.ndarray
    intercept: Any  # float, or (K,)
    n_iter: Any  # int, or (K,) int
    status: Any  # "converged" | "max_iter" | "diverged", or (K,) array of those
    loss: Any  # final loss, float or (K,)
    rules: Any  # the StepRule that ran, or a tuple of K of them
    history: Optional[History]
    backend: str = "numpy"
    classes: Optional[np.ndarray] = None  # the two classes of a 1-D y; classes[1] is positive

    @property
    def batched(self) -> bool:
        return np.ndim(self.coef) == 2


# ---------------------------------------------------------------------------------------------
# loss_and_grad
# ---------------------------------------------------------------------------------------------


def loss_and_grad(X, y, coef, intercept=0.0, *, sample_weight=None, alpha=0.0,
                  backend="auto", n_threads=None):
    """Mean (weighted) logistic loss plus (alpha/2)||coef||^2, and its gradient, in one pass.

    coef (d,) gives (loss, grad_coef (d,), grad_intercept); coef (K, d) with intercept (K,)
    gives K of each. y is 0/1, (n,) or (n, K).
    """
    X = v.check_X(X)
    n, d = X.shape
    Y, _ = v.check_targets(y, n, labels=False)
    sw = v.check_sample_weight(sample_weight, n)
    alpha = v.check_nonneg_float(alpha, "alpha")
    threads = v.check_n_threads(n_threads)
    _, module = _backends.get(backend)
    single = np.ndim(coef) == 1
    W = v.check_params(coef, "coef", None, d).reshape(-1, d)
    n_runs = W.shape[0]
    b = np.array(intercept, dtype=np.float64).reshape(-1)
    if b.size not in (1, n_runs):
        raise ValueError(f"intercept must be a scalar or have shape ({n_runs},), got {b.shape}")
    v.check_params(b, "intercept", None, b.size)
    if Y.shape[1] not in (1, n_runs):
        raise ValueError(f"y has {Y.shape[1]} columns but coef has {n_runs} rows")
    P = np.empty((n_runs, d + 1))
    P[:, :d] = W
    P[:, d] = b
    loss, G = module.loss_grad(X, Y, sw, P, alpha, _NO_ROWS, np.ones(n_runs, np.uint8), threads)
    if single:
        return float(loss[0]), G[0, :d].copy(), float(G[0, d])
    return loss, np.ascontiguousarray(G[:, :d]), G[:, d].copy()


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------


def lipschitz_constant(X: np.ndarray, sw: np.ndarray, alpha: float, fit_intercept: bool) -> float:
    """L = largest eigenvalue of X'SX / (4 sum s) + alpha, X with a ones column when fitting
    the intercept: the Lipschitz constant of the logistic gradient (1/L is lr="auto")."""
    n, d = X.shape
    total = float(sw.sum()) if sw.size else float(n)
    size = d + int(fit_intercept)
    chunk = max(1, 2**22 // max(size, 1))  # bounded temporaries: ~32 MiB per chunk
    if size <= 3000:
        gram = np.zeros((size, size))
        for start in range(0, n, chunk):
            A = _with_ones(X[start:start + chunk], fit_intercept)
            weighted = A * sw[start:start + chunk, None] if sw.size else A
            gram += A.T @ weighted
        top = float(np.linalg.eigvalsh(gram)[-1])
    else:  # power iteration on v -> A'SAv, to a relative change of 1e-10
        rng = np.random.default_rng(0)
        vec = rng.standard_normal(size)
        vec /= np.linalg.norm(vec)
        top = 0.0
        for _ in range(1000):
            out = np.zeros(size)
            for start in range(0, n, chunk):
                A = _with_ones(X[start:start + chunk], fit_intercept)
                Av = A @ vec
                out += A.T @ (Av * sw[start:start + chunk] if sw.size else Av)
            new_top = float(np.linalg.norm(out))
            vec = out / new_top
            if abs(new_top - top) <= 1e-10 * new_top:
                top = new_top
                break
            top = new_top
    return top / (4.0 * total) + alpha


def _with_ones(block: np.ndarray, fit_intercept: bool) -> np.ndarray:
    block = block.astype(np.float64)
    if fit_intercept:
        block = np.hstack([block, np.ones((block.shape[0], 1))])
    return block


def _as_list(value, is_seq: bool) -> list:
    return list(value) if is_seq else [value]


def _is_lr_sequence(lr) -> bool:
    if isinstance(lr, np.ndarray):
        return lr.ndim > 0  # a 0-d array is a number
    return not isinstance(lr, (str, bytes)) and isinstance(lr, Sequence)


def _build_rules(rule, lr, schedule, rule_params, lipschitz: Callable[[], float],
                 n_targets: int) -> tuple[list[StepRule], bool]:
    """The K rules to run and whether the call is batched."""
    rule_seq = isinstance(rule, (list, tuple))
    lr_seq = _is_lr_sequence(lr)
    rules_in = _as_list(rule, rule_seq)
    lrs_in = _as_list(lr, lr_seq)
    if not rules_in:
        raise ValueError("rule is an empty list; give at least one rule")
    if not lrs_in:
        raise ValueError("lr is an empty sequence; give at least one learning rate")
    if rule_seq and lr_seq and len(rules_in) != len(lrs_in):
        raise ValueError(
            f"rule has {len(rules_in)} entries and lr has {len(lrs_in)}; two sequences pair up "
            "and must have equal length (or pass one of them as a single value)"
        )
    n_runs = max(len(rules_in), len(lrs_in))
    if n_targets > 1 and n_runs not in (1, n_targets):
        raise ValueError(
            f"y has {n_targets} target columns but {n_runs} runs were asked for; "
            "they must match (or give one rule and one lr for every column)"
        )
    n_runs = max(n_runs, n_targets)
    schedule_params = {k: rule_params[k] for k in rule_params if k in SCHEDULE_PARAMS}
    own_params = {k: rule_params[k] for k in rule_params if k not in SCHEDULE_PARAMS}
    sched = make_schedule(schedule, schedule_params)
    auto_lr: list[float] = []
    rules = []
    for i in range(n_runs):
        r = rules_in[i if len(rules_in) > 1 else 0]
        this_lr = lrs_in[i if len(lrs_in) > 1 else 0]
        if isinstance(this_lr, str):
            if this_lr != "auto":
                raise ValueError(f"lr must be a positive number, None or 'auto', got {this_lr!r}")
            if not auto_lr:
                auto_lr.append(1.0 / lipschitz())
            this_lr = auto_lr[0]
        elif isinstance(this_lr, np.ndarray) and this_lr.ndim == 0:
            this_lr = this_lr.item()
        if this_lr is not None and (isinstance(this_lr, bool) or not isinstance(
                this_lr, (int, float, np.floating, np.integer))):
            raise ValueError(f"lr must be a positive number, None or 'auto', got {this_lr!r}")
        if this_lr is not None:
            this_lr = float(this_lr)
        rules.append(make_rule(r, this_lr, sched, own_params))
    return rules, rule_seq or lr_seq or n_targets > 1


def _reference_array(reference, n_runs: int, n_params_out: int, D: int) -> np.ndarray:
    if isinstance(reference, FitResult):
        coef = np.atleast_2d(reference.coef)
        ref = np.column_stack([coef, np.atleast_1d(reference.intercept)])
        ref = ref if n_params_out == D else ref[:, :n_params_out]
    else:
        ref = v.check_params(reference, "reference", n_runs, n_params_out)
    ref = np.broadcast_to(np.atleast_2d(ref), (n_runs, n_params_out))
    out = np.zeros((n_runs, D))
    out[:, :n_params_out] = ref
    return out


def fit(X, y, rule="sgd", *, lr=None, schedule="constant", alpha=0.0, fit_intercept=True,
        sample_weight=None, max_iter=1000, tol=1e-6, batch_size=None, random_state=None,
        coef_init=None, intercept_init=None, reference=None, backend="auto",
        n_threads=None, history=True, **rule_params) -> FitResult:
    """Fit binary logistic regression by gradient descent with one or several step rules.

    A list of rules and/or a sequence of lr values (or a 2-D 0/1 y) makes K runs that share
    every pass over X; each run stops on its own. See the README for the full semantics.
    """
    return _fit(X, y, rule, lr=lr, schedule=schedule, alpha=alpha, fit_intercept=fit_intercept,
                sample_weight=sample_weight, max_iter=max_iter, tol=tol, batch_size=batch_size,
                random_state=random_state, coef_init=coef_init, intercept_init=intercept_init,
                reference=reference, backend=backend, n_threads=n_threads, history=history,
                rule_params=rule_params)


def _fit(X, y, rule, *, lr, schedule, alpha, fit_intercept, sample_weight, max_iter, tol,
         batch_size, random_state, coef_init, intercept_init, reference, backend, n_threads,
         history, rule_params, callback=None, callback_every=0) -> FitResult:
    # ---- validation: everything before any work -------------------------------------------
    X = v.check_X(X)
    n, d = X.shape
    Y, classes = v.check_targets(y, n, labels=np.ndim(y) == 1)
    sw = v.check_sample_weight(sample_weight, n)
    alpha = v.check_nonneg_float(alpha, "alpha")
    # tol=None never stops early (as scikit-learn's SGDClassifier): -inf fails every test
    tol = -np.inf if tol is None else v.check_nonneg_float(tol, "tol")
    max_iter = v.check_positive_int(max_iter, "max_iter")
    batch = v.check_positive_int(batch_size, "batch_size", allow_none=True) or 0
    threads = v.check_n_threads(n_threads)
    fit_intercept = bool(fit_intercept)
    backend_name, module = _backends.get(backend)
    seed = v.seed_from(random_state)
    rules, batched = _build_rules(
        rule, lr, schedule, rule_params,
        lambda: lipschitz_constant(X, sw, alpha, fit_intercept), Y.shape[1] if np.ndim(y) == 2 else 1,
    )
    batched = batched or np.ndim(y) == 2  # a 2-D target always gives per-run arrays
    n_runs, D = len(rules), d + 1
    P0 = np.zeros((n_runs, D))
    if coef_init is not None:
        P0[:, :d] = v.check_params(coef_init, "coef_init", n_runs, d)
    if intercept_init is not None:
        if not fit_intercept:
            raise ValueError("intercept_init was given but fit_intercept=False; drop one of them")
        b0 = np.array(intercept_init, dtype=np.float64).reshape(-1)
        if b0.size not in (1, n_runs):
            raise ValueError(
                f"intercept_init must be a scalar or have shape ({n_runs},), got {b0.shape}"
            )
        P0[:, d] = v.check_params(b0, "intercept_init", None, b0.size)
    n_params_out = d + int(fit_intercept)
    ref = None if reference is None else _reference_array(reference, n_runs, n_params_out, D)

    # ---- the run ---------------------------------------------------------------------------
    rule_code, sched_code, hyper = encode_runs(rules)
    n_batches = math.ceil(n / batch) if batch else 1
    spec = RunSpec(
        rule_code=rule_code, sched_code=sched_code, hyper=hyper, alpha=alpha,
        fit_intercept=fit_intercept, tol=tol, batch_size=batch, seed=seed, max_iter=max_iter,
        total_updates=max_iter * n_batches, record_history=bool(history),
        has_reference=ref is not None,
    )
    state = FitState.empty(n_runs, D, max_iter + 1 if history else 0)
    state.P[:] = P0
    if ref is not None:
        state.reference[:] = ref
    init_state(module, X, Y, sw, spec, state, threads)
    # The compiled loop runs in chunks of about 0.1 s: between them Python handles Ctrl-C
    # (KeyboardInterrupt) and the caller's callback reports progress.
    every = callback_every if callback_every > 0 else chunk_iterations(n, d, n_runs)
    while (state.status == RUNNING).any():
        module.run(X, Y, sw, spec, state, every, threads)
        if callback is not None:
            callback(state)
    if batch:  # the exact objective at the returned weights (epoch losses are running means)
        all_runs = np.ones(n_runs, np.uint8)
        state.loss[:] = module.loss_grad(X, Y, sw, state.P, alpha, _NO_ROWS, all_runs, threads)[0]
    return _result(state, spec, rules, batched, backend_name, classes, fit_intercept, d)


def chunk_iterations(n: int, d: int, n_runs: int) -> int:
    """Iterations in about 0.1 s of compiled work (~2e8 multiply-adds, two per X entry)."""
    return max(1, int(1e8 / max(2.0 * n * d * n_runs, 1.0)))


def init_state(module, X, Y, sw, spec: RunSpec, state: FitState, threads: int) -> None:
    """History entry 0 and the loss and gradient at the starting point."""
    n_runs, D = state.P.shape
    loss, grad = module.loss_grad(X, Y, sw, state.P, spec.alpha, _NO_ROWS,
                                  np.ones(n_runs, np.uint8), threads)
    if not spec.fit_intercept:
        grad[:, D - 1] = 0.0
    state.loss[:] = loss
    state.grad[:] = grad
    if spec.record_history:
        state.history[:, :, 0] = 0.0
        state.history[H_LOSS, :, 0] = loss
        state.history[H_GRAD_NORM, :, 0] = np.linalg.norm(grad, axis=1)
        state.history[H_DISTANCE, :, 0] = (
            np.linalg.norm(state.P - state.reference, axis=1) if spec.has_reference else np.nan
        )
    if spec.batch_size:  # the starting loss is the first to improve on: 5 epochs without
        state.best_loss[:] = loss  # an improvement by tol stop a run at n_iter == 5
    else:
        state.status[np.abs(grad).max(axis=1) <= spec.tol] = CONVERGED


def _result(state, spec, rules, batched, backend_name, classes, fit_intercept, d) -> FitResult:
    diverged = np.flatnonzero(state.status == DIVERGED)
    if diverged.size:
        which = ", ".join(f"run {k} ({rules[k].name}, lr={rules[k].lr:g})" for k in diverged)
        warnings.warn(
            f"{which} diverged: the loss or weights stopped being finite; the last finite "
            "weights are returned. Try a smaller lr, lr='auto', or standardize X.",
            DivergenceWarning, stacklevel=4,
        )
    status = np.array([STATUS_NAMES[int(s)] for s in state.status])
    hist = None
    if spec.record_history:
        length = int(state.n_iter.max()) + 1
        h = state.history[:, :, :length].copy()
        hist = History(
            loss=h[H_LOSS], grad_norm=h[H_GRAD_NORM], step_norm=h[H_STEP_NORM], lr=h[H_LR],
            distance=h[H_DISTANCE] if spec.has_reference else None,
        )
    coef = state.P[:, :d].copy()
    intercept = state.P[:, d].copy() if fit_intercept else np.zeros(len(rules))
    if batched:
        return FitResult(coef, intercept, state.n_iter.copy(), status, state.loss.copy(),
                         tuple(rules), hist, backend_name, classes)
    if hist is not None:
        n_entries = int(state.n_iter[0]) + 1
        hist = History(*(None if a is None else a[0, :n_entries] for a in (
            hist.loss, hist.grad_norm, hist.step_norm, hist.lr, hist.distance)))
    return FitResult(coef[0], float(intercept[0]), int(state.n_iter[0]), str(status[0]),
                     float(state.loss[0]), rules[0], hist, backend_name, classes)
