"""Sparse input: SciPy CSR matrices and arrays as an oracle (``CSROracle``).

``gs.fit``, ``gs.loss_and_grad``, ``gs.hessp`` and ``gs.lipschitz_constant`` take a SciPy sparse
X through ``oracle.data_oracle``, which builds a ``CSROracle`` here. A CSR matrix or array
(``csr_matrix``, ``csr_array``) with float32 or float64 data and int32 or int64 indices is used as
it is, WITHOUT a copy; its indices must be sorted and unique within each row (SciPy's canonical
format), and gradstep never sorts or changes a user's matrix: a non-canonical CSR is refused with
a ValueError that says how to make a canonical copy. Any other sparse format (CSC, COO, LIL, ...)
is converted to CSR once (a copy, then made canonical); CSR data of another real dtype is
converted to float64 once (indices shared).

The kernels: a dict backend -> module (``KERNELS``), each module with the functions of the CSR
kernel contract (``_backends/sparse_reference.py``): ``loss_grad`` and ``hessp`` with the dense
contract's signatures, X being the checked CSR matrix. ``backend="auto"`` or ``"cpp"`` takes the
first of C++ (when a ``_backends/sparse_cpp`` module exists), Numba, NumPy; ``oracle.backend``
says which ran ("cpp-csr", "numba-csr", "numpy-csr").
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from . import _validate as v
from .oracle import DenseOracle

# backend -> the module of its CSR kernels; "cpp" drops in as _backends/sparse_cpp.py
KERNELS = {
    "cpp": "._backends.sparse_cpp",
    "numba": "._backends.sparse_numba",
    "numpy": "._backends.sparse_reference",
}
ORDER = ("cpp", "numba", "numpy")  # what "auto" takes, fastest first
_loaded: dict[str, ModuleType] = {}
_why_missing: dict[str, str] = {}


def is_sparse(X: Any) -> bool:
    """Whether X is a SciPy sparse matrix or array (without importing SciPy: a sparse X means
    the user already did)."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and bool(sp.issparse(X))


def _load(name: str) -> ModuleType | None:
    if name in _loaded:
        return _loaded[name]
    if name in _why_missing:
        return None
    try:
        module = importlib.import_module(KERNELS[name], __package__)
    except ImportError as exc:  # no C++ CSR kernel yet, or numba is not installed
        _why_missing[name] = f"{exc}"
        return None
    _loaded[name] = module
    return module


def kernels(backend: str) -> tuple[str, ModuleType]:
    """(name, module) of the CSR kernels for a backend name; a clear ValueError when it cannot
    be had. "auto" and "cpp" take the fastest available (C++, else Numba, else NumPy)."""
    if backend not in ("auto",) + ORDER:
        raise ValueError(
            f"unknown backend {backend!r}; valid: 'auto', {', '.join(map(repr, ORDER))}"
        )
    candidates = ORDER if backend in ("auto", "cpp") else (backend,)
    for name in candidates:
        module = _load(name)
        if module is not None:
            return f"{name}-csr", module
    raise ValueError(
        f"backend {backend!r} has no sparse kernels here: {_why_missing[backend]}; "
        "use backend='auto' to take the fastest one that is available"
    )


# ---- checks ---------------------------------------------------------------------------------


def _structure_error(indptr: np.ndarray, indices: np.ndarray, n_cols: int,
                     n_threads: int) -> tuple[int, int]:
    """A compiled structure check (C++, on up to n_threads threads, else Numba: no
    temporaries), else NumPy's."""
    cpp = _load("cpp")
    if cpp is not None:
        code, row = cpp.structure_error(indptr, indices, n_cols, n_threads)
    else:
        module = _load("numba") or _load("numpy")
        assert module is not None
        code, row = module.structure_error(indptr, indices, n_cols)
    return int(code), int(row)


