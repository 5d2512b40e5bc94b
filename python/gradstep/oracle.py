"""Gradient oracles: what a driver asks of the data.

An *oracle* answers "the loss and gradient of K parameter vectors [over these rows]" and "the
Hessian of each run's loss times a vector"; a *driver* (``gradstep.driver``) owns the rules,
schedules, line searches, stopping, divergence and history. The reference driver runs on ANY
object with this interface, so a new data format or a remote engine needs only an oracle.

The contract (K runs, D = d + 1 parameters each, the intercept last):

``oracle.n_samples``, ``oracle.n_features``
    The data's shape (n, d).
``oracle.loss_grad(P, active, rows=None, denominator=None) -> (loss (K,), G (K, D))``
    P (K, D) float64. Runs with ``active[k] == 0`` may be skipped (their rows of the result are
    ignored). ``rows`` (int64 indices, optional): only those rows (mini-batches).
    ``denominator`` ((K,) float64, optional): divide run k's sums by it instead of the weight of
    the rows used. The loss includes the run's L2 penalty on P[k, :d]. Each call is one pass.
``oracle.hessp(P, V, active) -> HV (K, D)``
    Hessian of run k's loss at P[k] times V[k]; one pass. Needed by ``newton`` and
    ``lr="auto"`` only.
``oracle.mean_weight(K) -> (K,)`` (optional)
    Each run's mean sample weight: a mini-batch of m rows is divided by m * mean_weight so its
    gradient is unbiased. Without it a batch is divided by its own weight.
``oracle.lipschitz(K, fit_intercept) -> (K,)`` (optional)
    An upper bound of the largest Hessian eigenvalue per run, for ``lr="auto"``.

``DenseOracle`` is the built-in one: an in-memory NumPy array answered by a backend's fused
one-pass kernels (C++, Numba or NumPy). Its ``lipschitz`` runs Lanczos on the Hessian at 0.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, cast

import numpy as np

from . import _backends
from . import _validate as v


class Oracle(Protocol):
    """The interface a driver needs (see the module docstring)."""

    n_samples: int
    n_features: int

    def loss_grad(self, P: np.ndarray, active: np.ndarray, rows: np.ndarray | None = None,
                  denominator: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        ...  # pragma: no cover

    def hessp(self, P: np.ndarray, V: np.ndarray, active: np.ndarray) -> np.ndarray:
        ...  # pragma: no cover


_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_DENOMINATOR = np.empty(0, dtype=np.float64)


class InMemoryOracle:
    """What every oracle over in-memory arrays shares: per-run alphas, mean weights and the
    exact finiteness test (the oracle holds X, SW and alpha)."""

    X: Any
    SW: np.ndarray
    alpha: np.ndarray

    def alphas(self, n_runs: int) -> np.ndarray:
        """Each run's L2 strength, (n_runs,)."""
        if self.alpha.size == n_runs:
            return self.alpha
        if self.alpha.size == 1:
            return np.full(n_runs, self.alpha[0])
        raise ValueError(f"alpha has {self.alpha.size} entries but {n_runs} runs were asked for")

    def check_finite(self) -> None:
        """Raises a ValueError naming the first NaN or infinity in X."""
        v.check_finite_X(self.X)

    def mean_weight(self, n_runs: int) -> np.ndarray:
        if self.SW.shape[1] == 0:
            return np.ones(n_runs)
        means = self.SW.mean(axis=0)
        return np.broadcast_to(means, (n_runs,)).copy() if means.size == 1 else means


