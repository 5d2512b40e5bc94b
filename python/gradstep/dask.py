"""Dask arrays as an oracle: fit data that lives on a dask cluster (``DaskOracle``).

``gs.fit``, ``gs.loss_and_grad`` and ``gs.hessp`` take a ``dask.array.Array`` X (or a dask
DataFrame, read with ``.to_dask_array(lengths=True)``) through ``oracle.data_oracle``, which
builds a ``DaskOracle`` here; y and sample_weight may be dask or NumPy arrays. The work runs on
the active ``distributed.Client`` (``distributed.get_client()``), or on dask's default scheduler
in this process when there is none. Install with ``pip install "gradstep[dask]"``; every worker
needs gradstep installed too (the kernels run there).

How the work is split
    X is split by rows: each row chunk of X, with the same rows of y and sample_weight, is one
    task per pass. A chunking across columns is rechunked once to whole rows
    (``X.rechunk({1: -1})``), since a kernel needs every feature of its rows. When X, y and the
    weights fit in half of the workers' memory they are persisted there once (``client.persist``;
    an X the caller has persisted already is used as it is), the rows of y and of the weights
    computed beside their X chunk, on the same worker; otherwise they stay lazy and every pass
    streams each chunk from its source. A pass sends P (K x D parameters: small) to every
    chunk, runs gradstep's compiled kernel (``_backends.get(backend)``: the same
    ``loss_grad`` / ``hessp`` as in memory) on the worker that holds the chunk, so no data
    moves, and brings back per-chunk UNNORMALIZED sums (K x (D + 1) floats a chunk: the loss
    sum and the gradient sums, computed with ``denominator = 1``; Hessian products are
    multiplied back by the chunk's weight). The client adds them in a fixed pairwise tree over
    the chunks in row order, so a result depends on the chunking only, never on which worker
    answered first, divides by the total weight and adds the L2 penalty once.

Faults and interrupts
    A worker that dies loses nothing: dask recomputes its chunks from the graph and reruns the
    pass's tasks, and the result is the same (the sums do not depend on where a chunk ran).
    Ctrl-C during a pass cancels the pass's futures and re-raises KeyboardInterrupt.

Not supported: mini-batches (``batch_size``): each batch would be a round trip to the cluster
for a few rows. ``loss_grad`` raises a ValueError on the first batch, before any update.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np

from . import _backends
from . import _validate as v

_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_ROWS.flags.writeable = False

# X, y and the weights are persisted when they take at most this fraction of the workers' memory
PERSIST_FRACTION = 0.5
# P (or V) larger than this is scattered to every worker once per pass instead of being sent
# with each chunk's task
SCATTER_BYTES = 1 << 20


def is_dask_collection(X: Any) -> bool:
    """Whether X is a dask collection (without importing dask: a dask X means the user did)."""
    return "dask" in sys.modules and hasattr(X, "__dask_graph__")


def current_client() -> Any:
    """The active ``distributed.Client`` (``distributed.get_client()``), or None when there is
    none (then dask's default scheduler runs the work in this process)."""
    try:
        import distributed
    except ImportError:
        return None
    try:
        return distributed.get_client()
    except ValueError:  # no client has been started
        return None


# ---- the work on one chunk (runs on a worker) ---------------------------------------------


def _unit_weights(x: np.ndarray, sw: np.ndarray | None) -> np.ndarray:
    return np.empty((x.shape[0], 0)) if sw is None else np.ascontiguousarray(sw)


def chunk_loss_grad(x, y, sw, P, active, backend, n_threads) -> np.ndarray:
    """Run k's unnormalized sums over one chunk, (K, D + 1): the weighted loss sum in column 0,
    the gradient sums after it; no penalty (alpha 0). The kernel divides by ``denominator`` =
    1, so these are the sums themselves."""
    _, module = _backends.get(backend)
    x = np.ascontiguousarray(x)
    n_runs = P.shape[0]
    loss, G = module.loss_grad(x, np.ascontiguousarray(y), _unit_weights(x, sw), P,
                               np.zeros(n_runs), _NO_ROWS, active, n_threads, np.ones(n_runs))
    out = np.empty((n_runs, P.shape[1] + 1))
    out[:, 0] = loss
    out[:, 1:] = G
    return out


def chunk_hessp(x, sw, P, V, active, backend, n_threads) -> np.ndarray:
    """Run k's unnormalized Hessian-vector sums over one chunk, (K, D): the kernel's product
    (normalized by the chunk's weight of run k) times that weight; no penalty."""
    _, module = _backends.get(backend)
    x = np.ascontiguousarray(x)
    sw = _unit_weights(x, sw)
    n_runs = P.shape[0]
    HV = module.hessp(x, sw, P, V, np.zeros(n_runs), active, n_threads)
    if sw.shape[1] == 0:
        weight = np.full(n_runs, float(x.shape[0]))
    else:
        sums = sw.sum(axis=0)
        weight = np.broadcast_to(sums, (n_runs,)) if sums.size == 1 else sums
    return np.asarray(HV * weight[:, None])


def chunk_first_bad(x) -> tuple[int, int, float] | None:
    """(row within the chunk, column, value) of the chunk's first NaN or infinity, or None."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    row, col = np.argwhere(bad)[0]
    return int(row), int(col), float(x[row, col])


def tree_sum(parts: list) -> Any:
    """The sum of the parts in a fixed pairwise tree (neighbours first, in order): the same
    bits for the same list, whatever order the parts arrived in."""
    if not parts:
        raise ValueError("nothing to sum")
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


# ---- checks ----------------------------------------------------------------------------------


def _as_dask_array(a: Any, name: str) -> Any:
    """A dask Array from a dask Array, DataFrame or Series (rows of known length)."""
    import dask.array as da

    if isinstance(a, da.Array):
        return a
    if hasattr(a, "to_dask_array"):  # a dask DataFrame or Series
        return a.to_dask_array(lengths=True)
    raise ValueError(f"{name} is a dask {type(a).__name__}; gradstep takes a dask.array.Array "
                     "or a dask DataFrame")


def check_dask_X(X: Any) -> Any:
    """X as a 2-D float32/float64 dask array chunked by rows only, or a ValueError."""
    X = _as_dask_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if any(np.isnan(c) for c in X.chunks[0]) or np.isnan(X.shape[1]):
        raise ValueError(
            "X has unknown chunk sizes (a dask DataFrame's .to_dask_array() without "
            "lengths=True, or a boolean selection); pass df.to_dask_array(lengths=True) or "
            "X.compute_chunk_sizes()"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape}); it needs at least one row and column")
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if len(X.chunks[1]) > 1:  # a kernel needs every feature of its rows
        X = X.rechunk({1: -1})
    return X


def _row_parts(a: Any, X: Any) -> list:
    """The rows of each of X's row chunks of an (n, k) NumPy array (slices: views) or dask array
    (rechunked to X's rows: one Delayed a chunk)."""
    if isinstance(a, np.ndarray):
        starts = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
        return [a[start:stop] for start, stop in zip(starts[:-1], starts[1:])]
    return list(a.rechunk((X.chunks[0], -1)).to_delayed().ravel())


def beside(x: Any, part: Any) -> np.ndarray:
    """``part`` (rows of y or of the weights), computed where its X chunk ``x`` lives: a task
    that depends on the chunk is placed with it, so a pass moves no data."""
    return np.ascontiguousarray(part, dtype=np.float64)


def _check_dask_targets(y: Any, n: int, labels: bool) -> tuple[Any, np.ndarray | None]:
    """(n, Ky) float64 dask 0/1 targets and the classes of a 1-D y (as ``check_targets``)."""
    import dask
    import dask.array as da

    y = _as_dask_array(y, "y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D (n_samples,) or 2-D (n_samples, n_runs), got {y.shape}")
    if any(np.isnan(c) for c in y.chunks[0]):
        raise ValueError("y has unknown chunk sizes; pass series.to_dask_array(lengths=True)")
    if y.shape[0] != n:
        raise ValueError(
            f"y has {y.shape[0]} rows but X has {n}; they must have the same number of samples"
        )
    if y.dtype.kind not in "biuf" and not (labels and y.ndim == 1):
        raise ValueError(f"y must be 0/1 numbers here, got dtype {y.dtype}")
    finite = da.isfinite(y).all() if y.dtype.kind == "f" else True
    if y.ndim == 1 and labels:
        classes, is_finite = dask.compute(da.unique(y), finite)
        if not is_finite:
            raise ValueError("y contains NaN or infinity; remove or impute those entries "
                             "before fitting")
        if classes.size != 2:
            raise ValueError(
                f"y must have exactly two classes for binary logistic regression, got "
                f"{classes.size} ({classes[:5].tolist()}{'...' if classes.size > 5 else ''}); "
                "for several classes use a 2-D 0/1 target (one column per run)"
            )
        return (y == classes[1]).astype(np.float64).reshape(n, 1), classes
    ok, is_finite = dask.compute(da.isin(y, [0, 1]).all(), finite)
    if not is_finite:
        raise ValueError("y contains NaN or infinity; remove or impute those entries before "
                         "fitting")
    if not ok:
        raise ValueError("y must contain only 0 and 1 (one 0/1 column per run when 2-D)")
    return y.astype(np.float64).reshape(n, -1), None


def _check_dask_weights(sample_weight: Any, n: int) -> Any:
    """(n, Ks) float64 dask weights of the right shape; their values (non-negative, finite,
    each column with a positive sum) are checked by ``check_weight_values`` in the oracle's
    first pass over them, which also takes their sums."""
    sw = _as_dask_array(sample_weight, "sample_weight")
    if sw.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight must hold real numbers, got dtype {sw.dtype}")
    if sw.ndim not in (1, 2) or sw.shape[0] != n or (sw.ndim == 2 and sw.shape[1] == 0):
        raise ValueError(
            f"sample_weight must have shape ({n},) or ({n}, n_runs) to match X, got {sw.shape}"
        )
    if any(np.isnan(c) for c in sw.chunks[0]):
        raise ValueError("sample_weight has unknown chunk sizes; pass "
                         "series.to_dask_array(lengths=True)")
    return sw.astype(np.float64).reshape(n, -1)


def chunk_weight(sw) -> tuple[np.ndarray, bool, bool]:
    """The chunk's weight sum per weight column, whether its weights are all finite, whether
    any is negative."""
    return (np.asarray(sw.sum(axis=0), dtype=np.float64), bool(np.isfinite(sw).all()),
            bool((sw < 0).any()))


def check_weight_values(parts: list) -> np.ndarray:
    """The weights' column sums from ``chunk_weight``'s per-chunk answers (added in the fixed
    tree), after the checks of ``_validate.check_sample_weight``."""
    if not all(finite for _, finite, _ in parts):
        raise ValueError(
            "sample_weight contains NaN or infinity; remove or impute those entries before "
            "fitting"
        )
    if any(negative for _, _, negative in parts):
        raise ValueError("sample_weight must be >= 0; negative weights are not supported")
    sums = tree_sum([p[0] for p in parts])
    if (sums <= 0).any():
        which = "" if sums.size == 1 else f" (column {int(np.argmax(sums <= 0))})"
        raise ValueError(
            f"sample_weight sums to zero{which}; at least one sample needs a positive weight"
        )
    return np.asarray(sums)


def dask_oracle(X: Any, y: Any, *, sample_weight: Any, alpha: Any, backend: str,
                n_threads: int | None, labels: bool, finite: bool = True,
                persist: bool | None = None) -> tuple[DaskOracle, np.ndarray | None]:
    """``data_oracle``'s branch for dask input: the checked DaskOracle and the classes of a 1-D
    y when ``labels``. ``finite=True`` checks X for NaN and infinity now (one pass)."""
    X = check_dask_X(X)
    n = int(X.shape[0])
    if is_dask_collection(y):
        Y, classes = _check_dask_targets(y, n, labels)
    else:
        Y, classes = v.check_targets(y, n, labels=labels)
    if sample_weight is None:
        SW = None
    elif is_dask_collection(sample_weight):
        SW = _check_dask_weights(sample_weight, n)
    else:
        SW = v.check_sample_weight(sample_weight, n)
    alphas = v.check_alpha(alpha)
    threads = 1 if n_threads is None else v.check_n_threads(n_threads)
    name, _ = _backends.get(backend)
    oracle = DaskOracle._build(X, Y, SW, alphas, name, threads, persist)
    if finite:
        oracle.check_finite()
    return oracle, classes


def _persisted(a: Any) -> bool:
    """Whether every chunk of a is a future held on the cluster (a persisted array)."""
    from dask.core import flatten
    from distributed import futures_of

    held = {f.key for f in futures_of(a)}
    return all(k in held for k in flatten(a.__dask_keys__()))


# ---- the oracle -----------------------------------------------------------------------------


class DaskOracle:
    """The logistic loss of a dask array on a dask cluster; the interface of ``DenseOracle``
    (see ``gradstep.oracle`` and this module's docstring for how the work is split).

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features), or a dask DataFrame
        Chunked by rows (a chunking across columns is rechunked once to whole rows); float32
        or float64 (other real dtypes are converted, lazily, to float64).
    y : dask or NumPy array of shape (n_samples,) or (n_samples, K)
        0/1 targets; a 2-D y gives each run its own column.
    sample_weight : dask or NumPy array of shape (n_samples,) or (n_samples, K), optional
    alpha : float or array-like of shape (K,), default 0.0
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        Resolved here; every worker runs that backend's kernels (``oracle.backend`` names it,
        e.g. "cpp-dask").
    n_threads : int, optional
        Kernel threads per chunk task. Default 1: dask already runs one task per worker thread,
        so with at least as many chunks as worker threads every core is busy; give the cores
        per worker thread when workers have one thread on a many-core machine. The bits do not
        depend on it.
    persist : bool, optional
        Persist X, y and the weights on the workers (True), stream them from their source each
        pass (False), or decide by size (None: persist when they fit in half of the workers'
        memory).

    Examples
    --------
    Skipped by the doctests (dask is an optional dependency); tests/test_dask.py runs the same.

    >>> import numpy as np, dask.array as da  # doctest: +SKIP
    >>> from gradstep.dask import DaskOracle
    >>> X = da.from_array(np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
    ...                   chunks=(2, 2))  # doctest: +SKIP
    >>> oracle = DaskOracle(X, np.array([0, 1, 1]), backend="numpy")  # doctest: +SKIP
    >>> loss, G = oracle.loss_grad(np.zeros((1, 3)), np.ones(1, np.uint8))  # doctest: +SKIP
    >>> oracle.backend, round(float(loss[0]), 6), G.round(4).tolist()  # doctest: +SKIP
    ('numpy-dask', 0.693147, [[-0.3333, 0.0, -0.1667]])
    """

    client: Any  # the distributed.Client, or None: dask's default scheduler
    X: Any  # dask arrays: X (n, d), Y (n, Ky), SW (n, Ks) (Ks = 0: unit weights)
    Y: Any
    SW: Any
    alpha: np.ndarray
    backend: str  # "<kernel backend>-dask"
    kernel_backend: str  # what the workers run: "cpp", "numba" or "numpy"
    n_threads: int
    n_samples: int
    n_features: int
    n_chunks: int
    persisted: bool
    row_starts: np.ndarray  # (n_chunks + 1,) the first row of each chunk, then n
    weight: np.ndarray  # (max(1, Ks),) each weight column's total
    n_weight_columns: int
    _on_workers: bool
    _xs: list
    _ys: list
    _sws: list

    def __init__(self, X: Any, y: Any, sample_weight: Any = None, alpha: Any = 0.0,
                 backend: str = "auto", n_threads: int | None = None,
                 persist: bool | None = None) -> None:
        built, _ = dask_oracle(X, y, sample_weight=sample_weight, alpha=alpha, backend=backend,
                               n_threads=n_threads, labels=False, persist=persist)
        self.__dict__.update(built.__dict__)

    @classmethod
    def _build(cls, X, Y, SW, alpha, kernel_backend, n_threads, persist) -> DaskOracle:
        self = cls.__new__(cls)
        self.client = current_client()
        self.alpha = np.asarray(alpha, dtype=np.float64).reshape(-1)
        self.kernel_backend = kernel_backend
        self.backend = f"{kernel_backend}-dask"
        self.n_threads = n_threads
        self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        n_weights = 0 if SW is None else int(SW.shape[1])
        if persist is None:
            persist = self._fits(X, Y, SW)
        self.persisted = bool(persist)
        self._on_workers = self.client is not None and self.persisted
        self.row_starts = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
        self._xs, self._ys, self._sws = self._place(X, Y, SW)
        self.n_chunks = len(self._xs)
        # the arrays (NumPy or dask) for their shapes: api._check_runs reads Y.shape[1] and
        # SW.shape[1], an (n, 0) stand-in for unit weights
        self.X, self.Y = X, Y
        self.SW = SW if SW is not None else np.empty((self.n_samples, 0))
        # (max(1, Ks),): each weight column's total (unit weights: the row count)
        self.weight = (check_weight_values(self._map(chunk_weight, [self._sws]))
                       if SW is not None else np.array([float(self.n_samples)]))
        self.n_weight_columns = n_weights
        return self

    # ---- where the chunks live ---------------------------------------------------------------
    def _fits(self, X, Y, SW) -> bool:
        nbytes = X.nbytes + Y.nbytes + (0 if SW is None else SW.nbytes)
        if self.client is None:
            try:
                import psutil

                memory = psutil.virtual_memory().available
            except ImportError:  # pragma: no cover - psutil comes with distributed
                return True
        else:
            try:  # every worker (distributed >= 2025 lists only a few by default)
                info = self.client.scheduler_info(n_workers=-1)
            except TypeError:  # older distributed: all of them
                info = self.client.scheduler_info()
            workers = info["workers"].values()
            limits = [w.get("memory_limit") or 0 for w in workers]
            if not limits or any(limit <= 0 for limit in limits):
                return True  # workers without a memory limit: dask spills to disk if needed
            memory = sum(limits)
        return bool(nbytes <= PERSIST_FRACTION * memory)

    def _place(self, X, Y, SW) -> tuple[list, list, list]:
        """Per row chunk, in row order, what each task reads: X's chunk, y's rows and the
        weights' rows (None: unit weights), as futures on the cluster (persisted), or as Delayed
        objects and NumPy slices (computed in each pass).

        Persisted on a cluster, X is persisted as it is (an X the caller persisted is used as it
        is, no second copy) and the rows of y and of the weights are computed BESIDE their X
        chunk (``beside``: a task that depends on the chunk runs where it lives), so a pass
        moves no data; every one of them is a task of the graph, so a lost worker's chunks are
        computed again."""
        import dask

        ys, sws = _row_parts(Y, X), (None if SW is None else _row_parts(SW, X))
        if not self.persisted:
            return list(X.to_delayed().ravel()), ys, sws or [None] * len(ys)
        if self.client is None:  # dask's default scheduler: in this process's memory
            (X,) = dask.persist(X)
            ys, sws = dask.persist(ys, sws)
            return list(X.to_delayed().ravel()), ys, sws or [None] * len(ys)
        from distributed import futures_of

        client = self.client
        if not _persisted(X):
            X = client.persist(X)
        held = {f.key: f for f in futures_of(X)}
        xs = [held[k[0]] for k in X.__dask_keys__()]
        call = dask.delayed(beside, pure=False)
        ys = client.compute([call(x, part) for x, part in zip(xs, ys)])
        sws = ([None] * len(xs) if sws is None
               else client.compute([call(x, part) for x, part in zip(xs, sws)]))
        return xs, ys, sws

    def _map(self, func, columns: list, **common) -> list:
        """func(*(c[i] for c in columns), **common) for every chunk i, on the cluster (or the
        default scheduler), sent as ONE graph; the results in chunk order. Any exception,
        KeyboardInterrupt included, cancels the pass's futures before it propagates."""
        if not self._on_workers:
            import dask

            call = dask.delayed(func, pure=False)
            tasks = [call(*args, **common) for args in zip(*columns)]
            if self.client is None:
                return list(dask.compute(*tasks))
        client = self.client
        futures: list = []
        try:
            if self._on_workers:
                futures = client.map(func, *columns, pure=False, **common)
            else:
                futures = client.compute(tasks)
            return list(client.gather(futures))
        except BaseException:
            if futures:
                client.cancel(futures)
            raise

    def _broadcast(self, A: np.ndarray) -> Any:
        """A (K, D) array as each task's argument: itself when small, else scattered to every
        worker once (so a pass sends it once per worker, not once per chunk)."""
        if self.client is None or A.nbytes <= SCATTER_BYTES:
            return A
        return self.client.scatter(A, broadcast=True, hash=False)

    # ---- the oracle interface ------------------------------------------------------------------
    def alphas(self, n_runs: int) -> np.ndarray:
        """Each run's L2 strength, (n_runs,)."""
        if self.alpha.size == n_runs:
            return self.alpha
        if self.alpha.size == 1:
            return np.full(n_runs, self.alpha[0])
        raise ValueError(f"alpha has {self.alpha.size} entries but {n_runs} runs were asked for")

    def _totals(self, n_runs: int) -> np.ndarray:
        return np.broadcast_to(self.weight, (n_runs,)).copy() if self.weight.size == 1 \
            else self.weight.copy()

    def loss_grad(self, P, active, rows=None, denominator=None):
        if rows is not None:
            raise ValueError(
                "mini-batches (batch_size) are not supported with a dask X: each batch would be "
                "a round trip to the cluster for a few rows. Fit full batch (drop batch_size; "
                "'lbfgs' or 'newton' need the fewest passes), or bring X into memory "
                "(X.compute()) for a mini-batch fit"
            )
        P = np.ascontiguousarray(P, dtype=np.float64)
        active = np.ascontiguousarray(active, dtype=np.uint8)
        n_runs, D = P.shape
        d = D - 1
        at = self._broadcast(P)
        parts = self._map(chunk_loss_grad, [self._xs, self._ys, self._sws], P=at, active=active,
                          backend=self.kernel_backend, n_threads=self.n_threads)
        sums = tree_sum(parts)
        divisor = self._totals(n_runs) if denominator is None or np.size(denominator) == 0 \
            else np.asarray(denominator, dtype=np.float64).reshape(n_runs)
        loss, G = np.zeros(n_runs), np.zeros((n_runs, D))
        alpha = self.alphas(n_runs)
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported, not warned
            for k in np.flatnonzero(active):
                if divisor[k] == 0.0:  # the kernel's rule: a run whose divisor is 0 is zeros
                    continue
                loss[k] = sums[k, 0] / divisor[k]
                G[k] = sums[k, 1:] / divisor[k]
                if alpha[k] != 0.0:
                    w = P[k, :d]
                    loss[k] += 0.5 * alpha[k] * (w @ w)
                    G[k, :d] += alpha[k] * w
        return loss, G

    def hessp(self, P, V, active):
        P = np.ascontiguousarray(P, dtype=np.float64)
        V = np.ascontiguousarray(V, dtype=np.float64)
        active = np.ascontiguousarray(active, dtype=np.uint8)
        n_runs, D = P.shape
        d = D - 1
        at, vec = self._broadcast(P), self._broadcast(V)
        parts = self._map(chunk_hessp, [self._xs, self._sws], P=at, V=vec, active=active,
                          backend=self.kernel_backend, n_threads=self.n_threads)
        sums = tree_sum(parts)
        totals = self._totals(n_runs)
        alpha = self.alphas(n_runs)
        HV = np.zeros((n_runs, D))
        with np.errstate(over="ignore", invalid="ignore"):
            for k in np.flatnonzero(active):
                if totals[k] == 0.0:
                    continue
                HV[k] = sums[k] / totals[k]
                HV[k, :d] += alpha[k] * V[k, :d]
        return HV

    def check_finite(self) -> None:
        """Raises a ValueError naming the first NaN or infinity in X and the row range of the
        chunk that holds it (one pass)."""
        found = self._map(chunk_first_bad, [self._xs])
        for i, bad in enumerate(found):
            if bad is not None:
                row, col, value = bad
                start, stop = int(self.row_starts[i]), int(self.row_starts[i + 1])
                raise ValueError(
                    f"X contains NaN or infinity (first at row {start + row}, column {col}: "
                    f"{value}, in chunk {i} of rows {start}-{stop - 1}); remove or impute those "
                    "entries before fitting"
                )

    def mean_weight(self, n_runs: int) -> np.ndarray:
        """Each run's mean sample weight, (n_runs,)."""
        return self._totals(n_runs) / self.n_samples

    def lipschitz(self, n_runs: int, fit_intercept: bool) -> np.ndarray:
        """Per run: the largest eigenvalue of X'SX / (4 sum s) (with a ones column when the
        intercept is fitted) plus alpha, by ``oracle.lanczos_top_eigenvalue`` on the Hessian at
        0 (as DenseOracle.lipschitz); at most 10 passes over the chunks."""
        from .oracle import lanczos_top_eigenvalue

        n_weights = max(1, self.n_weight_columns)  # runs sharing weights share the eigenvalue
        unpenalized = copy.copy(self)
        unpenalized.alpha = np.zeros(1)
        top = lanczos_top_eigenvalue(unpenalized, n_weights, fit_intercept)
        if not np.all(np.isfinite(top)):
            self.check_finite()  # a NaN or inf in X: name it
            raise ValueError(
                "lr='auto' could not bound the curvature: X'X overflows (entries near 1e150 "
                "or larger); scale X or give lr as a number"
            )
        top = np.broadcast_to(top, (n_runs,)) if n_weights == 1 else top
        return np.asarray(top + self.alphas(n_runs), dtype=np.float64)

    def __repr__(self) -> str:
        where = "persisted" if self.persisted else "lazy"
        return (f"DaskOracle({self.n_samples} x {self.n_features}, {self.n_chunks} row chunks, "
                f"{where}, {self.X.dtype}, backend={self.backend!r})")
