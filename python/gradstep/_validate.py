"""Every check of user input, done once before any work; arrays leave here in backend layout.

Backends trust what comes out of these functions: X C-contiguous float32/float64, targets
(n, Ky) float64 of 0/1, weights (n, Ks) float64 (Ks = 0 for unit weights). Nothing here modifies a
user's array: a conversion, when one is needed, makes a new array once.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import secrets

import numpy as np


@functools.cache
def cpu_count() -> int:
    """os.cpu_count(), or 1, read once: it reads a sysfs file each time (~17 us here), which a
    small problem's gs.loss_and_grad paid on every call."""
    return os.cpu_count() or 1


def _finite_check(a: np.ndarray, name: str) -> None:
    # A finite sum proves every entry finite (NaN and inf propagate, inf - inf is NaN), in one
    # pass with no temporary; only a non-finite sum (a bad entry, or overflow) needs the exact test.
    if a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(a.sum()):
                return
    if not np.isfinite(a).all():
        raise ValueError(
            f"{name} contains NaN or infinity; remove or impute those entries before fitting"
        )


def check_finite(a: np.ndarray, name: str) -> None:
    """A ValueError naming ``name`` when ``a`` holds NaN or infinity."""
    _finite_check(a, name)


def check_X(X, *, finite: bool = True) -> np.ndarray:
    """A 2-D, non-empty float32/float64 C-contiguous array (a C-contiguous float X is used as it
    is, never copied), checked finite unless ``finite=False``: then the caller proves it from
    its first pass (a NaN or inf in X makes that pass's results non-finite) and calls
    ``check_finite_X`` only when they are, so a gradient costs one pass over X, not two."""
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise ValueError("X is a sparse matrix; gradstep needs a dense array: pass X.toarray()")
    arr = np.asarray(X)
    if arr.dtype == object or np.iscomplexobj(arr) or arr.dtype.kind not in "biuf":
        raise ValueError(f"X must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got shape {arr.shape}; "
            "reshape a single feature with X.reshape(-1, 1)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"X is empty (shape {arr.shape}); it needs at least one row and column")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr)
    if finite:
        _finite_check(arr, "X")
    return arr


def check_finite_X(X: np.ndarray) -> None:
    """The exact test behind a non-finite first pass: a ValueError naming the first bad entry."""
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"X contains NaN or infinity (first at row {row}, column {col}: {X[row, col]}); "
            "remove or impute those entries before fitting"
        )


def check_sample_weight(sample_weight, n: int) -> np.ndarray:
    """float64 (n, Ks) non-negative finite weights: Ks = 0 for None (unit weights), 1 for a 1-D
    array, K for an (n, K) array (a weight column per run: cross-validation folds are runs whose
    weights are 0 outside the fold). Every column needs a positive sum."""
    if sample_weight is None:
        return np.empty((n, 0))
    sw = np.asarray(sample_weight)
    if sw.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight must hold real numbers, got dtype {sw.dtype}")
    sw = np.array(sw, dtype=np.float64, order="C")  # always a copy: the user's array is theirs
    if sw.ndim not in (1, 2) or sw.shape[0] != n or (sw.ndim == 2 and sw.shape[1] == 0):
        raise ValueError(
            f"sample_weight must have shape ({n},) or ({n}, n_runs) to match X, got {sw.shape}"
        )
    _finite_check(sw, "sample_weight")
    if (sw < 0).any():
        raise ValueError("sample_weight must be >= 0; negative weights are not supported")
    sums = sw.reshape(n, -1).sum(axis=0)
    if (sums <= 0).any():
        which = "" if sw.ndim == 1 else f" (column {int(np.argmax(sums <= 0))})"
        raise ValueError(
            f"sample_weight sums to zero{which}; at least one sample needs a positive weight"
        )
    return np.ascontiguousarray(sw.reshape(n, -1))


def check_alpha(alpha) -> np.ndarray:
    """alpha as a float64 array: (1,) for a number, (K,) for a sequence (one per run)."""
    if np.ndim(alpha) == 0:
        return np.array([check_nonneg_float(alpha.item() if isinstance(alpha, np.ndarray)
                                            else alpha, "alpha")])
    values = list(np.asarray(alpha, dtype=object).reshape(-1))
    if np.ndim(alpha) != 1 or not values:
        raise ValueError(f"alpha must be a number or a 1-D sequence of numbers, got {alpha!r}")
    return np.array([check_nonneg_float(a.item() if isinstance(a, np.generic) else a, "alpha")
                     for a in values])