class DenseOracle(InMemoryOracle):
    """The logistic loss of an in-memory array, answered by a backend's one-pass kernels.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        float32 or float64 (other dtypes are converted once); C-contiguous arrays are used
        without a copy.
    y : array-like of shape (n_samples,) or (n_samples, K)
        0/1 targets; a 2-D y gives each run its own column.
    sample_weight : array-like of shape (n_samples,) or (n_samples, K), optional
        Non-negative weights; a 2-D array gives each run its own weights.
    alpha : float or array-like of shape (K,), default 0.0
        L2 strength, per run when a sequence.
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
    n_threads : int, optional
        Threads of the compiled kernels (default: all cores).

    Examples
    --------
    >>> import numpy as np, gradstep as gs
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]); y = np.array([0, 1, 1])
    >>> oracle = gs.DenseOracle(X, y, backend="numpy")
    >>> loss, G = oracle.loss_grad(np.zeros((1, 3)), np.ones(1, np.uint8))
    >>> round(float(loss[0]), 6), G.round(4).tolist()
    (0.693147, [[-0.3333, 0.0, -0.1667]])
    """

    def __init__(self, X: Any, y: Any, *, sample_weight: Any = None, alpha: Any = 0.0,
                 backend: str = "auto", n_threads: int | None = None) -> None:
        built, _ = data_oracle(X, y, sample_weight=sample_weight, alpha=alpha, backend=backend,
                               n_threads=n_threads, labels=False)
        if type(built) is not DenseOracle:
            raise ValueError(f"DenseOracle takes a dense array; X is {type(X).__name__}: pass it "
                             "to gs.fit directly (it picks the oracle for its format)")
        self.__dict__.update(built.__dict__)

    @classmethod
    def from_validated(cls, X: np.ndarray, Y: np.ndarray, SW: np.ndarray, alpha: np.ndarray,
                       backend_name: str, module: Any, n_threads: int) -> DenseOracle:
        """An oracle over arrays already in the kernels' layout (gs.fit validates once)."""
        self = cls.__new__(cls)
        self._setup(X, Y, SW, alpha, backend_name, module, n_threads)
        return self

    def _setup(self, X, Y, SW, alpha, backend_name, module, n_threads) -> None:
        self.X, self.Y, self.SW = X, Y, SW
        self.alpha = np.asarray(alpha, dtype=np.float64).reshape(-1)
        self.backend = backend_name
        self.module = module
        self.n_threads = n_threads
        self.n_samples, self.n_features = (int(s) for s in X.shape)

    def loss_grad(self, P, active, rows=None, denominator=None):
        rows = _NO_ROWS if rows is None else rows
        denominator = _NO_DENOMINATOR if denominator is None else denominator
        result: tuple[np.ndarray, np.ndarray] = self.module.loss_grad(
            self.X, self.Y, self.SW, P, self.alphas(P.shape[0]), rows, active,
            self.n_threads, denominator, **self._kernel_options())
        return result

    def hessp(self, P, V, active):
        result: np.ndarray = self.module.hessp(
            self.X, self.SW, P, V, self.alphas(P.shape[0]), active, self.n_threads,
            **self._kernel_options())
        return result

    def _kernel_options(self) -> dict:
        """Keyword arguments of the next kernel call beyond the contract's (none here;
        CSROracle's check_rows)."""
        return {}

    def lipschitz(self, n_runs: int, fit_intercept: bool) -> np.ndarray:
        """Per run: the largest eigenvalue of X'SX / (4 sum s) (X with a ones column when the
        intercept is fitted) plus alpha, from Lanczos on the Hessian at 0, rounded up by the
        Ritz residual so that 1/L never overshoots; at most 10 passes over X."""
        n_weights = max(1, self.SW.shape[1])  # runs sharing their weights share the eigenvalue
        unpenalized = type(self).from_validated(self.X, self.Y, self.SW, np.zeros(1),
                                                self.backend, self.module, self.n_threads)
        top = lanczos_top_eigenvalue(unpenalized, n_weights, fit_intercept)
        if not np.all(np.isfinite(top)):
            self.check_finite()  # a NaN or inf in X: name it
            raise ValueError(
                "lr='auto' could not bound the curvature: X'X overflows (entries near 1e150 "
                "or larger); scale X (e.g. StandardScaler) or give lr as a number"
            )
        top = np.broadcast_to(top, (n_runs,)) if n_weights == 1 else top
        return np.asarray(top + self.alphas(n_runs), dtype=np.float64)


