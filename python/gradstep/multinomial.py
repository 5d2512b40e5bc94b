"""The multinomial (softmax) loss as an oracle: C classes, one weight vector and intercept each.

The mean softmax cross-entropy plus (alpha/2)||W||^2 over the C x d weights (never the
intercepts). A run's parameter vector holds the C rows (w_c, b_c) one after the other, so every
driver and rule works on it unchanged; ``split`` and ``pack`` convert to and from (coef (C, d),
intercept (C,)). The kernels are ``_backends/softmax_reference.py`` (the specification),
``_backends/softmax_cpp.py`` ("cpp", and "auto" where the compiled core is there) and
``_backends/softmax_numba.py`` ("numba"); ``oracle.backend`` says which ran. A CSR X gets
``CSRMultinomialOracle``: the C++ or Numba CSR kernels (one pass), or the NumPy kernels on SciPy's
sparse products; never densified.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backends
from . import _validate as v
from .oracle import DenseOracle, InMemoryOracle, lanczos_top_eigenvalue
from .sparse import ProvesStructure

_NO_ROWS = np.empty(0, dtype=np.int64)


def _kernels(backend: str) -> tuple[str, Any]:
    """(name, module) of the softmax kernels for a backend request: C++ for "cpp" (and "auto"
    where the core is there), else Numba where it is installed, else NumPy."""
    name, _ = _backends.get(backend)
    if name == "cpp":
        from ._backends import softmax_cpp

        return "cpp-softmax", softmax_cpp
    if name != "numpy" and _backends.available()["numba"]:
        from ._backends import softmax_numba

        return "numba-softmax", softmax_numba
    from ._backends import softmax_reference

    return "numpy-softmax", softmax_reference


class MultinomialOracle(InMemoryOracle):
    """The multinomial logistic loss of an in-memory array (see the module docstring).

    Built by ``gs.fit(..., loss="multinomial")``; the oracle contract is gradstep.oracle's,
    with ``n_params = C (d + 1)`` parameters per run.
    """

    def __init__(self, X: np.ndarray, labels: np.ndarray, SW: np.ndarray, alpha: np.ndarray,
                 n_classes: int, backend: str, n_threads: int, fit_intercept: bool = True):
        self.X, self.labels, self.SW = X, labels, SW
        self.alpha = np.asarray(alpha, dtype=np.float64).reshape(-1)
        self.n_classes = int(n_classes)
        self.backend, self.module = _kernels(backend)
        self.requested_backend = backend
        self.n_threads = n_threads
        self.fit_intercept = fit_intercept
        self.n_samples, self.n_features = X.shape
        self.n_params = self.n_classes * (self.n_features + 1)
        # the intercept of class c sits at c (d + 1) + d
        self.intercept_columns = np.arange(self.n_classes) * (self.n_features + 1) + \
            self.n_features

    def _no_intercept(self, A: np.ndarray) -> np.ndarray:
        if not self.fit_intercept:
            A[:, self.intercept_columns] = 0.0
        return A

    def loss_grad(self, P, active, rows=None, denominator=None):
        rows = _NO_ROWS if rows is None else rows
        loss, G = self.module.loss_grad(self.X, self.labels, self.SW, P,
                                        self.alphas(P.shape[0]), rows, active, self.n_threads,
                                        denominator, n_classes=self.n_classes,
                                        **self._kernel_options())
        return loss, self._no_intercept(G)

    def hessp(self, P, V, active):
        V = self._no_intercept(np.array(V, dtype=np.float64))
        HV = self.module.hessp(self.X, self.SW, P, V, self.alphas(P.shape[0]), active,
                               self.n_threads, n_classes=self.n_classes,
                               **self._kernel_options())
        return self._no_intercept(HV)

    def _kernel_options(self) -> dict:
        """Extra keyword arguments of the kernel calls (the CSR oracle's check_rows)."""
        return {}

    def lipschitz(self, n_runs: int, fit_intercept: bool) -> np.ndarray:
        """The softmax Hessian is X'SX (x) (diag(p) - p p') / sum s, and the second factor's
        eigenvalues are at most 1/2: L = 2 * (the binary bound X'SX / (4 sum s)) + alpha."""
        binary = self._binary()
        n_weights = max(1, self.SW.shape[1])
        top = lanczos_top_eigenvalue(binary, n_weights, fit_intercept)
        if not np.all(np.isfinite(top)):
            self.check_finite()
            raise ValueError("lr='auto' could not bound the curvature: X'X overflows; scale X "
                             "or give lr as a number")
        top = np.broadcast_to(top, (n_runs,)) if n_weights == 1 else top
        return np.asarray(2.0 * top + self.alphas(n_runs), dtype=np.float64)

    def _binary(self) -> DenseOracle:
        """The binary oracle of the same X and weights (lipschitz's Lanczos runs on it)."""
        return DenseOracle.from_validated(self.X, np.zeros((self.n_samples, 1)), self.SW,
                                          np.zeros(1), *_backends.get(self.requested_backend),
                                          self.n_threads)

    def split(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coef (K, C, d), intercept (K, C)) from parameter rows (K, C (d + 1))."""
        A = P.reshape(P.shape[0], self.n_classes, self.n_features + 1)
        return A[:, :, :-1].copy(), A[:, :, -1].copy()

    def pack(self, coef: Any, intercept: Any, n_runs: int, name: str) -> np.ndarray:
        """Parameter rows (n_runs, C (d + 1)) from coef (C, d) or (K, C, d) and an intercept
        (C,) or (K, C) (None: zeros)."""
        C, d = self.n_classes, self.n_features
        W = v.check_params(np.reshape(coef, (-1, C * d)) if np.size(coef) % (C * d) == 0
                           else coef, name, n_runs, C * d)
        W = np.broadcast_to(np.atleast_2d(W), (n_runs, C * d)).reshape(n_runs, C, d)
        b = np.zeros((n_runs, C))
        if intercept is not None:
            given = v.check_params(np.reshape(intercept, (-1, C)) if np.size(intercept) % C == 0
                                   else intercept, name.replace("coef", "intercept"), n_runs, C)
            b[:] = np.broadcast_to(np.atleast_2d(given), (n_runs, C))
        return np.concatenate([W, b[:, :, None]], axis=2).reshape(n_runs, -1)


def public_params(coef: Any, intercept: Any, n_classes: int, n_features: int,
                  name: str) -> tuple[np.ndarray, bool]:
    """(P (K, C (d + 1)), single) from the public functions' coef, (C, d) or (K, C, d), and
    intercept, a scalar (every class), (C,) or (K, C): strict shapes, unlike ``pack`` (which
    takes flattened rows from the driver's own callers)."""
    C, d = n_classes, n_features
    W = np.asarray(coef)
    if W.ndim not in (2, 3) or W.shape[-2:] != (C, d):
        raise ValueError(f"{name} must have shape ({C}, {d}) or (K, {C}, {d}) for "
                         f"loss='multinomial' ({C} classes, {d} features), got {W.shape}")
    single = W.ndim == 2
    n_runs = 1 if single else W.shape[0]
    W = v.check_params(W.reshape(n_runs, C * d), name, n_runs, C * d).reshape(n_runs, C, d)
    iname = name.replace("coef", "intercept")
    b = np.asarray(intercept)
    if b.ndim == 0 or b.shape in ((C,), (n_runs, C)):
        b = v.check_params(np.broadcast_to(b, (n_runs, C)), iname, n_runs, C)
    else:
        raise ValueError(f"{iname} must be a scalar or have shape ({C},) or ({n_runs}, {C}), "
                         f"got {b.shape}")
    return np.concatenate([W, b[:, :, None]], axis=2).reshape(n_runs, -1), single


def multinomial_oracle(X: Any, y: Any, *, sample_weight: Any, alpha: Any, backend: str,
                       n_threads: Any, fit_intercept: bool, finite: bool = True,
                       classes: Any = None) -> tuple[MultinomialOracle, np.ndarray]:
    """The oracle of ``gs.fit(..., loss="multinomial")`` and the classes (sorted): those of y,
    or ``classes`` (every label y may hold, as scikit-learn's partial_fit takes them)."""
    from .sparse import check_csr, is_sparse

    sparse = is_sparse(X)
    # CSR: the index structure is proven by CSRMultinomialOracle (ProvesStructure): the C++
    # kernels check the rows of the first pass, others get the exact check before it
    X = (check_csr(X, finite=finite, structure=False, n_threads=v.check_n_threads(n_threads))
         if sparse else v.check_X(X, finite=finite))
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must be 1-D with one class label per row of X ({X.shape[0]}) for "
            f"loss='multinomial', got shape {labels.shape}"
        )
    if labels.dtype.kind == "f":
        v.check_finite(labels, "y")
    if classes is None:
        classes, encoded = np.unique(labels, return_inverse=True)
    else:
        classes = np.unique(np.asarray(classes))
        encoded = np.searchsorted(classes, labels)
        unknown = (encoded >= classes.size) | (classes[np.minimum(encoded, classes.size - 1)]
                                               != labels)
        if unknown.any():
            raise ValueError(f"y has labels {np.unique(labels[unknown]).tolist()[:5]} that "
                             f"are not in classes {classes.tolist()[:10]}")
    if classes.size < 2:
        raise ValueError(f"y has {classes.size} class; loss='multinomial' needs at least two")
    SW = v.check_sample_weight(sample_weight, X.shape[0])
    kind = CSRMultinomialOracle if sparse else MultinomialOracle
    oracle = kind(X, encoded.astype(np.int64), SW, v.check_alpha(alpha), classes.size, backend,
                  v.check_n_threads(n_threads), fit_intercept)
    return oracle, classes


class CSRMultinomialOracle(ProvesStructure, MultinomialOracle):
    """The multinomial loss of a checked CSR matrix, with the backend's CSR kernels: C++
    (``_backends/softmax_cpp.py``, "cpp-softmax-csr") or Numba
    (``_backends/softmax_sparse_numba.py``, "numba-softmax-csr"), one pass over the nonzeros for
    every class of every run; or the NumPy softmax kernels, the specification, written with
    ``X @ W.T`` and ``R.T @ X`` only, products SciPy answers for CSR without densifying
    ("numpy-softmax-csr"). ``lipschitz`` (lr="auto") takes the binary bound from the CSR kernels
    of the backend asked for."""

    def __init__(self, X, labels, SW, alpha, n_classes, backend, n_threads, fit_intercept=True):
        from .sparse import kernels

        super().__init__(X, labels, SW, alpha, n_classes, "numpy", n_threads, fit_intercept)
        self._csr_kernels = kernels(backend)
        if self._csr_kernels[0] == "cpp-csr":
            from ._backends import softmax_cpp

            self.backend, self.module = "cpp-softmax-csr", softmax_cpp
        elif self._csr_kernels[0] == "numba-csr":
            from ._backends import softmax_sparse_numba

            self.backend, self.module = "numba-softmax-csr", softmax_sparse_numba
        else:
            self.backend = "numpy-softmax-csr"

    def check_finite(self) -> None:
        from .sparse import check_csr

        check_csr(self.X)  # names the first NaN or infinity among the stored values

    def _binary(self) -> DenseOracle:
        from .sparse import CSROracle

        name, module = self._csr_kernels
        return CSROracle.from_validated(self.X, np.zeros((self.n_samples, 1)), self.SW,
                                        np.zeros(1), name, module, self.n_threads)
