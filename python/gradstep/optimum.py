"""The exact minimizer of gradstep's objective, to compare step rules against.

``solve`` minimizes the same objective as ``gradstep.fit`` (mean, optionally weighted, logistic
loss plus ``alpha/2 ||coef||^2``, intercept unpenalized) to rounding level: scipy's L-BFGS-B on
``gradstep.loss_and_grad``, then a few Newton steps with the explicit Hessian, which take the
largest gradient entry to about 1e-12 of its starting size and below. Its result is the
``reference=`` of ``gradstep.fit`` (distances to the optimum), the optimal loss of the gap in
``gradstep compare`` and of ``gradstep.plot.plot_history``, and ``hessian`` gives the curvature
there (its smallest eigenvalue is the mu of ``plot_gradient_vs_distance``).

scipy is imported when ``solve`` runs, never when gradstep is imported.
"""

from __future__ import annotations

import numpy as np

from . import _backends
from . import _validate as v
from ._blas import one_blas_thread
from .api import FitResult, loss_and_grad

__all__ = ["hessian", "newton_polishes", "solve"]

#: the Newton polish forms a (p, p) Hessian from an (n, p) matrix: only below these sizes
MAX_NEWTON_PARAMS = 2000
MAX_NEWTON_ENTRIES = 2 * 10**7
#: Newton steps after L-BFGS-B; each one squares the relative error, two or three suffice
NEWTON_STEPS = 8
#: the Newton polish stops once every gradient entry is at most this (float64 rounding level)
NEWTON_GTOL = 1e-15
#: a run is "converged" when its largest gradient entry fell to this fraction of the start's
CONVERGED_RTOL = 1e-9