def _all_zero_one(values: np.ndarray, n_threads: int | None) -> bool:
    """Whether every value is 0.0 or 1.0: one threaded pass in the compiled core where it is
    built (an (n, 16) y of 1M rows is 128 MB), else one NumPy comparison pass."""
    if values.flags.c_contiguous:
        try:
            from . import _core
        except ImportError:  # the pure-Python install: NumPy's pass below
            pass
        else:
            return bool(_core.all_zero_one(values, n_threads or cpu_count()))
    return bool(((values == 0.0) | (values == 1.0)).all())


def check_targets(y, n: int, *, labels: bool,
                  n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets as (n, Ky) float64 0/1 and, for 1-D y, its two classes.

    1-D y with ``labels`` (the fit API) may hold any two classes; the larger is the positive
    class. 1-D y without ``labels`` (loss_and_grad) and 2-D y must hold 0 and 1 only, checked
    on up to ``n_threads`` threads (None: all cores).
    """
    arr = np.asarray(y)
    if arr.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D (n_samples,) or 2-D (n_samples, n_runs), got {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(
            f"y has {arr.shape[0]} rows but X has {n}; they must have the same number of samples"
        )
    if arr.ndim == 1 and labels:
        if arr.dtype.kind in "fc":
            _finite_check(arr, "y")
        classes = np.unique(arr)
        if classes.size != 2:
            raise ValueError(
                f"y must have exactly two classes for binary logistic regression, got "
                f"{classes.size} ({classes[:5].tolist()}{'...' if classes.size > 5 else ''}); "
                "for several classes use a 2-D 0/1 target (one column per run)"
            )
        return (arr == classes[1]).astype(np.float64).reshape(n, 1), classes
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"y must be 0/1 numbers here, got dtype {arr.dtype}")
    values = np.asarray(arr, dtype=np.float64)  # no copy of a float64 y; never written to
    # One test proves every value 0 or 1, hence finite (NaN and inf are neither): loss_and_grad
    # reads a float64 y twice in all, here and in the kernel. The finer messages come on failure.
    if not _all_zero_one(values, n_threads):
        _finite_check(values, "y")
        raise ValueError("y must contain only 0 and 1 (one 0/1 column per run when 2-D)")
    return np.ascontiguousarray(values.reshape(n, -1)), None


MAX_COUNT = 1 << 62  # iterations and batch sizes: int64 in the compiled drivers, with headroom


def check_positive_int(value, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(value) > MAX_COUNT:
        raise ValueError(f"{name} must be at most 2**62, got {value!r}")
    return int(value)


def check_nonneg_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


MAX_THREADS = 1 << 16


def check_n_threads(n_threads) -> int:
    """None means every core."""
    if n_threads is None:
        return cpu_count()
    threads = check_positive_int(n_threads, "n_threads")
    assert threads is not None
    if threads > MAX_THREADS:
        raise ValueError(f"n_threads must be at most {MAX_THREADS}, got {n_threads}; "
                         "None uses every core")
    return threads


def seed_from(random_state) -> int:
    """A 64-bit seed for the mini-batch shuffle from None, an int, or a NumPy generator."""
    if random_state is None:
        return secrets.randbits(64)
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return int(random_state.randint(0, 2**63) if hasattr(random_state, "randint")
                   else random_state.integers(0, 2**63))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state) % 2**64
    raise ValueError(
        f"random_state must be None, an int or a numpy Generator/RandomState, got {random_state!r}"
    )


def check_params(arr, name: str, n_runs: int | None, size: int) -> np.ndarray:
    """A float64 copy of a (size,) or (n_runs, size) parameter array of real numbers, finite."""
    given = np.asarray(arr)
    if given.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {given.dtype}")
    out = np.array(given, dtype=np.float64)
    if out.ndim == 1 and out.shape[0] == size:
        pass
    elif out.ndim == 2 and out.shape[1] == size and (n_runs is None or out.shape[0] == n_runs):
        pass
    else:
        want = f"({size},)" + (f" or ({n_runs}, {size})" if n_runs else "")
        raise ValueError(f"{name} must have shape {want}, got {out.shape}")
    _finite_check(out, name)
    return out
