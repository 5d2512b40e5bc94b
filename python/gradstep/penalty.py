"""The penalty's spelling: ``l1_ratio`` (as scikit-learn >= 1.8 spells it) and the older
``penalty="l2" | "l1" | "elasticnet" | None`` (LogisticRegression before 1.8, SGDClassifier),
mapped onto one l1_ratio so that existing user code ports unchanged.

The objective's penalty is alpha * (l1_ratio * ||w||_1 + (1 - l1_ratio) / 2 * ||w||^2) on the
coefficients, never the intercept.
"""

from __future__ import annotations

import numpy as np

# "auto" (the default) means: l1_ratio and the strength (alpha, or C) alone say the penalty.
PENALTIES = ("auto", "l2", "l1", "elasticnet", None)


def check_l1_ratio(l1_ratio, name: str = "l1_ratio") -> np.ndarray:
    """l1_ratio as a float64 array (0-d for a number, 1-d for a sequence), every entry in
    [0, 1]."""
    if isinstance(l1_ratio, (str, bytes)) or l1_ratio is None:
        raise ValueError(f"{name} must be a number in [0, 1] or a sequence of them, "
                         f"got {l1_ratio!r}")
    try:
        ratio = np.array(l1_ratio, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1] or a sequence of them, "
                         f"got {l1_ratio!r}") from None
    if ratio.ndim > 1 or (ratio.ndim == 1 and ratio.size == 0):
        raise ValueError(f"{name} must be a number or a 1-D sequence, got shape {ratio.shape}")
    if not np.all(np.isfinite(ratio)) or np.any(ratio < 0.0) or np.any(ratio > 1.0):
        raise ValueError(f"{name} must be in [0, 1] (0 is L2, 1 is L1), got {l1_ratio!r}")
    return ratio


def resolve_l1_ratio(penalty, l1_ratio):
    """The l1_ratio that ``penalty`` and ``l1_ratio`` together mean, and whether there is a
    penalty at all (False only for penalty=None: the caller then drops the strength).

    "auto" (default) and "elasticnet" keep l1_ratio as given; "l2" means 0, "l1" means 1. A
    pair that contradicts itself ("l2" with l1_ratio > 0, "l1" with 0 < l1_ratio < 1) is a
    ValueError naming both.
    """
    if penalty not in PENALTIES and penalty != "none":
        raise ValueError(f"penalty must be 'auto', 'l2', 'l1', 'elasticnet' or None, got "
                         f"{penalty!r}")
    if penalty == "none":  # scikit-learn < 1.2 spelled no penalty as a string
        penalty = None
    ratio = check_l1_ratio(l1_ratio)
    if penalty == "l2":
        if np.any(ratio != 0.0):
            raise ValueError(f"penalty='l2' means l1_ratio=0, but l1_ratio={l1_ratio!r}: drop "
                             "penalty (l1_ratio alone sets the mix) or use "
                             "penalty='elasticnet'")
        return ratio, True
    if penalty == "l1":
        if np.any((ratio != 0.0) & (ratio != 1.0)):
            raise ValueError(f"penalty='l1' means l1_ratio=1, but l1_ratio={l1_ratio!r}: drop "
                             "penalty (l1_ratio alone sets the mix) or use "
                             "penalty='elasticnet'")
        return np.ones_like(ratio), True
    return ratio, penalty is not None


# ---- the L1 part in the drivers and rules ---------------------------------------------------


def penalized_columns(oracle, n_params: int) -> np.ndarray:
    """Which of an oracle's ``n_params`` parameter columns are coefficients (bool (D,)): the
    L1 term covers them and never an intercept. An oracle with ``intercept_columns`` (the
    multinomial one: one intercept per class) names its intercepts; any other oracle is the
    binary layout of gradstep.oracle, intercept last."""
    mask = np.ones(n_params, dtype=bool)
    intercepts = getattr(oracle, "intercept_columns", None)
    mask[np.arange(n_params - 1, n_params) if intercepts is None else intercepts] = False
    return mask


def l1_norms(P: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """||w||_1 of every row of P (K, D) over the penalized columns: (K,)."""
    return np.abs(P[:, mask]).sum(axis=1)


def soft_threshold(p: np.ndarray, threshold, mask: np.ndarray) -> None:
    """The L1 proximal map in place on the penalized entries of p (D,): each moves toward 0 by
    its threshold (a float or (D,) array) and stops at an exact 0."""
    th = threshold[mask] if np.ndim(threshold) else threshold
    w = p[mask]
    p[mask] = np.sign(w) * np.maximum(np.abs(w) - th, 0.0)


def l1_residual(p: np.ndarray, g: np.ndarray, l1: float, mask: np.ndarray) -> np.ndarray:
    """The minimum-norm subgradient of f + l1 ||w||_1 at p from the smooth gradient g (the
    proximal-gradient residual, OWL-QN's pseudo-gradient): g_j + l1 sign(w_j) where w_j != 0,
    sign(g_j) max(|g_j| - l1, 0) where w_j == 0, g_j on the intercepts. It is 0 exactly at
    the optimum, which the smooth gradient is not (there |g_j| <= l1 at the zeros)."""
    r = np.array(g, dtype=np.float64)
    w, gm = p[mask], r[mask]
    r[mask] = np.where(w != 0.0, gm + l1 * np.sign(w),
                       np.sign(gm) * np.maximum(np.abs(gm) - l1, 0.0))
    return r