def solve(X, y, *, alpha=0.0, fit_intercept=True, sample_weight=None, backend="auto",
          n_threads=None) -> FitResult:
    """Minimize gradstep's objective exactly: L-BFGS-B, then Newton steps.

    The objective is the one ``gradstep.fit`` descends::

        J(w, b) = sum_i s_i (log(1 + exp(z_i)) - y_i z_i) / sum_i s_i + alpha/2 ||w||^2

    with ``z_i = x_i . w + b`` (``b = 0`` without an intercept; the intercept is never
    penalized). L-BFGS-B runs on ``gradstep.loss_and_grad`` from zero; then, when the Hessian
    fits in memory (see ``newton_polishes``), up to ``NEWTON_STEPS`` damped Newton steps take
    the largest gradient entry to rounding level, about 1e-12 of its size at zero or below.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Real, finite features (float32 is solved in float64).
    y : array-like of shape (n_samples,)
        Two classes, e.g. 0/1; the larger one is the positive class, as in ``gradstep.fit``.
    alpha : float, default=0.0
        L2 strength, >= 0. With ``alpha=0`` on separable data no finite optimum exists: the
        result is a far-out point where loss and gradient have become tiny.
    fit_intercept : bool, default=True
        Whether to fit the (unpenalized) intercept; without it the intercept is 0.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights with a positive sum; None weighs every sample 1. An integer
        weight acts as that many copies of the row.
    backend : {"auto", "cpp", "numba", "numpy"}, default="auto"
        Backend of the loss and gradient passes, as in ``gradstep.loss_and_grad``.
    n_threads : int, default=None
        Threads per pass over X; None takes every core.

    Returns
    -------
    FitResult
        ``coef`` (n_features,), ``intercept`` (float), ``loss`` at the solution, ``n_iter``
        (L-BFGS-B iterations plus Newton steps), ``status`` ``"converged"`` when the largest
        gradient entry fell to ``CONVERGED_RTOL`` of its size at zero (else ``"max_iter"``),
        ``backend`` (the one used), ``classes`` (the two classes of y); ``rules`` and
        ``history`` are None.

    Raises
    ------
    ValueError
        If X is not a finite 2-D real array, y is not 1-D with exactly two classes and one
        entry per row of X, sample_weight is not (n_samples,) non-negative and finite with a
        positive sum, alpha is negative or not finite, fit_intercept is not a bool, or the
        backend is unknown or unavailable.
    ImportError
        If scipy is missing (it comes with scikit-learn, a dependency of gradstep).

    See Also
    --------
    hessian : the curvature at the solution.
    gradstep.fit : the same objective, by gradient descent.

    Examples
    --------
    >>> import numpy as np
    >>> import gradstep as gs
    >>> from gradstep.optimum import solve
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 3))
    >>> y = (X @ [1.0, -2.0, 0.0] + rng.standard_normal(100) > 0).astype(float)
    >>> result = solve(X, y, alpha=0.01)
    >>> result.status
    'converged'
    >>> print(np.round(result.coef, 3), round(result.intercept, 3), round(result.loss, 4))
    [ 1.306 -3.044 -0.061] -0.048 0.2736
    >>> _, grad_coef, grad_intercept = gs.loss_and_grad(X, y, result.coef, result.intercept,
    ...                                                 alpha=0.01)
    >>> bool(np.abs(np.append(grad_coef, grad_intercept)).max() < 1e-12)
    True
    """
    from .sparse import check_csr, is_sparse

    sparse = is_sparse(X)
    X = check_csr(X) if sparse else v.check_X(X).astype(np.float64, copy=False)
    n, d = X.shape
    if np.ndim(y) != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {np.shape(y)}")
    Y, classes = v.check_targets(y, n, labels=True)
    targets = Y[:, 0]
    sw = _check_weights(sample_weight, n)
    alpha = v.check_nonneg_float(alpha, "alpha")
    if not isinstance(fit_intercept, (bool, np.bool_)):
        raise ValueError(f"fit_intercept must be True or False, got {fit_intercept!r}")
    fit_intercept = bool(fit_intercept)
    v.check_n_threads(n_threads)
    backend_name, _ = _backends.get(backend)
    weights = sw if sw.size else None
    p = d + int(fit_intercept)

    def fun(params: np.ndarray) -> tuple[float, np.ndarray]:
        intercept = params[d] if fit_intercept else 0.0
        loss, grad_coef, grad_intercept = loss_and_grad(
            X, targets, params[:d], intercept, sample_weight=weights, alpha=alpha,
            backend=backend_name, n_threads=n_threads)
        grad = np.append(grad_coef, grad_intercept) if fit_intercept else grad_coef
        return float(loss), grad

    from scipy.optimize import minimize

    start = np.zeros(p)
    start_gmax = float(np.abs(fun(start)[1]).max())
    # L-BFGS-B's own BLAS calls on p-vectors must not leave threads spinning on the cores the
    # compiled passes use (gradstep._blas); the Newton polish's dense products keep every thread
    with one_blas_thread(backend_name == "cpp"):
        res = minimize(fun, start, jac=True, method="L-BFGS-B", tol=1e-12,
                       options={"maxiter": 20000, "maxcor": 30})
    params = np.asarray(res.x, dtype=np.float64)
    n_iter = int(res.nit)
    if newton_polishes(n, p):
        params, steps = _newton_polish(fun, _design(X, fit_intercept), _unit_weights(sw, n),
                                       _penalty(alpha, d, fit_intercept), params)
        n_iter += steps
    loss, grad = fun(params)
    converged = float(np.abs(grad).max()) <= CONVERGED_RTOL * max(start_gmax, 1e-300)
    return FitResult(
        coef=params[:d].copy(),
        intercept=float(params[d]) if fit_intercept else 0.0,
        n_iter=n_iter,
        status="converged" if converged else "max_iter",
        loss=loss,
        rules=None,
        history=None,
        backend=backend_name,
        classes=classes,
    )


def hessian(X, coef, intercept=0.0, *, alpha=0.0, fit_intercept=True,
            sample_weight=None) -> np.ndarray:
    """The Hessian of the objective of ``solve`` at (coef, intercept): the local curvature.

    ``A' S D A / sum(s) + alpha I`` with ``A`` = X (and a ones column with ``fit_intercept``),
    ``S`` the sample weights, ``D`` = sigmoid(z)(1 - sigmoid(z)); the intercept's diagonal
    entry gets no alpha. Its largest eigenvalue is at most ``gradstep.lipschitz_constant``;
    its smallest at the optimum is the mu of mu*dist <= ||g|| near it.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Real, finite features.
    coef : array-like of shape (n_features,)
        Where to take the curvature.
    intercept : float, default=0.0
        The intercept there (ignored without ``fit_intercept``).
    alpha : float, default=0.0
        L2 strength, >= 0.
    fit_intercept : bool, default=True
        Whether the intercept is a parameter: the Hessian is then (n_features + 1) square,
        the intercept last.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights with a positive sum; None weighs every sample 1.

    Returns
    -------
    ndarray of shape (p, p)
        Symmetric positive semi-definite, p = n_features + fit_intercept.

    Examples
    --------
    >>> import numpy as np
    >>> from gradstep.optimum import hessian
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> np.round(hessian(X, np.zeros(2), alpha=0.5), 4)
    array([[0.6667, 0.0833, 0.1667],
           [0.0833, 0.9167, 0.25  ],
           [0.1667, 0.25  , 0.25  ]])
    """
    X = v.check_X(X).astype(np.float64, copy=False)
    n, d = X.shape
    sw = _check_weights(sample_weight, n)
    alpha = v.check_nonneg_float(alpha, "alpha")
    params = v.check_params(coef, "coef", None, d)
    if params.ndim != 1:
        raise ValueError(f"coef must have shape ({d},), got {params.shape}")
    if fit_intercept:
        params = np.append(params, v.check_params([intercept], "intercept", None, 1))
    return _hessian(_design(X, fit_intercept), _unit_weights(sw, n),
                    _penalty(alpha, d, fit_intercept), params)


