"""gradstep's compiled core (cpp/src/module.cpp): fused logistic loss + gradient and
Hessian-vector products for K runs, and the first-order fit loops.

Every array is taken as it is, never converted or copied: a wrong dtype or a layout that is not
C-contiguous raises TypeError, a wrong shape ValueError. The GIL is released for the whole
computation. Shapes: n rows, d features, K runs, D = d + 1 parameters per run (intercept last);
see gradstep._backends.state for the contract these functions implement.
"""

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from gradstep._backends.state import FitState, RunSpec

def loss_grad_float32(
    X: NDArray[np.float32],
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    alpha: NDArray[np.float64],
    rows: NDArray[np.int64],
    active: NDArray[np.uint8],
    n_threads: int,
    denominator: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Loss (K,) and gradient (K, D) of the active runs at P, X float32 (n, d).

    Y (n, 1 or K); SW (n, 0, 1 or K) sample weights (0 columns: unit weights, 1: shared, K: one
    per run); alpha (K,) L2 strengths (no penalty computed where 0); rows int64 row indices (empty:
    all rows); active (K,) (inactive runs come back as zeros); n_threads >= 1 (the result has the
    same bits for any number); denominator (K,) replaces each run's weight sum as the divisor, or
    is empty. A run whose divisor is 0 comes back as zeros.
    """

def loss_grad_float64(
    X: NDArray[np.float64],
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    alpha: NDArray[np.float64],
    rows: NDArray[np.int64],
    active: NDArray[np.uint8],
    n_threads: int,
    denominator: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Loss (K,) and gradient (K, D) of the active runs at P, X float64 (n, d); as
    loss_grad_float32."""

def hessp_float32(
    X: NDArray[np.float32],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    V: NDArray[np.float64],
    alpha: NDArray[np.float64],
    active: NDArray[np.uint8],
    n_threads: int,
) -> NDArray[np.float64]:
    """HV (K, D): the Hessian of each active run's loss at P[k] times V[k], over all rows of X
    float32 (n, d), in one pass: (1/sum s_k) sum_i s_ik sigma_ik (1 - sigma_ik)
    (x_i . V[k, :d] + V[k, d]) (x_i, 1) + alpha_k (V[k, :d], 0). Inactive runs and runs whose
    weights sum to 0 come back as zeros; the same bits for any n_threads."""

def hessp_float64(
    X: NDArray[np.float64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    V: NDArray[np.float64],
    alpha: NDArray[np.float64],
    active: NDArray[np.uint8],
    n_threads: int,
) -> NDArray[np.float64]:
    """HV (K, D) of the active runs, X float64 (n, d); as hessp_float32."""

def softmax_loss_grad_float32(
    X: NDArray[np.float32],
    labels: NDArray[np.int64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    alpha: NDArray[np.float64],
    rows: NDArray[np.int64],
    active: NDArray[np.uint8],
    n_threads: int,
    denominator: NDArray[np.float64],
    n_classes: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The multinomial loss (K,) and gradient (K, n_classes (d + 1)) of the active runs for
    labels (n,) in [0, n_classes), X (n, d) float32 (softmax_reference's contract;
    cpp/include/gradstep/softmax_kernel.hpp): X read once, the same bits for any n_threads."""

def softmax_hessp_float32(
    X: NDArray[np.float32],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    V: NDArray[np.float64],
    alpha: NDArray[np.float64],
    active: NDArray[np.uint8],
    n_threads: int,
    n_classes: int,
) -> NDArray[np.float64]:
    """The multinomial Hessian-vector products (K, n_classes (d + 1)) of the active runs, X
    float32."""

def softmax_loss_grad_float64(
    X: NDArray[np.float64],
    labels: NDArray[np.int64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    alpha: NDArray[np.float64],
    rows: NDArray[np.int64],
    active: NDArray[np.uint8],
    n_threads: int,
    denominator: NDArray[np.float64],
    n_classes: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The multinomial loss (K,) and gradient (K, n_classes (d + 1)) of the active runs for
    labels (n,) in [0, n_classes), X (n, d) float64 (softmax_reference's contract;
    cpp/include/gradstep/softmax_kernel.hpp): X read once, the same bits for any n_threads."""

def softmax_hessp_float64(
    X: NDArray[np.float64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    V: NDArray[np.float64],
    alpha: NDArray[np.float64],
    active: NDArray[np.uint8],
    n_threads: int,
    n_classes: int,
) -> NDArray[np.float64]:
    """The multinomial Hessian-vector products (K, n_classes (d + 1)) of the active runs, X
    float64."""

def run_float32(
    X: NDArray[np.float32],
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    n_steps: int,
    n_threads: int,
) -> None:
    """Advances the RUNNING runs of `state` in place by up to n_steps iterations (full-batch steps,
    or epochs when spec.batch_size > 0) under `spec`, X float32 (n, d).

    The named attributes of spec and state are read as they are (int64 / float64, C-contiguous,
    the state's writeable); a wrong one raises TypeError or ValueError naming it. Each
    spec.rule_code must be one of rule_codes(). Never writes history row H_PASSES; never sets
    STALLED or STOPPED. Mini-batch epochs walk state.shuffle_order(n, spec.seed, epoch,
    spec.shuffle_blocks) (0: the row shuffle; b > 0: blocks of b rows, which must be >= 0).
    """

def run_float64(
    X: NDArray[np.float64],
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    n_steps: int,
    n_threads: int,
) -> None:
    """Advances the RUNNING runs of `state` in place, X float64 (n, d); as run_float32."""

def curvature_run_float32(
    X: NDArray[np.float32],
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    loop: Any,
    n_steps: int,
    n_threads: int,
) -> None:
    """Up to n_steps iterations of the single lbfgs, armijo, bb or newton run (loop.kind) of
    `state` on the logistic loss (with spec.l1 > 0: OWL-QN, or armijo's proximal steps over the
    parameters spec.penalized marks), X float32; `loop` is driver.CompiledCurvatureDriver, whose
    arrays (lbfgs: memory, rho, gamma, ints; armijo, bb and newton: params, reals, ints; passes)
    advance in place (lbfgs_loop.hpp, backtrack_loop.hpp)."""

def softmax_curvature_run_float32(
    X: NDArray[np.float32],
    labels: NDArray[np.int64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    loop: Any,
    n_steps: int,
    n_threads: int,
    n_classes: int,
) -> None:
    """As curvature_run_float32 on the multinomial loss (labels in [0, n_classes))."""

def curvature_run_float64(
    X: NDArray[np.float64],
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    loop: Any,
    n_steps: int,
    n_threads: int,
) -> None:
    """Up to n_steps iterations of the single lbfgs, armijo, bb or newton run (loop.kind) of
    `state` on the logistic loss (with spec.l1 > 0: OWL-QN, or armijo's proximal steps over the
    parameters spec.penalized marks), X float64; `loop` is driver.CompiledCurvatureDriver, whose
    arrays (lbfgs: memory, rho, gamma, ints; armijo, bb and newton: params, reals, ints; passes)
    advance in place (lbfgs_loop.hpp, backtrack_loop.hpp)."""

def softmax_curvature_run_float64(
    X: NDArray[np.float64],
    labels: NDArray[np.int64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    loop: Any,
    n_steps: int,
    n_threads: int,
    n_classes: int,
) -> None:
    """As curvature_run_float64 on the multinomial loss (labels in [0, n_classes))."""

def rule_codes() -> dict[str, int]:
    """The compiled step rules, {name: code} (cpp/include/gradstep/rules.hpp's table): the codes
    spec.rule_code may hold."""

def kernel() -> Literal["baseline", "avx2", "avx512"]:
    """The instruction set of the kernels in use."""

def all_zero_one(a: NDArray[np.float64], n_threads: int) -> bool:
    """Whether every value of a C-contiguous float64 array is 0.0 or 1.0 (one pass, up to
    n_threads threads)."""

def two_loop_rows(g: NDArray[np.float64], memory: NDArray[np.float64],
                  order: NDArray[np.int64], rho: NDArray[np.float64], gamma: NDArray[np.float64],
                  oldest: int) -> NDArray[np.float64]:
    """The L-BFGS two-loop recursion of each row of g (runs, D) with its own pairs
    (gradstep.rules.curvature._two_loop_rows compiled)."""

def accept_rows(f: NDArray[np.float64], G: NDArray[np.float64], d: NDArray[np.float64],
                f0: NDArray[np.float64], t0: NDArray[np.float64],
                slope0: NDArray[np.float64], c1: float, c2: float) -> NDArray[np.bool_]:
    """strong_wolfe's first test of each run's first trial, row by row
    (gradstep.rules.curvature._accept_rows_numpy compiled)."""

def push_pairs_rows(rows: NDArray[np.int64], Q: NDArray[np.float64], G: NDArray[np.float64],
                    P: NDArray[np.float64], Gold: NDArray[np.float64],
                    memory: NDArray[np.float64], head: NDArray[np.int64],
                    rho: NDArray[np.float64], gamma: NDArray[np.float64],
                    n_pairs: NDArray[np.int64], eps: float) -> None:
    """The new (s, y) pairs of the runs in rows pushed into their rings in place where
    s'y > eps y'y (LBFGSRuns._finish's pair step compiled)."""

def kernels() -> list[str]:
    """The kernels this CPU and build can run: 'baseline', then 'avx2' and 'avx512' where
    available."""

def set_kernel(name: Literal["baseline", "avx2", "avx512"]) -> str:
    """Selects the kernels for tests and benchmarks and returns the previous one; ValueError for
    a name this CPU or build cannot run. Not thread-safe: call it while no fit is running."""

def row_order() -> Literal["auto", "rowwise", "interleaved"]:
    """The order in which the dense gradient and Hessian product read each group of four rows
    (cpp/include/gradstep/block_kernel.hpp, RowOrder)."""

def set_row_order(name: Literal["auto", "rowwise", "interleaved"]) -> str:
    """Selects the dense kernels' row order for tests and benchmarks and returns the previous
    one; ValueError for an unknown name. Either order gives the same bits. Not thread-safe: call
    it while no fit is running."""

def link_terms(
    z: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The kernel's own per-row terms for 1-D float64 z and 0/1 y: the loss
    (max(z, 0) - y z) + log1p(exp(-|z|)), the residual sigmoid(z) - y and the Hessian weight
    sigmoid(z) (1 - sigmoid(z)), all without cancellation; for accuracy tests."""

def _hold_pool_lock(seconds: float) -> None:
    """Test hook: holds the thread pool's instance lock for ``seconds`` (the fork test)."""

def link(z: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """log(1 + exp(z)) and sigmoid(z) for a 1-D float64 z by the kernel's own vector link
    (vectorized exp and log1p); for accuracy tests."""

def csr_loss_grad(
    data: NDArray[np.float32] | NDArray[np.float64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    indptr: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    alpha: NDArray[np.float64],
    rows: NDArray[np.int64],
    active: NDArray[np.uint8],
    n_threads: int,
    denominator: NDArray[np.float64],
    check_rows: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Loss (K,) and gradient (K, D) of the active runs at P for the CSR matrix (data, indices,
    indptr) with n = len(indptr) - 1 rows and n_cols columns, in one pass over the nonzeros for
    all runs (cpp/include/gradstep/sparse_kernel.hpp); the other arguments as loss_grad_float64.
    The arrays are read as they are (C-contiguous; float32/float64 data, int32/int64 indices and
    indptr, each independently), never copied; the column indices must lie in [0, n_cols) and
    indptr must not decrease (gradstep.sparse.check_csr proves both; the sizes, indptr[0] == 0,
    indptr[-1] <= len(indices) and each used row's range are checked here). ``check_rows``: the
    kernel checks each used row's column indices (in [0, n_cols), strictly increasing) just before
    it reads by them, and raises a ValueError naming the first bad row; for a matrix whose
    structure check_csr has not proven. The same bits for any n_threads, and for a run alone or
    among others."""

def csr_run(
    data: NDArray[np.float32] | NDArray[np.float64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    indptr: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    n_steps: int,
    n_threads: int,
) -> None:
    """The first-order fit loops (run_float64's) over a CSR matrix whose structure is proven:
    its rows' column indices are read unchecked."""

def csr_curvature_run(
    data: NDArray[np.float32] | NDArray[np.float64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    indptr: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    Y: NDArray[np.float64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    loop: Any,
    n_steps: int,
    n_threads: int,
) -> None:
    """The compiled curvature loops (curvature_run_float64's) over a CSR matrix whose structure
    is proven: its rows' indices are not checked."""

def csr_softmax_curvature_run(
    data: NDArray[np.float32] | NDArray[np.float64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    indptr: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    labels: NDArray[np.int64],
    SW: NDArray[np.float64],
    spec: RunSpec,
    state: FitState,
    loop: Any,
    n_steps: int,
    n_threads: int,
    n_classes: int,
) -> None:
    """The compiled curvature loops of the multinomial loss (softmax_curvature_run_float64's)
    over a CSR matrix whose structure is proven."""

def csr_hessp(
    data: NDArray[np.float32] | NDArray[np.float64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    indptr: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    V: NDArray[np.float64],
    alpha: NDArray[np.float64],
    active: NDArray[np.uint8],
    n_threads: int,
    check_rows: bool = False,
) -> NDArray[np.float64]:
    """HV (K, D) of the active runs for the CSR matrix (data, indices, indptr); as csr_loss_grad
    for the matrix and hessp_float64 for the rest."""

def csr_softmax_loss_grad(
    data: NDArray[np.float32] | NDArray[np.float64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    indptr: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    labels: NDArray[np.int64],
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    alpha: NDArray[np.float64],
    rows: NDArray[np.int64],
    active: NDArray[np.uint8],
    n_threads: int,
    denominator: NDArray[np.float64],
    n_classes: int,
    check_rows: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The multinomial loss (K,) and gradient (K, n_classes (d + 1)) of the active runs for
    labels (n,) in [0, n_classes) (softmax_reference's contract), in one pass over the nonzeros
    for every class of every run: the csr_loss_grad engine over each run's classes as
    consecutive runs, with the softmax link. Arguments otherwise as csr_loss_grad's."""

def csr_softmax_hessp(
    data: NDArray[np.float32] | NDArray[np.float64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    indptr: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    SW: NDArray[np.float64],
    P: NDArray[np.float64],
    V: NDArray[np.float64],
    alpha: NDArray[np.float64],
    active: NDArray[np.uint8],
    n_threads: int,
    n_classes: int,
    check_rows: bool = False,
) -> NDArray[np.float64]:
    """The multinomial HV (K, n_classes (d + 1)) of the active runs, one pass (as
    csr_softmax_loss_grad)."""

def csr_structure_error(
    indptr: NDArray[np.int32] | NDArray[np.int64],
    indices: NDArray[np.int32] | NDArray[np.int64],
    n_cols: int,
    n_threads: int = 1,
) -> tuple[int, int]:
    """(code, first offending row) of a CSR structure, as sparse_reference.structure_error
    (0 OK, 1 indptr decreases, 2 an index outside [0, n_cols), 3 unsorted or duplicate indices),
    without temporaries, its screen on up to n_threads threads. indptr must start at 0 and end
    at most at len(indices) (ValueError)."""