def data_oracle(X: Any, y: Any, *, sample_weight: Any, alpha: Any, backend: str,
                n_threads: int | None, labels: bool,
                finite: bool = True) -> tuple[Any, np.ndarray | None]:
    """The built-in oracle for the data format of X, after checking every input, and the two
    classes of a 1-D y when ``labels``. Each data format gradstep reads has its branch here
    (dense arrays: DenseOracle; SciPy sparse matrices and arrays: sparse.CSROracle, a CSR used
    without a copy, other formats converted to CSR once). ``finite=False`` leaves X's finiteness
    to the caller's first pass (``first_pass``), and on CSR with the C++ kernels its structure
    too (``CSROracle.structure_proven``). A dask array or DataFrame X gives a
    ``gradstep.dask.DaskOracle`` (y and sample_weight dask or NumPy; dask imported only then)."""
    if "dask" in sys.modules and hasattr(X, "__dask_graph__"):
        from .dask import dask_oracle

        return dask_oracle(X, y, sample_weight=sample_weight, alpha=alpha, backend=backend,
                           n_threads=n_threads, labels=labels, finite=finite)
    from . import sparse as _sparse  # here: gradstep.sparse builds on DenseOracle

    csr = _sparse.is_sparse(X)
    threads = v.check_n_threads(n_threads)
    if csr:
        name, module = _sparse.kernels(backend)
        # with finite=False the first pass proves X: the C++ kernels check its structure too
        structure = finite or not getattr(module, "CHECKS_ROWS", False)
        X = _sparse.check_csr(X, finite=finite, structure=structure, n_threads=threads)
    else:
        X = v.check_X(X, finite=finite)
    Y, classes = v.check_targets(y, X.shape[0], labels=labels, n_threads=threads)
    SW = v.check_sample_weight(sample_weight, X.shape[0])
    alphas = v.check_alpha(alpha)
    if csr:
        csr_oracle = cast(_sparse.CSROracle, _sparse.CSROracle.from_validated(
            X, Y, SW, alphas, name, module, threads))
        csr_oracle.structure_proven = structure
        return csr_oracle, classes
    name, module = _backends.get(backend)
    return DenseOracle.from_validated(X, Y, SW, alphas, name, module, threads), classes


def first_pass(oracle: Any, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """loss_grad of every run at P; when a result is not finite, the exact finiteness test of
    the data raises the ValueError that names the bad entry (a NaN or inf in X always shows up
    in the pass's sums, so a finite result proves X finite without a pass of its own)."""
    loss, G = oracle.loss_grad(P, np.ones(P.shape[0], np.uint8))
    if not (np.isfinite(loss).all() and np.isfinite(G).all()):
        check = getattr(oracle, "check_finite", None)
        if check is not None:
            check()
    return loss, G


def lanczos_top_eigenvalue(oracle: Any, n_runs: int, fit_intercept: bool,
                           max_passes: int = 10, rtol: float = 1e-3) -> np.ndarray:
    """An upper estimate of the largest eigenvalue of each run's Hessian at P = 0 (the oracle
    should carry no penalty), by Lanczos with full reorthogonalization; all runs share each pass.

    At P = 0 every sigmoid is 1/2, so the logistic Hessian is exactly X'SX / (4 sum s). The
    estimate is the top Ritz value plus its residual norm |beta_m s_m| (a Ritz value has an
    eigenvalue within its residual; with a random start the top one is the one found), and the
    iteration stops once that residual is below rtol of the value.
    """
    d = oracle.n_features
    D = d + 1
    size = D if fit_intercept else d
    P = np.zeros((n_runs, D))
    rng = np.random.default_rng(0)
    start = rng.standard_normal(size)
    estimate = np.zeros(n_runs)
    basis = np.zeros((n_runs, max_passes + 1, size))
    basis[:, 0] = start / np.linalg.norm(start)
    alphas = np.zeros((n_runs, max_passes))
    betas = np.zeros((n_runs, max_passes))
    done = np.zeros(n_runs, dtype=bool)
    for m in range(max_passes):
        V = np.zeros((n_runs, D))
        V[:, :size] = basis[:, m]
        HV = oracle.hessp(P, V, (~done).astype(np.uint8))[:, :size]
        for k in np.flatnonzero(~done):
            w = HV[k]
            if not np.isfinite(w).all():  # X'X overflows, or X is not finite: no bound
                estimate[k], done[k] = np.nan, True
                continue
            alphas[k, m] = float(w @ basis[k, m])
            Q = basis[k, : m + 1]
            w = w - Q.T @ (Q @ w)
            w = w - Q.T @ (Q @ w)  # twice is enough (Kahan / Parlett)
            betas[k, m] = float(np.linalg.norm(w))
            T = np.diag(alphas[k, : m + 1]) + np.diag(betas[k, :m], 1) + np.diag(betas[k, :m], -1)
            values, vectors = np.linalg.eigh(T)
            residual = abs(betas[k, m] * vectors[-1, -1])
            # + rounding: eigh and the products carry a few ulp of error
            estimate[k] = (values[-1] + residual) * (1.0 + 1e-12)
            invariant = betas[k, m] <= 1e-14 * max(abs(values[-1]), 1e-300)
            if residual <= rtol * values[-1] or invariant or m + 1 == max_passes:
                done[k] = True
            else:
                basis[k, m + 1] = w / betas[k, m]
        if done.all():
            break
    return estimate
