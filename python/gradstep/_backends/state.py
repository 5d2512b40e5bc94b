"""What every backend computes (the kernel contract), reads (RunSpec) and advances (FitState).

The contract, shared by ``reference.py`` (the specification), ``numba.py`` and ``cpp.py``.
Shapes: n rows, d features, K runs, D = d + 1 parameters per run (intercept last).

``loss_grad(X, Y, SW, P, alpha, rows, active, n_threads, denominator) -> (loss (K,), G (K, D))``
    X (n, d) C-contiguous float32 or float64; Y (n, Ky) float64 with Ky in {1, K} (Ky == 1: every
    run shares the target column); SW (n, Ks) float64 with Ks in {0, 1, K}: Ks == 0 means unit
    weights, Ks == 1 one weight column shared by every run, Ks == K a weight column per run
    (cross-validation folds are runs whose weights are 0 outside the fold); P (K, D) float64;
    alpha (K,) float64, each run's L2 strength (the penalty is not computed at all for a run
    whose alpha is 0); rows int64 row indices (empty: all rows); active uint8 (K,) (inactive runs
    are skipped and come back as zeros). Run k's loss and gradient are normalized by the sum of
    run k's weights over the rows used, or by ``denominator[k]`` when ``denominator`` (float64,
    (K,) or empty) is not empty; a run whose divisor is 0 comes back as zeros. The L2 term covers
    P[:, :d]. The intercept gradient is always computed.

``hessp(X, SW, P, V, alpha, active, n_threads) -> HV (K, D)``
    The Hessian of run k's loss at P[k] times V[k], in one pass over all rows:
    (1/sum s_k) sum_i s_ik sigma_ik (1 - sigma_ik) (x_i . V[k, :d] + V[k, d]) (x_i, 1)
    + alpha_k (V[k, :d], 0), sigma_ik = sigmoid(x_i . P[k, :d] + P[k, d]). Y is not needed.

``run(X, Y, SW, spec, state, n_steps, n_threads) -> None``   (compiled first-order drivers)
    Advances every run whose status is RUNNING by up to ``n_steps`` iterations (full-batch
    steps, or epochs when ``spec.batch_size > 0``), stopping each run on its own criterion.
    A mini-batch's sums for run k are divided by its expected weight, batch rows * mean of run
    k's weights, rather than its own, so the batch gradient is unbiased. The state must have
    been initialized by ``driver.init_state`` (history entry 0, the loss and gradient at the
    starting point). Compiled drivers never write the H_PASSES row of the history: the Python
    layer fills it (a first-order iteration or epoch is one pass over X).

Divergence (every driver: C++, Numba and the reference, full batch and mini-batch, first-order
and curvature runs). A run stops with status DIVERGED, keeping its last good weights (those
before the step that failed the test), when
    - its loss, its gradient or its weights are not finite, or
    - its loss exceeds ``divergence_limit(start_loss) = DIVERGENCE_LOSS_FACTOR * max(start_loss,
      log 2)``, ``start_loss`` being the full-batch loss at the starting point (set by
      ``driver.init_state``) and log 2 the loss of the zero model (so a start near the optimum,
      loss ~ 0, does not make the test hair-trigger); full batch the loss tested is the loss at
      the new weights, mini-batch each batch's loss at the weights it is computed at; or
    - the Euclidean norm of its weights (w, b) exceeds ``DIVERGENCE_WEIGHT_NORM`` (separable
      data has its loss go to 0 as the weights grow: without this a huge rate would "converge"
      with weights of 1e300).
A NaN starting loss gives a NaN limit, which no loss exceeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RUNNING, CONVERGED, MAX_ITER, DIVERGED, STALLED, STOPPED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {
    RUNNING: "running",
    CONVERGED: "converged",
    MAX_ITER: "max_iter",
    DIVERGED: "diverged",
    STALLED: "stalled",
    STOPPED: "stopped",
}

# Rows of FitState.history.
H_LOSS, H_GRAD_NORM, H_STEP_NORM, H_LR, H_DISTANCE, H_PASSES = range(6)
N_HISTORY = 6

# Epochs without an improvement of the epoch loss by tol before a mini-batch run stops.
N_ITER_NO_CHANGE = 5

# Divergence (see the module docstring; fit.hpp has the same constants).
DIVERGENCE_LOSS_FACTOR = 1e6
DIVERGENCE_WEIGHT_NORM = 1e150
LOG2 = 0.6931471805599453


def divergence_limit(start_loss):
    """The loss above which a run is diverged: DIVERGENCE_LOSS_FACTOR * max(start_loss, log 2)
    (elementwise; NaN stays NaN)."""
    return DIVERGENCE_LOSS_FACTOR * np.maximum(start_loss, LOG2)

# Optimizer slots per run: momentum v | adagrad G | rmsprop v | adadelta E, D | adam m, v.
N_SLOTS = 2


@dataclass
class RunSpec:
    """Everything fixed for the duration of a fit."""

    rule_code: np.ndarray  # (K,) int64, see rules.RULES (each class's ``code``)
    sched_code: np.ndarray  # (K,) int64, see rules.SCHEDULES
    hyper: np.ndarray  # (K, N_HYPER) float64: lr, schedule param, a, b, eps
    alpha: np.ndarray  # (K,) float64: each run's L2 strength
    fit_intercept: bool
    tol: float
    batch_size: int  # 0: full batch
    seed: int  # 0 <= seed < 2**64: the mini-batch shuffle
    max_iter: int
    total_updates: int  # T of the cosine schedule
    record_history: bool
    has_reference: bool
    # Mini-batch order: 0 the row shuffle (shuffle_order), b > 0 the block shuffle with blocks
    # of b rows (shuffle_order_blocks; gs.fit(shuffle="blocks") sets b = SHUFFLE_BLOCK).
    shuffle_blocks: int = 0
    # (K,) float64: each run's L1 strength, alpha * l1_ratio (empty: 0 for every run), and
    # (D,) uint8 the parameters it covers (penalty.penalized_columns: the coefficients, never an
    # intercept; empty without an L1 term). Read by the reference driver, the compiled lbfgs loop
    # (OWL-QN, one run) and the C++ first-order loops (proximal steps; modules with
    # RUN_TAKES_L1).
    l1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    penalized: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))

    def l1_strengths(self, n_runs: int) -> np.ndarray:
        """l1 as (n_runs,) (zeros when empty)."""
        return self.l1 if self.l1.size else np.zeros(n_runs)


@dataclass
class FitState:
    """Everything a fit loop advances; every array is C-contiguous and owned by the state."""

    P: np.ndarray  # (K, D) weights, intercept last
    slots: np.ndarray  # (K, N_SLOTS, D) optimizer state; (K, 0, D) when no rule uses it
    grad: np.ndarray  # (K, D) gradient at P (full batch)
    loss: np.ndarray  # (K,) loss at P (full batch) or last epoch loss (mini-batch)
    t: np.ndarray  # (K,) int64 updates taken
    n_iter: np.ndarray  # (K,) int64 iterations (epochs) completed
    status: np.ndarray  # (K,) int64
    best_loss: np.ndarray  # (K,) best epoch loss (mini-batch stopping)
    no_improve: np.ndarray  # (K,) int64 epochs without improvement
    epoch: np.ndarray  # (1,) int64 epochs shuffled so far (the shuffle's counter)
    history: np.ndarray  # (N_HISTORY, K, H) float64, NaN where not reached; H = 0 when off
    reference: np.ndarray  # (K, D) float64, zeros when no reference; (K, 0) when unused
    start_loss: np.ndarray  # (K,) full-batch loss at the starting point (divergence test)

    @classmethod
    def empty(cls, n_runs: int, n_params: int, history_len: int, *, slots: bool = True,
              reference: bool = True) -> FitState:
        """A zeroed state. slots=False / reference=False give those arrays no columns (shape
        (K, 0, D) and (K, 0)): for fits that never read them (no first-order rule; no
        reference), which the compiled first-order loops then never see."""
        return cls(
            P=np.zeros((n_runs, n_params)),
            slots=np.zeros((n_runs, N_SLOTS if slots else 0, n_params)),
            grad=np.zeros((n_runs, n_params)),
            loss=np.zeros(n_runs),
            t=np.zeros(n_runs, dtype=np.int64),
            n_iter=np.zeros(n_runs, dtype=np.int64),
            status=np.zeros(n_runs, dtype=np.int64),
            best_loss=np.full(n_runs, np.inf),
            no_improve=np.zeros(n_runs, dtype=np.int64),
            epoch=np.zeros(1, dtype=np.int64),
            history=np.full((N_HISTORY, n_runs, history_len), np.nan),
            reference=np.zeros((n_runs, n_params if reference else 0)),
            start_loss=np.zeros(n_runs),
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


def shuffle_order(n: int, seed: int, epoch: int, blocks: int = 0) -> np.ndarray:
    """The row order of epoch ``epoch``: the specification every backend's shuffle follows.
    ``blocks`` > 0: the block order of ``shuffle_order_blocks`` with blocks of that many rows."""
    if blocks:
        return shuffle_order_blocks(n, seed, epoch, blocks)
    return np.argsort(shuffle_keys(n, seed, epoch), kind="stable").astype(np.int64)


# ---- shuffle="blocks": a cheaper order for data that does not fit in cache ------------------
# Gathering rows in a random order costs a memory round trip per row (~260 ns for an 800-byte
# row against ~70 ns of arithmetic). The block order reads X in long consecutive runs while every
# batch still draws rows from many places of X:
#   1. the rows are cut into blocks of `block` consecutive rows (the last one may be short);
#   2. the blocks are shuffled: the block order is shuffle_order(n_blocks, block_seed(seed),
#      epoch), the row shuffle's generator with a seed of its own;
#   3. consecutive blocks of that order are grouped into windows of max(1, SHUFFLE_WINDOW //
#      block) blocks (SHUFFLE_WINDOW rows, the last window may be smaller);
#   4. within each window the rows are ordered by the row shuffle's keys shuffle_keys(n, seed,
#      epoch) (so by a uniform random permutation of the window).
# The epoch's order is the windows one after another; batches are consecutive runs of it, as in
# the row order, so a batch of m <= SHUFFLE_WINDOW rows holds rows of up to min(m, window)
# different blocks, and every row is in a window with rows of other random parts of X.
# A window (SHUFFLE_WINDOW rows; 800 KiB at d = 100 float64, about the L2 of a core) is read
# from memory as a few long runs (the C++ loop prefetches the next window run by run) and then
# its rows are gathered from cache. Within one epoch the keys of distinct rows are distinct
# (splitmix64 is a bijection), so no tie-break is ever needed.
SHUFFLE_BLOCK = 64
SHUFFLE_WINDOW = 1024
BLOCK_SEED_TAG = 0x5851F42D4C957F2D
_MASK = (1 << 64) - 1


def block_seed(seed: int) -> int:
    """The seed of the block order: splitmix64's finalizer of seed ^ BLOCK_SEED_TAG (not a
    shifted seed: its keys would then be the row keys of another counter)."""
    z = (int(seed) ^ BLOCK_SEED_TAG) & _MASK
    z = ((z ^ (z >> 30)) * int(MIX1)) & _MASK
    z = ((z ^ (z >> 27)) * int(MIX2)) & _MASK
    return z ^ (z >> 31)


def shuffle_order_blocks(n: int, seed: int, epoch: int,
                         block: int = SHUFFLE_BLOCK) -> np.ndarray:
    """The row order of epoch ``epoch`` of the block shuffle (see above): the specification."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    n_blocks = -(-n // block)
    per_window = max(1, SHUFFLE_WINDOW // block)
    blocks = shuffle_order(n_blocks, block_seed(seed), epoch)
    keys = shuffle_keys(n, seed, epoch)
    # the rows of the blocks in block order (each block ascending), then sorted window by window
    rows = (blocks[:, None] * block + np.arange(block)).ravel()
    rows = rows[rows < n]  # only the last block is short: the rows past n drop out
    sizes = np.minimum(block, n - blocks * block)
    ends = np.cumsum(sizes)[per_window - 1::per_window].tolist()
    if not ends or ends[-1] != n:
        ends.append(n)
    order = np.empty(n, dtype=np.int64)
    start = 0
    for end in ends:
        window = rows[start:end]
        order[start:end] = window[np.argsort(keys[window], kind="stable")]
        start = end
    return order