def _rebuilt(X: Any, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> Any:
    """A CSR of X's class (matrix or array) over these arrays, not copied (assigned after
    construction: SciPy's constructor may narrow int64 indices to int32, a copy)."""
    out = type(X)((data, indices, indptr), shape=X.shape, copy=False)
    out.data, out.indices, out.indptr = data, indices, indptr
    return out


def check_csr(X: Any, *, finite: bool = True, structure: bool = True,
              n_threads: int | None = None) -> Any:
    """A SciPy CSR matrix or array the kernels can trust, or a ValueError before any work.

    A CSR X with float32/float64 data, int32/int64 indices and indptr, its indices sorted and
    unique within each row, comes back as the SAME object (no copy, nothing modified). Other
    sparse formats are converted to CSR once (a new matrix, made canonical); other real dtypes
    of the data are converted to float64 once. Refused: a shape that is not 2-D or is empty,
    complex or non-numeric data, an indptr inconsistent with the shape (length, indptr[0] != 0,
    decreasing, indptr[-1] past the stored entries), column indices outside [0, n_features),
    unsorted or duplicate indices in a user's CSR (make a canonical copy: the message says how),
    and NaN or infinity among the stored values (unless ``finite=False``: then the caller proves
    finiteness from its first pass and calls ``CSROracle.check_finite`` when it is not).
    ``structure=False`` leaves out the O(nnz) check of the column indices (in range, sorted,
    unique) for a caller whose C++ kernels check each row just before reading by it (a
    ``CSROracle`` with ``structure_proven = False``); the O(1) checks of the shapes and of indptr's
    ends always run. int64 indices are supported throughout (the kernels index with them as they
    are).
    ``n_threads`` (default: every core) runs the compiled structure check's screen in parallel.
    """
    if not is_sparse(X):
        raise ValueError(f"X must be a SciPy sparse matrix or array here, got {type(X).__name__}")
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {shape}")
    n, d = shape
    if n == 0 or d == 0:
        raise ValueError(f"X is empty (shape {shape}); it needs at least one row and column")
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    converted = X.format != "csr"
    if converted:
        X = X.tocsr()  # a new matrix of our own: it may be made canonical in place
        X.sum_duplicates()  # sorts the indices and adds duplicates
    data, indices, indptr = X.data, X.indices, X.indptr
    if indices.ndim != 1 or indptr.ndim != 1 or data.ndim != 1:
        raise ValueError("X is not a valid CSR matrix: data, indices and indptr must be 1-D")
    if indptr.size != n + 1:
        raise ValueError(
            f"X is not a valid CSR matrix: indptr has {indptr.size} entries but X has {n} rows "
            f"(indptr needs n_rows + 1 = {n + 1})"
        )
    if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        raise ValueError(f"X's indices and indptr must be integers, got {indices.dtype} and "
                         f"{indptr.dtype}")
    if data.size != indices.size:
        raise ValueError(f"X is not a valid CSR matrix: {data.size} stored values but "
                         f"{indices.size} column indices")
    if int(indptr[0]) != 0 or int(indptr[-1]) > indices.size:
        raise ValueError(
            f"X is not a valid CSR matrix: indptr must start at 0 and end at most at the "
            f"number of stored entries ({indices.size}), got {int(indptr[0])} ... "
            f"{int(indptr[-1])}"
        )
    layout_ok = (data.dtype in (np.float32, np.float64)
                 and indices.dtype in (np.int32, np.int64) and indptr.dtype in (np.int32, np.int64)
                 and data.flags.c_contiguous and indices.flags.c_contiguous
                 and indptr.flags.c_contiguous)
    if not layout_ok:  # data widened to float64 once; index arrays only when they must be
        data = np.ascontiguousarray(
            data, dtype=data.dtype if data.dtype in (np.float32, np.float64) else np.float64)
        indices = np.ascontiguousarray(
            indices, dtype=indices.dtype if indices.dtype in (np.int32, np.int64) else np.int64)
        indptr = np.ascontiguousarray(
            indptr, dtype=indptr.dtype if indptr.dtype in (np.int32, np.int64) else np.int64)
        X = _rebuilt(X, data, indices, indptr)
    if structure:
        _raise_structure_error(indptr, indices, d, v.check_n_threads(n_threads))
    if finite:
        v._finite_check(data[: int(indptr[-1])], "X")
    return X


def _raise_structure_error(indptr: np.ndarray, indices: np.ndarray, d: int,
                           n_threads: int) -> None:
    """The ValueError naming the first structural fault of a CSR's indptr and indices, if any."""
    code, row = _structure_error(indptr, indices, d, n_threads)
    from ._backends.sparse_reference import INDEX_OUT_OF_RANGE, INDPTR_DECREASES, NOT_CANONICAL

    if code == INDPTR_DECREASES:
        raise ValueError(f"X is not a valid CSR matrix: indptr decreases at row {row}")
    if code == INDEX_OUT_OF_RANGE:
        raise ValueError(
            f"X is not a valid CSR matrix: row {row} has a column index outside [0, {d}) "
            "(negative, or past n_features)"
        )
    if code == NOT_CANONICAL:
        raise ValueError(
            f"X has unsorted or duplicate column indices (first in row {row}); gradstep never "
            "modifies your matrix: pass a canonical copy, X = X.copy(); X.sum_duplicates() "
            "(which sorts the indices and adds duplicates)"
        )


# ---- the oracle -----------------------------------------------------------------------------


class ProvesStructure:
    """What the CSR oracles (CSROracle, multinomial.CSRMultinomialOracle) share about X's index
    structure: whether it is proven, the kernel option that checks rows until it is, and the
    named error when a kernel refuses a row. Needs X, module, n_features and n_threads, and
    comes first among the bases: its loss_grad and hessp wrap the oracle's."""

    # Whether X's column indices are proven in range, sorted and unique (check_csr's structure
    # check, or a full pass of kernels that check rows). Until then every pass asks the C++
    # kernels to check each group of rows just before reading by it (~10 % of that pass, where
    # check_csr's own pass over the indices is a second read of them: the public one-pass calls
    # and a fit's first pass read X once); kernels that cannot get the exact check first. False
    # unless set: an oracle made by from_validated (a copy with other alpha, say) proves it
    # again rather than trust it.
    structure_proven = False
    X: Any
    module: Any
    n_features: int
    n_threads: int

    def _kernel_options(self) -> dict:
        """check_rows=True while X's structure is not proven and the kernels can check rows
        (CHECKS_ROWS); kernels that cannot get the exact check here, once."""
        if self.structure_proven:
            return {}
        if getattr(self.module, "CHECKS_ROWS", False):
            return {"check_rows": True}
        _raise_structure_error(self.X.indptr, self.X.indices, self.n_features, self.n_threads)
        self.structure_proven = True
        return {}

    @contextlib.contextmanager
    def _proving_structure(self, rows: Any = None) -> Iterator[None]:
        """Around a kernel call over ``rows`` (None or empty: all): a row the kernels refuse
        gets the exact check's ValueError, which names the fault; a call over all rows that
        returns proves the structure (a subset of the rows proves those rows only)."""
        try:
            yield
        except ValueError:
            if not self.structure_proven:
                _raise_structure_error(self.X.indptr, self.X.indices, self.n_features,
                                       self.n_threads)
            raise
        if rows is None or len(rows) == 0:
            self.structure_proven = True

    # the oracle's own loss_grad and hessp (next in the method order), inside _proving_structure
    def loss_grad(self, P, active, rows=None, denominator=None):
        with self._proving_structure(rows):
            return super().loss_grad(P, active, rows, denominator)

    def hessp(self, P, V, active):
        with self._proving_structure():
            return super().hessp(P, V, active)


class CSROracle(ProvesStructure, DenseOracle):
    """The logistic loss of a SciPy CSR matrix, answered by one-pass CSR kernels: a
    DenseOracle (see ``gradstep.oracle``) whose kernels module and finiteness test are the
    CSR ones.

    Parameters
    ----------
    X : scipy.sparse matrix or array of shape (n_samples, n_features)
        A canonical CSR (``csr_matrix``/``csr_array``, float32 or float64 data, int32 or int64
        indices) is used WITHOUT a copy and never modified; other sparse formats are converted
        to CSR once (see ``check_csr`` for what is refused).
    y : array-like of shape (n_samples,) or (n_samples, K)
        0/1 targets; a 2-D y gives each run its own column.
    sample_weight : array-like of shape (n_samples,) or (n_samples, K), optional
    alpha : float or array-like of shape (K,), default 0.0
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        "auto" and "cpp" take the fastest CSR kernels available; ``oracle.backend`` names them.
    n_threads : int, optional
        Threads of the compiled kernels (default: all cores); the bits do not depend on it.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from gradstep.sparse import CSROracle
    >>> X = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])); y = np.array([0, 1, 1])
    >>> oracle = CSROracle(X, y, backend="numpy")
    >>> loss, G = oracle.loss_grad(np.zeros((1, 3)), np.ones(1, np.uint8))
    >>> oracle.backend, round(float(loss[0]), 6), G.round(4).tolist()
    ('numpy-csr', 0.693147, [[-0.3333, 0.0, -0.1667]])
    """

    def __init__(self, X: Any, y: Any, sample_weight: Any = None, alpha: Any = 0.0,
                 backend: str = "auto", n_threads: int | None = None) -> None:
        threads = v.check_n_threads(n_threads)
        X = check_csr(X, n_threads=threads)
        Y, _ = v.check_targets(y, X.shape[0], labels=False)
        SW = v.check_sample_weight(sample_weight, X.shape[0])
        alphas = v.check_alpha(alpha)
        name, module = kernels(backend)
        self._setup(X, Y, SW, alphas, name, module, threads)
        self.structure_proven = True

    def __repr__(self) -> str:
        return (f"CSROracle({self.n_samples} x {self.n_features}, nnz={int(self.X.indptr[-1])}, "
                f"{self.X.data.dtype}, backend={self.backend!r})")

    def check_finite(self) -> None:
        """Raises a ValueError naming the first NaN or infinity among X's stored values."""
        nnz = int(self.X.indptr[-1])
        data = self.X.data[:nnz]
        bad = ~np.isfinite(data)
        if bad.any():
            j = int(np.argmax(bad))
            row = int(np.searchsorted(self.X.indptr, j, side="right")) - 1
            raise ValueError(
                f"X contains NaN or infinity (first at row {row}, column "
                f"{int(self.X.indices[j])}: {data[j]}); remove or impute those entries before "
                "fitting"
            )

