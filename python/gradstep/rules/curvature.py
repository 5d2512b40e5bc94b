"""The curvature rules: steps that need no hand-set learning rate.

Each rule is a frozen dataclass (name, parameters, defaults) whose ``iterate`` method is a
generator: the whole algorithm written as straight-line code for ONE run, which asks the driver
for passes over the data by yielding requests and receives their answers:

    loss, g = yield Grad(p)       # loss and gradient at p (one pass)
    hv = yield HessP(p, v)        # Hessian at p times v (one pass)
    yield Step(p, loss, g, t)     # an iteration is complete: new weights, their loss and
                                  # gradient, the accepted step length t
    yield Stall()                 # no progress is possible at machine precision

The driver (gradstep.driver) runs the generators of all K runs side by side and answers every
request of one kind with ONE batched pass, so the trial points of different runs' line searches
share the pass. It zeroes the intercept coordinate of gradients and Hessian products when the
intercept is not fitted, stops a run on the usual criterion (max |g| <= tol), and counts passes.

With an L1 term (``supports_l1`` rules: armijo, lbfgs) the generator is started with ``l1`` and
``penalized`` (the coefficient columns); every loss and gradient it receives and reports stays
the smooth part's (the driver adds l1 ||w||_1 to what it records), and the driver's stopping
test is on the minimum-norm subgradient (penalty.l1_residual) instead of g.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np

from ..penalty import l1_residual, soft_threshold
from ._checks import check_count, check_open_unit, check_positive
from .base import StepRule

EPS = float(np.finfo(np.float64).eps)


@dataclass
class Grad:
    """Request: the loss and gradient at p."""

    p: np.ndarray


@dataclass
class HessP:
    """Request: the Hessian at p times v."""

    p: np.ndarray
    v: np.ndarray


@dataclass
class Step:
    """Event: one iteration is done."""

    p: np.ndarray
    loss: float
    g: np.ndarray
    t: float


@dataclass
class Stall:
    """Event: the line search found no representable point that decreases the loss."""


Request = Union[Grad, HessP, Step, Stall]
Iteration = Generator[Request, Any, None]


def _negligible(step: np.ndarray, p: np.ndarray) -> bool:
    """A step too small to change p in floating point. (The norms as np.linalg.norm computes
    them for a real vector, sqrt(x.dot(x)), without its checks: this runs at every trial.)"""
    return math.sqrt(step.dot(step)) <= 4.0 * EPS * (1.0 + math.sqrt(p.dot(p)))


def _rounding(f0: float) -> float:
    """How far a loss near f0 may move by rounding alone (the sums of a pass are reordered by
    blocks and SIMD lanes): differences below this say nothing about descent."""
    return 1e-10 * abs(f0)


def _sufficient_decrease(f, g, d, t, f_ref, f0, slope0, c1) -> bool:
    """Armijo: f(p + t d) <= f_ref + c1 t g0.d; where the loss difference is lost in rounding
    (near the optimum), its exact equivalent on a quadratic in the slope instead (Hager and
    Zhang's approximate Wolfe condition): g(p + t d).d <= (1 - 2 c1) |g0.d|."""
    if f <= f_ref + c1 * t * slope0:
        return True
    return bool(f <= f0 + _rounding(f0) and float(g.dot(d)) <= (1.0 - 2.0 * c1) * -slope0)


def _backtrack(p, f_ref, g, direction, t, c1, shrink, f0=None):
    """Shrink t until the sufficient decrease holds along direction (against f_ref, the
    current loss or a non-monotone reference); returns (t, p_new, f, g_new), or None when the
    step becomes negligible. A non-finite trial loss counts as too long."""
    slope = float(g @ direction)
    f0 = f_ref if f0 is None else f0
    while True:
        q = p + t * direction
        if _negligible(q - p, p):
            return None
        fq, gq = yield Grad(q)
        if math.isfinite(fq) and _sufficient_decrease(fq, gq, direction, t, f_ref, f0, slope,
                                                      c1):
            return t, q, fq, gq
        t *= shrink


@dataclass(frozen=True)
class Armijo(StepRule):
    """Gradient descent with a backtracking line search.

    Each iteration tries t (first ``lr``, then the last accepted t times ``grow``) and shrinks
    it by ``shrink`` until f(p - t g) <= f(p) - c1 t ||g||^2 (Armijo's sufficient decrease).

    With an L1 term (l1 > 0) it is proximal gradient descent (ISTA) with Beck and Teboulle's
    backtracking: p+ = soft_threshold(p - t g, t l1), t shrunk until
    f(p+) <= f(p) + g.(p+ - p) + ||p+ - p||^2 / (2t).

    Parameters
    ----------
    lr : float, default 1.0
        The first trial step.
    c1 : float, default 1e-4
        Sufficient-decrease constant, in (0, 1).
    shrink : float, default 0.5
        Backtracking factor, in (0, 1).
    grow : float, default 2.0
        The next iteration starts from the accepted step times grow (>= 1).

    Examples
    --------
    >>> import gradstep as gs
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> res = gs.fit(StandardScaler().fit_transform(X), y, "armijo", alpha=0.01)
    >>> res.status
    'converged'
    """

    lr: float = 1.0
    c1: float = 1e-4
    shrink: float = 0.5
    grow: float = 2.0
    name: ClassVar[str] = "armijo"
    full_batch_only: ClassVar[bool] = True
    supports_l1: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_open_unit("c1", self.c1)
        check_open_unit("shrink", self.shrink)
        check_positive("grow", self.grow)
        if self.grow < 1.0:
            raise ValueError(f"grow must be >= 1, got {self.grow!r}")

    def iterate(self, p, loss, g, l1: float = 0.0,
                penalized: np.ndarray | None = None) -> Iteration:
        if l1 > 0.0:
            yield from self._proximal(p, loss, g, l1, penalized)
            return
        t = float(self.lr)
        while True:
            found = yield from _backtrack(p, loss, g, -g, t, self.c1, self.shrink)
            if found is None:
                yield Stall()
                return
            t, p, loss, g = found
            yield Step(p, loss, g, t)
            t *= self.grow

    def _proximal(self, p, loss, g, l1, penalized) -> Iteration:
        t = float(self.lr)
        while True:
            while True:
                q = p - t * g
                soft_threshold(q, t * l1, penalized)
                step = q - p
                if _negligible(step, p):
                    yield Stall()
                    return
                fq, gq = yield Grad(q)
                if math.isfinite(fq) and _prox_decrease(loss, g, fq, gq, step, t):
                    break
                t *= self.shrink
            p, loss, g = q, fq, gq
            yield Step(p, loss, g, t)
            t *= self.grow


def _prox_decrease(f0, g0, f, g, step, t) -> bool:
    """Beck and Teboulle's test f(q) <= f(p) + g0.(q - p) + ||q - p||^2 / (2t), q - p = step:
    the composite F = f + l1 ||w||_1 then decreases (the L1 terms of the bound on F cancel
    against those of the proximal step). Where f's difference is lost in rounding (near the
    optimum), its exact equivalent on a quadratic instead: (g(q) - g0).(q - p) <= ||q - p||^2/t."""
    ss = float(step @ step)
    if f <= f0 + float(g0 @ step) + ss / (2.0 * t):
        return True
    return bool(f <= f0 + _rounding(f0) and float((g - g0) @ step) <= ss / t)


@dataclass(frozen=True)
class BB(StepRule):
    """Barzilai-Borwein steps with a non-monotone (Grippo / Raydan) safeguard.

    The step is t = s's / s'y (``variant="long"``), s'y / y'y (``"short"``), or the two in turn
    (``"alternate"``), with s and y the last change of the weights and of the gradient: a secant
    estimate of 1/curvature along the last step. A trial p - t g is accepted when its loss is
    below the largest of the last ``window`` losses minus c1 t ||g||^2; otherwise t is halved.

    Parameters
    ----------
    lr : float or None, default None
        The first step. None: 1/L estimated from the first two points (a probe step along -g
        costs one extra pass).
    variant : {"long", "short", "alternate"}, default "long"
    window : int, default 10
        How many past losses the non-monotone test looks back on.
    c1 : float, default 1e-4

    Examples
    --------
    >>> import gradstep as gs
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> gs.fit(StandardScaler().fit_transform(X), y, "bb", alpha=0.01).status
    'converged'
    """

    lr: float | None = None  # type: ignore[assignment]
    variant: str = "long"
    window: int = 10
    c1: float = 1e-4
    name: ClassVar[str] = "bb"
    full_batch_only: ClassVar[bool] = True

    lr_optional: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("long", "short", "alternate"):
            raise ValueError(
                f"variant must be 'long', 'short' or 'alternate', got {self.variant!r}"
            )
        check_count("window", self.window)
        check_open_unit("c1", self.c1)

    def iterate(self, p, loss, g) -> Iteration:
        if self.lr is None:  # 1/L along -g from a probe point: one pass, no step taken
            gnorm = float(np.linalg.norm(g))
            h = 1e-4 * max(1.0, float(np.linalg.norm(p))) / max(gnorm, 1e-300)
            _, g_probe = yield Grad(p - h * g)
            dg = float(np.linalg.norm(g_probe - g))
            t = h * gnorm / dg if dg > 0.0 and math.isfinite(dg) else 1.0
        else:
            t = float(self.lr)
        recent: deque[float] = deque([loss], maxlen=self.window)
        k = 0
        while True:
            found = yield from _backtrack(p, max(recent), g, -g, t, self.c1, 0.5, f0=loss)
            if found is None:
                yield Stall()
                return
            t_used, q, fq, gq = found
            s, yv = q - p, gq - g
            p, loss, g = q, fq, gq
            recent.append(loss)
            yield Step(p, loss, g, t_used)
            k += 1
            t = _bb_step(s, yv, self.variant, k, t_used)


def _bb_step(s, y, variant, k, fallback):
    sy = float(s @ y)
    if not sy > 0.0:  # no positive curvature along s: keep the last accepted step
        return fallback
    long_ = variant == "long" or (variant == "alternate" and k % 2 == 1)
    t = float(s @ s) / sy if long_ else sy / float(y @ y)
    return min(max(t, 1e-30), 1e30)


def _cubic_min(a, fa, ga, b, fb, gb):
    """The minimizer of the cubic through (a, fa, ga) and (b, fb, gb), or None."""
    d1 = ga + gb - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - ga * gb
    if not disc >= 0.0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = gb - ga + 2.0 * d2
    if denom == 0.0:
        return None
    return b - (b - a) * (gb + d2 - d1) / denom


def strong_wolfe(p, f0, g0, d, t, c1=1e-4, c2=0.9, max_evals=25):
    """Line search for the strong Wolfe conditions along d (Nocedal & Wright, Alg. 3.5/3.6):
    f(p + t d) <= f0 + c1 t g0.d and |g(p + t d).d| <= c2 |g0.d|. A generator yielding Grad
    requests; returns (t, p_new, f, g) or None when no acceptable point is representable.
    Trial points are kept as (t, f, slope, point, gradient)."""
    slope0 = float(g0.dot(d))
    prev = (0.0, f0, slope0, p, g0)
    lo = hi = None
    for i in range(max_evals):
        q = p + t * d
        if _negligible(q - p, p):
            return None
        f, g = yield Grad(q)
        finite = math.isfinite(f)
        s = float(g.dot(d)) if finite else math.nan
        here = (t, f if finite else math.inf, s, q, g)
        decrease = finite and _sufficient_decrease(f, g, d, t, f0, f0, slope0, c1)
        if not decrease or (i > 0 and f >= prev[1] + _rounding(f0)):
            lo, hi = prev, here
            break
        if abs(s) <= -c2 * slope0:
            return t, q, f, g
        if s >= 0.0:
            lo, hi = here, prev
            break
        guess = _cubic_min(prev[0], prev[1], prev[2], t, f, s)
        prev = here
        t = min(max(guess if guess is not None else 2.0 * t, 1.1 * t), 10.0 * t)
    else:
        return None
    # zoom: lo satisfies sufficient decrease with the lowest loss so far, hi brackets it
    for _ in range(max_evals):
        ta, fa, sa = lo[:3]
        tb, fb, sb = hi[:3]
        width = abs(tb - ta)
        guess = _cubic_min(ta, fa, sa, tb, fb, sb) if math.isfinite(fb) else None
        low_end, high_end = min(ta, tb), max(ta, tb)
        if guess is None or not (low_end + 0.1 * width <= guess <= high_end - 0.1 * width):
            guess = 0.5 * (ta + tb)
        t = guess
        q = p + t * d
        if _negligible((tb - ta) * d, p) or _negligible(q - p, p):
            break
        f, g = yield Grad(q)
        finite = math.isfinite(f)
        s = float(g.dot(d)) if finite else math.nan
        here = (t, f if finite else math.inf, s, q, g)
        decrease = finite and _sufficient_decrease(f, g, d, t, f0, f0, slope0, c1)
        if not decrease or f >= fa + _rounding(f0):
            hi = here
            continue
        if abs(s) <= -c2 * slope0:
            return t, q, f, g
        if s * (tb - ta) >= 0.0:
            hi = lo
        lo = here
    if lo[0] > 0.0 and lo[1] < f0:  # sufficient decrease without the curvature condition
        return lo[0], lo[3], lo[1], lo[4]
    return None


@dataclass(frozen=True)
class LBFGS(StepRule):
    """Limited-memory BFGS: the two-loop recursion over the last ``m`` (s, y) pairs and a line
    search for the strong Wolfe conditions (c1 = 1e-4, c2 = 0.9).

    The first trial step is 1 (the first iteration: 1/||g||); H0 = (s'y / y'y) I.

    With an L1 term (l1 > 0) it is OWL-QN (Andrew and Gao 2007): the two-loop recursion on the
    pseudo-gradient (the minimum-norm subgradient), the direction zeroed where it disagrees in
    sign with minus the pseudo-gradient, and a backtracking line search on the full objective
    whose trial points are projected onto the orthant of the current point (sign(w), or at a
    zero the sign of the step it takes): a coefficient that would cross 0 stops at an exact 0.
    The (s, y) pairs are built from the smooth gradients.

    Parameters
    ----------
    m : int, default 10
        The number of pairs kept.
    lr : float, default 1.0
        The first trial step of each line search (the quasi-Newton step has length ~1).

    Examples
    --------
    >>> import gradstep as gs
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> res = gs.fit(StandardScaler().fit_transform(X), y, "lbfgs", alpha=1e-3, tol=1e-8)
    >>> res.status, res.n_iter < 100
    ('converged', True)
    """

    lr: float = 1.0
    m: int = 10
    name: ClassVar[str] = "lbfgs"
    full_batch_only: ClassVar[bool] = True
    supports_l1: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("m", self.m)

    def iterate(self, p, loss, g, l1: float = 0.0,
                penalized: np.ndarray | None = None) -> Iteration:
        if l1 > 0.0:
            yield from self._owlqn(p, loss, g, l1, penalized)
            return
        pairs: deque[tuple[np.ndarray, np.ndarray, float, float]] = deque(maxlen=self.m)
        first = True
        while True:
            d = _two_loop(g, pairs)
            np.negative(d, out=d)  # _two_loop's result is a new array
            if not float(g.dot(d)) < 0.0:  # not a descent direction (rounding): restart
                pairs.clear()
                d = -g
            t0 = min(1.0, 1.0 / max(float(np.abs(g).sum()), 1e-300)) if first else self.lr
            found = yield from strong_wolfe(p, loss, g, d, t0)
            if found is None and pairs:  # a stale memory: retry once along -g
                pairs.clear()
                d = -g
                found = yield from strong_wolfe(
                    p, loss, g, d, 1.0 / max(float(np.linalg.norm(g)), 1e-300))
            if found is None:
                yield Stall()
                return
            t, q, fq, gq = found
            s, yv = q - p, gq - g
            sy, yy = float(s.dot(yv)), float(yv.dot(yv))
            if sy > EPS * yy:  # keep only pairs with positive curvature
                pairs.append((s, yv, 1.0 / sy, yy))
            p, loss, g = q, fq, gq
            first = False
            yield Step(p, loss, g, t)

    def _owlqn(self, p, loss, g, l1, penalized) -> Iteration:
        pairs: deque[tuple[np.ndarray, np.ndarray, float, float]] = deque(maxlen=self.m)
        objective = loss + l1 * float(np.abs(p[penalized]).sum())
        first = True
        while True:
            pg = l1_residual(p, g, l1, penalized)
            d = _two_loop(pg, pairs)
            d = np.where(d * pg > 0.0, -d, 0.0)  # -H pg where it agrees in sign with -pg
            if not float(pg @ d) < 0.0:  # nothing left of it: restart from -pg
                pairs.clear()
                d = -pg
            t0 = min(1.0, 1.0 / max(float(np.abs(pg).sum()), 1e-300)) if first else self.lr
            found = yield from _orthant_backtrack(p, objective, pg, d, t0, l1, penalized)
            if found is None and pairs:  # a stale memory: retry once along -pg
                pairs.clear()
                found = yield from _orthant_backtrack(
                    p, objective, pg, -pg, 1.0 / max(float(np.linalg.norm(pg)), 1e-300), l1,
                    penalized)
            if found is None:
                yield Stall()
                return
            t, q, fq, gq, objective = found
            s, yv = q - p, gq - g  # the smooth gradients: the L1 term has no curvature
            sy, yy = float(s.dot(yv)), float(yv.dot(yv))
            if sy > EPS * yy:
                pairs.append((s, yv, 1.0 / sy, yy))
            p, loss, g = q, fq, gq
            first = False
            yield Step(p, loss, g, t)


def _orthant_backtrack(p, objective, pg, d, t, l1, penalized, c1=1e-4, shrink=0.5):
    """OWL-QN's line search: halve t until F(q) <= F(p) + c1 pg.(q - p) with q = p + t d
    projected onto p's orthant (a coefficient that changes sign stops at 0). F is smooth on the
    segment from p to q (one closed orthant), with slope pg.(q - p) at p and (g(q) + l1 xi).(q - p)
    at q, so the rounding fallback of _sufficient_decrease applies to it. Returns (t, q, f(q),
    g(q), F(q)) or None when the step becomes negligible."""
    orthant = np.where(p != 0.0, np.sign(p), -np.sign(pg))
    while True:
        q = p + t * d
        q[penalized & (np.sign(q) != orthant)] = 0.0
        step = q - p
        if _negligible(step, p):
            return None
        fq, gq = yield Grad(q)
        value = fq + l1 * float(np.abs(q[penalized]).sum())
        if math.isfinite(value):
            slope_q = gq + np.where(penalized, l1 * orthant, 0.0)
            if _sufficient_decrease(value, slope_q, step, 1.0, objective, objective,
                                    float(pg @ step), c1):
                return t, q, fq, gq, value
        t *= shrink


def _two_loop(g, pairs):
    """H g for the L-BFGS inverse-Hessian approximation of the pairs (s, y, 1/s'y, y'y)
    (Nocedal & Wright 7.4).

    The updates go through one scratch vector with out= (q - a y is computed as tmp = y a, then
    q - tmp, the same two roundings as ``q -= a * y``), and the dot products use ndarray.dot:
    on short vectors each NumPy call's overhead is most of the cost. Bit for bit the textbook
    loops: any change of rounding here moves the iterates of an ill-conditioned fit."""
    q = g.copy()
    if not pairs:
        return q
    tmp = np.empty_like(q)
    multiply, subtract, add = np.multiply, np.subtract, np.add
    alphas = []
    for s, y, rho, _ in reversed(pairs):
        a = rho * float(s.dot(q))
        multiply(y, a, out=tmp)
        subtract(q, tmp, out=q)
        alphas.append(a)
    _, _, rho, yy = pairs[-1]
    q *= 1.0 / (rho * yy)  # gamma = s'y / y'y
    for (s, y, rho, _), a in zip(pairs, reversed(alphas)):
        b = rho * float(y.dot(q))
        multiply(s, a - b, out=tmp)
        add(q, tmp, out=q)
    return q


@dataclass(frozen=True)
class Newton(StepRule):
    """Newton-CG: truncated conjugate gradient on H d = -g with Hessian-vector products (one
    fused pass each), then a backtracking line search from t = 1.

    CG stops when ||H d + g|| <= min(cg_tol, sqrt(||g||)) ||g|| (a forcing term that shrinks with
    the gradient, so convergence becomes quadratic near the optimum), after ``max_cg``
    products, or on a direction of non-positive curvature.

    Parameters
    ----------
    cg_tol : float, default 0.1
        The relative forcing term, in (0, 1).
    max_cg : int, default 50
        Hessian-vector products per iteration at most.
    lr : float, default 1.0
        The first trial step of each line search.

    Examples
    --------
    >>> import gradstep as gs
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> res = gs.fit(StandardScaler().fit_transform(X), y, "newton", alpha=1e-3, tol=1e-10)
    >>> res.status, res.n_iter <= 20
    ('converged', True)
    """

    lr: float = 1.0
    cg_tol: float = 0.1
    max_cg: int = 50
    name: ClassVar[str] = "newton"
    full_batch_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_open_unit("cg_tol", self.cg_tol)
        check_count("max_cg", self.max_cg)

    def iterate(self, p, loss, g) -> Iteration:
        while True:
            d = yield from self._cg(p, g)
            found = yield from _backtrack(p, loss, g, d, float(self.lr), 1e-4, 0.5)
            if found is None:
                yield Stall()
                return
            t, p, loss, g = found
            yield Step(p, loss, g, t)

    def _cg(self, p, g):
        """Truncated CG on H d = -g from d = 0."""
        gnorm = float(np.linalg.norm(g))
        target = min(self.cg_tol, math.sqrt(gnorm)) * gnorm
        d = np.zeros_like(g)
        r = -g.copy()  # residual -g - H d
        direction = r.copy()
        rr = float(r @ r)
        for j in range(self.max_cg):
            hv = yield HessP(p, direction)
            curvature = float(direction @ hv)
            if not curvature > 0.0:  # non-positive curvature: stop (steepest descent if first)
                return -g if j == 0 else d
            step = rr / curvature
            d += step * direction
            r -= step * hv
            rr_new = float(r @ r)
            if math.sqrt(rr_new) <= target:
                break
            direction = r + (rr_new / rr) * direction
            rr = rr_new
        return d
