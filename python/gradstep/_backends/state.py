"""What every backend's fit loop reads (RunSpec) and advances in place (FitState).

The contract, shared by ``reference.py`` (the specification), ``numba.py`` and ``cpp.py``:

``loss_grad(X, Y, sw, P, alpha, rows, active, n_threads) -> (loss (K,), G (K, D))``
    X (n, d) C-contiguous float32 or float64; Y (n, Ky) float64 with Ky in {1, K} (Ky == 1 means
    every run shares the target column); sw (n,) float64, or an empty array for unit weights;
    P (K, D = d + 1) float64 with the intercept last; rows int64 row indices (empty: all rows);
    active uint8 (K,) (inactive runs are skipped and come back as zeros). The loss and gradient
    are normalized by the sum of the weights of the rows used; the L2 term (alpha > 0 only)
    covers P[:, :d]. The intercept gradient is always computed.

``run(X, Y, sw, spec, state, n_steps, n_threads) -> None``
    Advances every run whose status is RUNNING by up to ``n_steps`` iterations (full-batch
    steps, or epochs when ``spec.batch_size > 0``), stopping each run on its own criterion.
    With sample weights, a mini-batch's sums are divided by its expected weight
    (batch rows * mean weight) rather than its own, so the batch gradient is unbiased.
    The state must have been initialized by ``api._init_state`` (history entry 0, the loss and
    gradient at the starting point).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RUNNING, CONVERGED, MAX_ITER, DIVERGED = 0, 1, 2, 3
STATUS_NAMES = {CONVERGED: "converged", MAX_ITER: "max_iter", DIVERGED: "diverged", RUNNING: "running"}

# Rows of FitState.history.
H_LOSS, H_GRAD_NORM, H_STEP_NORM, H_LR, H_DISTANCE = range(5)
N_HISTORY = 5

# Epochs without an improvement of the epoch loss by tol before a mini-batch run stops.
N_ITER_NO_CHANGE = 5

# Optimizer slots per run: momentum v | adagrad G | rmsprop v | adadelta E, D | adam m, v.
N_SLOTS = 2


@dataclass
class RunSpec:
    """Everything fixed for the duration of a fit."""

    rule_code: np.ndarray  # (K,) int64, see rules.RULE_CODES
    sched_code: np.ndarray  # (K,) int64, see rules.SCHEDULES
    hyper: np.ndarray  # (K, N_HYPER) float64: lr, schedule param, a, b, eps
    alpha: float
    fit_intercept: bool
    tol: float
    batch_size: int  # 0: full batch
    seed: int  # 0 <= seed < 2**64: the mini-batch shuffle
    max_iter: int
    total_updates: int  # T of the cosine schedule
    record_history: bool
    has_reference: bool


@dataclass
class FitState:
    """Everything a fit loop advances; every array is C-contiguous and owned by the state."""

    P: np.ndarray  # (K, D) weights, intercept last
    slots: np.ndarray  # (K, N_SLOTS, D) optimizer state
    grad: np.ndarray  # (K, D) gradient at P (full batch)
    loss: np.ndarray  # (K,) loss at P (full batch) or last epoch loss (mini-batch)
    t: np.ndarray  # (K,) int64 updates taken
    n_iter: np.ndarray  # (K,) int64 iterations (epochs) completed
    status: np.ndarray  # (K,) int64
    best_loss: np.ndarray  # (K,) best epoch loss (mini-batch stopping)
    no_improve: np.ndarray  # (K,) int64 epochs without improvement
    epoch: np.ndarray  # (1,) int64 epochs shuffled so far (the shuffle's counter)
    history: np.ndarray  # (N_HISTORY, K, H) float64, NaN where not reached; H = 0 when off
    reference: np.ndarray  # (K, D) float64, zeros when no reference

    @classmethod
    def empty(cls, n_runs: int, n_params: int, history_len: int) -> "FitState":
        return cls(
            P=np.zeros((n_runs, n_params)),
            slots=np.zeros((n_runs, N_SLOTS, n_params)),
            grad=np.zeros((n_runs, n_params)),
            loss=np.zeros(n_runs),
            t=np.zeros(n_runs, dtype=np.int64),
            n_iter=np.zeros(n_runs, dtype=np.int64),
            status=np.zeros(n_runs, dtype=np.int64),
            best_loss=np.full(n_runs, np.inf),
            no_improve=np.zeros(n_runs, dtype=np.int64),
            epoch=np.zeros(1, dtype=np.int64),
            history=np.full((N_HISTORY, n_runs, history_len), np.nan),
            reference=np.zeros((n_runs, n_params)),
        )


# ---- the mini-batch shuffle: one generator, implemented identically in every backend -------
# Epoch e orders the rows by the keys splitmix64(seed + (e * n + i + 1) * GOLDEN), i = 0..n-1,
# with a stable sort (ties, which need a 64-bit collision, keep row order).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


def shuffle_keys(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sort keys of epoch ``epoch`` (uint64, wrapping arithmetic)."""
    counter = np.arange(1, n + 1, dtype=np.uint64) + np.uint64(epoch) * np.uint64(n)
    z = np.uint64(seed) + counter * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def shuffle_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.argsort(shuffle_keys(n, seed, epoch), kind="stable").astype(np.int64)