def newton_polishes(n_samples: int, n_params: int) -> bool:
    """Whether ``solve`` forms the (n_params, n_params) Hessian for its Newton polish:
    n_params <= ``MAX_NEWTON_PARAMS`` and n_samples * n_params <= ``MAX_NEWTON_ENTRIES``."""
    return n_params <= MAX_NEWTON_PARAMS and n_samples * n_params <= MAX_NEWTON_ENTRIES


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _check_weights(sample_weight, n: int) -> np.ndarray:
    """Validated 1-D weights, (n,) float64, or (0,) for None (unit weights)."""
    if sample_weight is not None and np.ndim(sample_weight) != 1:
        raise ValueError(
            f"sample_weight must be 1-D (n_samples,), got shape {np.shape(sample_weight)}"
        )
    return v.check_sample_weight(sample_weight, n).reshape(-1)


def _design(X, fit_intercept: bool):
    """X with a ones column appended when the intercept is a parameter (CSR stays CSR)."""
    if not fit_intercept:
        return X
    if hasattr(X, "tocsr"):
        import scipy.sparse as sp

        return sp.hstack([X, np.ones((X.shape[0], 1))], format="csr")
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _unit_weights(sw: np.ndarray, n: int) -> np.ndarray:
    """Sample weights scaled to sum to 1 (1/n each when none are given)."""
    return sw / sw.sum() if sw.size else np.full(n, 1.0 / n)


def _penalty(alpha: float, d: int, fit_intercept: bool) -> np.ndarray:
    """The diagonal of the L2 term's Hessian: alpha on coef, 0 on the intercept."""
    return np.append(np.full(d, alpha), [0.0] * int(fit_intercept))


def _hessian(A: np.ndarray, unit_weights: np.ndarray, penalty: np.ndarray,
             params: np.ndarray) -> np.ndarray:
    z = A @ params
    curvature = 0.25 * (1.0 - np.tanh(0.5 * z) ** 2)  # sigmoid(z)(1 - sigmoid(z)), no overflow
    if hasattr(A, "tocsr"):  # sparse A'DA: the (p, p) result is small (newton_polishes)
        import scipy.sparse as sp

        weighted = sp.diags(unit_weights * curvature) @ A
        return np.asarray((A.T @ weighted).toarray()) + np.diag(penalty)
    return (A.T * (unit_weights * curvature)) @ A + np.diag(penalty)


def _newton_polish(fun, A: np.ndarray, unit_weights: np.ndarray, penalty: np.ndarray,
                   params: np.ndarray) -> tuple[np.ndarray, int]:
    """Damped Newton steps from a near-optimal point; (params, steps taken).

    A step is taken when it lowers the loss, or when it lowers the largest gradient entry
    without raising the loss by more than rounding (near the optimum the loss no longer
    resolves the progress that the gradient still shows).
    """
    loss, grad = fun(params)
    steps = 0
    for _ in range(NEWTON_STEPS):
        gmax = float(np.abs(grad).max())
        if gmax <= NEWTON_GTOL:
            break
        try:
            delta = np.linalg.solve(_hessian(A, unit_weights, penalty, params), grad)
        except np.linalg.LinAlgError:  # singular: alpha = 0 and a flat direction
            break
        if not np.isfinite(delta).all():
            break
        slack = 4 * np.finfo(np.float64).eps * abs(loss)
        t, moved = 1.0, False
        while t > 1e-6:
            new_loss, new_grad = fun(params - t * delta)
            if new_loss < loss or (new_loss <= loss + slack
                                   and float(np.abs(new_grad).max()) < gmax):
                params, loss, grad, moved = params - t * delta, new_loss, new_grad, True
                break
            t *= 0.5
        if not moved:
            break
        steps += 1
    return params, steps
