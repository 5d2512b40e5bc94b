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
from functools import cache, partial
from typing import Any, ClassVar, Union

import numpy as np

from ..penalty import l1_residual, soft_threshold
from ._checks import check_count, check_open_unit, check_positive
from .base import StepRule

EPS = float(np.finfo(np.float64).eps)
# strong_wolfe's sufficient-decrease and curvature constants (also LBFGSRuns' first-trial test)
WOLFE_C1, WOLFE_C2 = 1e-4, 0.9


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


def strong_wolfe(p, f0, g0, d, t, c1=WOLFE_C1, c2=WOLFE_C2, max_evals=25, first=None):
    """Line search for the strong Wolfe conditions along d (Nocedal & Wright, Alg. 3.5/3.6):
    f(p + t d) <= f0 + c1 t g0.d and |g(p + t d).d| <= c2 |g0.d|. A generator yielding Grad
    requests; returns (t, p_new, f, g) or None when no acceptable point is representable.
    Trial points are kept as (t, f, slope, point, gradient). ``first``: the answer (f, g) at
    the first trial p + t d when the caller already has it (LBFGSRuns: the first trials of
    all runs are one batched pass); the search then goes on from it without asking again."""
    slope0 = float(g0.dot(d))
    prev = (0.0, f0, slope0, p, g0)
    lo = hi = None
    for i in range(max_evals):
        q = p + t * d
        if i == 0 and first is not None:
            f, g = first
        else:
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
    The (s, y) pairs are built from the smooth gradients. Each backtracking starts from the step
    the previous one accepted, doubled up to lr when that was its first trial
    (``owlqn_next_trial``).

    Parameters
    ----------
    m : int, default 10
        The number of pairs kept.
    lr : float, default 1.0
        The first trial step of each line search (the quasi-Newton step has length ~1); with
        an L1 term the largest one.

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
        pairs = _Pairs(self.m, g.size)
        first = True
        while True:
            d = pairs.apply(g)
            np.negative(d, out=d)  # apply's result is a new array
            if not float(g.dot(d)) < 0.0:  # not a descent direction (rounding): restart
                pairs.clear()
                d = -g
            t0 = min(1.0, 1.0 / max(float(np.abs(g).sum()), 1e-300)) if first else self.lr
            found, stale = yield from _lbfgs_search(p, loss, g, d, t0, bool(pairs))
            if stale:
                pairs.clear()
            if found is None:
                yield Stall()
                return
            t, q, fq, gq = found
            s, yv = pairs.free()
            np.subtract(q, p, out=s)
            np.subtract(gq, g, out=yv)
            sy, yy = float(s.dot(yv)), float(yv.dot(yv))
            if sy > EPS * yy:  # keep only pairs with positive curvature
                pairs.keep(sy, yy)
            p, loss, g = q, fq, gq
            first = False
            yield Step(p, loss, g, t)

    def _owlqn(self, p, loss, g, l1, penalized) -> Iteration:
        pairs = _Pairs(self.m, g.size)
        objective = loss + l1 * float(np.abs(p[penalized]).sum())
        first = True
        t_next = self.lr  # the next search's first trial (owlqn_next_trial)
        while True:
            pg = l1_residual(p, g, l1, penalized)
            d = pairs.apply(pg)
            d = np.where(d * pg > 0.0, -d, 0.0)  # -H pg where it agrees in sign with -pg
            restarted = not float(pg @ d) < 0.0
            if restarted:  # nothing left of it: restart from -pg
                pairs.clear()
                d = -pg
            if first:
                t0 = min(1.0, 1.0 / max(float(np.abs(pg).sum()), 1e-300))
            else:
                t0 = self.lr if restarted else t_next
            found = yield from _orthant_backtrack(p, objective, pg, d, t0, l1, penalized)
            if found is None and pairs:  # a stale memory: retry once along -pg
                pairs.clear()
                restarted = True
                found = yield from _orthant_backtrack(
                    p, objective, pg, -pg, 1.0 / max(float(np.linalg.norm(pg)), 1e-300), l1,
                    penalized)
            if found is None:
                yield Stall()
                return
            t, q, fq, gq, objective = found
            t_next = owlqn_next_trial(t, t0, self.lr, first or restarted)
            s, yv = pairs.free()  # the smooth gradients: the L1 term has no curvature
            np.subtract(q, p, out=s)
            np.subtract(gq, g, out=yv)
            sy, yy = float(s.dot(yv)), float(yv.dot(yv))
            if sy > EPS * yy:
                pairs.keep(sy, yy)
            p, loss, g = q, fq, gq
            first = False
            yield Step(p, loss, g, t)


def owlqn_next_trial(t: float, t0: float, lr: float, fresh: bool) -> float:
    """The first trial step of OWL-QN's next line search, after this one accepted t having
    started at t0: the step it accepted, doubled (up to lr) when that was its first trial, so
    that a run whose unit steps keep failing starts where they succeed and one whose steps
    succeed returns to lr in a few iterations (as Armijo's ``grow``). lr after the first
    iteration and after a restart from -pg (``fresh``: their steps scale the pseudo-gradient,
    not a quasi-Newton direction).

    Why: the orthant projection often makes the unit quasi-Newton step fail its test for many
    iterations in a row, each then paying a second pass for t = 1/2. Over eleven L1 and
    elastic-net problems (breast cancer at C = 0.1-100, digits multinomial, 50,000 x 20,000
    Zipf CSR), starting at 1 every time took 59,447 passes to tol 1e-6 and this rule 26,819
    (5,630 and 4,038 without the C = 100 problem's 53,817 and 22,781), the same objectives to
    2e-6; two problems took 9-13 % more."""
    if fresh:
        return lr
    return min(lr, 2.0 * t) if t == t0 else t


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


def _lbfgs_search(p, loss, g, d, t0, retry, first=None):
    """One L-BFGS line search: strong Wolfe along d from t0; when that fails and the memory
    holds pairs (``retry``), the memory is stale: once more along -g from 1/||g||. Returns
    (found, stale): strong_wolfe's result, and whether the memory is to be cleared."""
    found = yield from strong_wolfe(p, loss, g, d, t0, first=first)
    if found is None and retry:
        found = yield from strong_wolfe(p, loss, g, -g,
                                        1.0 / max(float(np.linalg.norm(g)), 1e-300))
        return found, True
    return found, False


class _Pairs:
    """One run's L-BFGS memory: its last m pairs (s, y) in a ring, laid out as each row of
    LBFGSRuns keeps them (memory (1, 2R, D): R slots of s vectors, then R of y vectors; rho
    (1, R) = 1/s'y per slot; gamma = s'y/y'y of the newest pair), so that H g is one
    _two_loop_rows call, compiled where the core is built (~6 NumPy calls per pair before: about
    a third of a small fit's time, e.g. 50-65 us of each ~0.6 ms iteration of a multinomial fit
    on digits). The ring has R = m + 1 slots: the next pair is computed straight into the free
    one (``free``) and kept or not (``keep``), so no pair is ever held twice, and a rejected one
    leaves the m kept intact."""

    def __init__(self, m: int, D: int) -> None:
        self.m = m
        self.slots = m + 1
        self.memory = np.zeros((1, 2 * self.slots, D))
        self.rho = np.zeros((1, self.slots))
        self.gamma = np.ones(1)
        self.count = np.zeros(1, dtype=np.intp)
        self.head = 0  # the free slot; the pairs are in the m slots after it, oldest first
        # row h: the slots in order from h (apply's order when the free slot is h), made once
        slots = np.arange(self.slots)
        self._orders = (slots[:, None] + slots[None, :]) % self.slots

    def __bool__(self) -> bool:
        return bool(self.count[0])

    def clear(self) -> None:
        self.rho[:] = 0.0
        self.gamma[0] = 1.0
        self.count[0] = 0

    def free(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of the free slot's s and y, to compute the next pair into."""
        return self.memory[0, self.head], self.memory[0, self.slots + self.head]

    def keep(self, sy: float, yy: float) -> None:
        """Keep the pair in the free slot (s'y = sy > 0, y'y = yy): the oldest of m is dropped
        (its slot becomes the free one)."""
        self.rho[0, self.head] = 1.0 / sy
        self.gamma[0] = sy / yy
        self.head = (self.head + 1) % self.slots
        self.count[0] = min(int(self.count[0]) + 1, self.m)

    def apply(self, g: np.ndarray) -> np.ndarray:
        """H g (a new array): the two-loop recursion over the pairs, oldest first (the free
        slot first in the order, never reached: count <= m < R)."""
        if not self:
            return g.copy()
        order = self._orders[self.head:self.head + 1]
        two_loop_rows = _compiled("two_loop_rows")
        if two_loop_rows is None:
            return _two_loop_rows(g[None, :], self.memory, order, self.rho, self.gamma,
                                  self.count)[0]
        # the core directly: every array but g is this object's own, in the core's layout
        return two_loop_rows(np.ascontiguousarray(g, dtype=np.float64)[None, :], self.memory,
                             order, self.rho, self.gamma, self.slots - int(self.count[0]))[0]


def _two_loop(g, pairs):
    """H g for the L-BFGS inverse-Hessian approximation of the pairs (s, y, 1/s'y, y'y)
    (Nocedal & Wright 7.4): the textbook recursion, which _two_loop_rows (and through it
    _Pairs.apply) is tested against.

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


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The dot product of each row of a with the same row of b."""
    return np.einsum("ij,ij->i", a, b)


@cache
def _compiled(name: str):
    """gradstep._core's function ``name``, or None in the pure-Python install. Looked up once:
    an import statement in a function costs ~8 us a call, several times per iteration of a
    small fit."""
    try:
        from .. import _core
    except ImportError:
        return None
    return getattr(_core, name, None)


def _accept_rows(f, G, d, f0, t0, slope0) -> np.ndarray:
    """strong_wolfe's first test of each row's first trial: _accept_rows_numpy compiled
    (gradstep._core.accept_rows, lbfgs_rows.hpp) where the C++ core is built; its G.d differs
    from einsum's by rounding."""
    compiled = _compiled("accept_rows")
    if compiled is None:
        return _accept_rows_numpy(f, G, d, f0, t0, slope0)
    as64 = partial(np.ascontiguousarray, dtype=np.float64)
    return compiled(as64(f), as64(G), as64(d), as64(f0), as64(t0), as64(slope0), WOLFE_C1,
                    WOLFE_C2)


def _accept_rows_numpy(f, G, d, f0, t0, slope0) -> np.ndarray:
    """For each row: f(p + t0 d) <= f0 + c1 t0 g.d and |G.d| <= c2 |g.d| (slope0 = g.d < 0),
    strong_wolfe's first iteration, vectorized; where some row fails, the rounding fallback of
    _sufficient_decrease is tried on every row (rows that passed stay accepted)."""
    s = _rowdot(G, d)
    c1, c2 = WOLFE_C1, WOLFE_C2
    with np.errstate(invalid="ignore"):
        accept = (f <= f0 + c1 * t0 * slope0) & (np.abs(s) <= -c2 * slope0)
        if not accept.all():
            accept |= (np.isfinite(f) & (f <= f0 + 1e-10 * np.abs(f0))
                       & (s <= (1.0 - 2.0 * c1) * -slope0)
                       & (np.abs(s) <= -c2 * slope0))
    return accept


def _two_loop_rows(g, memory, order, rho, gamma, n_pairs):
    """_two_loop_rows_numpy compiled (gradstep._core.two_loop_rows, two_loop.hpp) where the C++
    core is built: one call instead of a few NumPy calls per pair, a batched round's largest cost
    on small problems. Directions agree with the NumPy version's to rounding."""
    two_loop_rows = _compiled("two_loop_rows")
    if two_loop_rows is None:  # the pure-Python install
        return _two_loop_rows_numpy(g, memory, order, rho, gamma, n_pairs)
    oldest = order.shape[1] - int(n_pairs.max())
    return two_loop_rows(
        np.ascontiguousarray(g, dtype=np.float64), np.ascontiguousarray(memory, dtype=np.float64),
        np.ascontiguousarray(order, dtype=np.int64), np.ascontiguousarray(rho, dtype=np.float64),
        np.ascontiguousarray(gamma, dtype=np.float64), oldest)


def _two_loop_rows_numpy(g, memory, order, rho, gamma, n_pairs):
    """_two_loop for each row of g (r, D) at once: the same operations in the same order per
    row, the dot products as row sums (einsum's), so a batched run's iterates follow
    LBFGS.iterate's to rounding.

    memory (r, 2m, D) holds each row's s vectors in [:, :m] and its y vectors in [:, m:], a
    ring of m slots; order (r, m) lists a row's slots oldest first, right-aligned (its
    n_pairs[i] pairs in the last entries); rho (r, m) is 1/s'y per slot, gamma (r,) s'y/y'y
    of the newest pair (1 without pairs). When every ring is at the same slot (the runs
    stepped together, the usual case) a pair is a view of memory, else a gather."""
    r, two_m, _ = memory.shape
    m = two_m // 2
    lockstep = bool((order[:, 0] == order[0, 0]).all())
    each = np.arange(r)

    def pair(c):
        if lockstep:
            slot = int(order[0, c])
            return memory[:, slot], memory[:, m + slot], rho[:, slot]
        slot = order[:, c]
        return memory[each, slot], memory[each, m + slot], rho[each, slot]

    q = g.copy()
    tmp = np.empty_like(q)
    alphas = np.zeros((r, m))
    oldest = m - int(n_pairs.max())
    for c in range(m - 1, oldest - 1, -1):  # newest first; an empty slot has rho 0
        S, Y, rho_c = pair(c)
        a = rho_c * np.einsum("ij,ij->i", S, q)
        np.multiply(Y, a[:, None], out=tmp)
        np.subtract(q, tmp, out=q)
        alphas[:, c] = a
    q *= gamma[:, None]
    for c in range(oldest, m):
        S, Y, rho_c = pair(c)
        b = rho_c * np.einsum("ij,ij->i", Y, q)
        np.multiply(S, (alphas[:, c] - b)[:, None], out=tmp)
        np.add(q, tmp, out=q)
    return q


# LBFGSRuns.requests: when at least this share of the rows start an iteration (the others are in
# their own line searches), the two-loop recursion runs over every row and the rows asked for are
# taken from its result (a row's direction depends on its own pairs only); below it, the rows'
# memories are gathered first. A gather copies r x 2m x D values (20 MB a round for digits' 50
# cross-validation runs at m = 40), more than the searching rows' wasted recursions cost:
# GDClassifierCV on digits, 1 thread, Zen 3: requests' own time 105 -> 15 ms (cProfile), the fit
# 1.09 -> 1.03 s (min of 8 alternated fits; medians equal, 1.16 s), the same C_ and coef_.
RECURSE_ALL_SHARE = 0.25


class LBFGSRuns:
    """The lbfgs rule without an L1 term for many runs at once: LBFGS.iterate's algorithm
    (same directions to rounding, same line search, same passes), its per-run work on arrays.

    The driver runs one LBFGSRuns per lbfgs rule (its runs' rows here: ``runs`` are their
    indices in the fit). Each round it asks ``requests()`` for the points to evaluate (every
    run that starts an iteration: the first trial of its line search, all rows in a few
    NumPy calls; a run whose first trial failed: its own strong_wolfe generator's next
    point), answers them with one batched pass through ``receive``, and ``drop``s the runs it
    stopped. The directions come from _two_loop_rows (the two-loop recursion of all rows at
    once, the one LBFGS.iterate's _Pairs calls for its single row); the other dot products
    here are row sums (einsum's), in another order than ndarray.dot's, so iterates differ
    from LBFGS.iterate's at the rounding level only. The first trial is accepted by the
    strong Wolfe test of strong_wolfe's first iteration, vectorized; any other outcome hands
    the run to _lbfgs_search with that trial's answer, which goes on exactly as
    LBFGS.iterate's search would."""

    def __init__(self, rule: LBFGS, runs, P, loss, G):
        self.rule = rule
        self.runs = np.array(runs, dtype=np.intp)
        self.p = np.array(P, dtype=np.float64)
        self.loss = np.array(loss, dtype=np.float64)
        self.g = np.array(G, dtype=np.float64)
        n, D = self.p.shape
        m = rule.m
        self.memory = np.zeros((n, 2 * m, D))  # s then y: rings of m slots
        self.head = np.zeros(n, dtype=np.intp)  # each row's next slot
        self.rho = np.zeros((n, m))  # 1/s'y per slot (0: empty)
        self.gamma = np.ones(n)
        self.n_pairs = np.zeros(n, dtype=np.intp)
        self.first = np.ones(n, dtype=bool)
        self.searching = np.zeros(n, dtype=bool)  # rows in their own line search
        self.searches: dict[int, Any] = {}  # run -> its own line search (after a failed trial)
        self.asks: dict[int, np.ndarray] = {}  # run -> the point that search waits on
        self._trial: tuple | None = None  # this round's first trials: (rows, d, t0, Q, g.d)
        self._asked: list[int] = []  # this round's searching runs, in request order
        self._done: list[tuple[int, Any]] = []  # (row, found) of searches ended this round
        self._rows: dict[int, int] | None = None  # run -> row (made when first needed)

    def __len__(self) -> int:
        return int(self.runs.size)

    def _row(self, run: int) -> int:
        if self._rows is None:
            self._rows = {r: i for i, r in enumerate(self.runs.tolist())}
        return self._rows[run]

    def _order(self, head: np.ndarray) -> np.ndarray:
        """The ring slots oldest first, right-aligned, of rows whose next slot is head."""
        return (head[:, None] + np.arange(self.rule.m)) % self.rule.m

    def _clear(self, rows) -> None:
        self.memory[rows] = 0.0
        self.rho[rows] = 0.0
        self.gamma[rows] = 1.0
        self.n_pairs[rows] = 0

    def requests(self):
        """This round's points: (runs (r,), points (r, D)), and the runs that stalled before
        asking (no representable step and no memory to retry without)."""
        stalls: list[int] = []
        self._trial = None
        whole = not self.searches
        rows = np.flatnonzero(~self.searching) if not whole else None
        if whole or rows.size:
            if whole:
                rows = np.arange(len(self))
                p, g, n_pairs, first = self.p, self.g, self.n_pairs, self.first
            else:
                p, g, n_pairs, first = self.p[rows], self.g[rows], self.n_pairs[rows], \
                    self.first[rows]
            if n_pairs.any():
                if whole or rows.size >= RECURSE_ALL_SHARE * len(self):
                    d = _two_loop_rows(self.g, self.memory, self._order(self.head), self.rho,
                                       self.gamma, self.n_pairs)
                    d = d if whole else d[rows]
                else:
                    d = _two_loop_rows(g, self.memory[rows], self._order(self.head[rows]),
                                       self.rho[rows], self.gamma[rows], n_pairs)
                np.negative(d, out=d)
            else:
                d = -g
            gd = _rowdot(g, d)
            bad = ~(gd < 0.0)  # not a descent direction (rounding): restart
            if bad.any():
                self._clear(rows[bad])
                d[bad] = -g[bad]
                gd[bad] = -_rowdot(g[bad], g[bad])
                n_pairs = self.n_pairs[rows]
            t0 = np.full(rows.size, float(self.rule.lr))
            if first.any():
                t0[first] = np.minimum(1.0, 1.0 / np.maximum(np.abs(g[first]).sum(axis=1),
                                                               1e-300))
            Q = t0[:, None] * d
            # _negligible(Q - p, p) up to rounding: a step too short to change p
            small = t0 * np.sqrt(_rowdot(d, d)) <= 4.0 * EPS * (1.0 + np.sqrt(_rowdot(p, p)))
            Q += p
            if small.any():
                for i in np.flatnonzero(small):  # its own search decides: retry or stall
                    run = int(self.runs[rows[i]])
                    gen = _lbfgs_search(p[i], float(self.loss[rows[i]]), g[i], d[i],
                                        float(t0[i]), bool(n_pairs[i] > 0))
                    self._advance(run, gen, None, stalls)
                keep = ~small
                if keep.any():
                    self._trial = (rows[keep], d[keep], t0[keep], Q[keep], gd[keep])
            else:
                self._trial = (rows, d, t0, Q, gd)
        self._asked = list(self.asks)
        trial_runs = self.runs[self._trial[0]] if self._trial is not None else np.zeros(0, int)
        if self._asked:
            runs = np.concatenate([trial_runs, np.array(self._asked, dtype=np.intp)])
            extra = np.array([self.asks[k] for k in self._asked])
            points = extra if self._trial is None else np.concatenate([self._trial[3], extra])
        else:
            runs = trial_runs
            points = self._trial[3] if self._trial is not None else np.zeros((0, self.p.shape[1]))
        return runs, points, stalls

    def _advance(self, run, gen, answer, stalls):
        """Run a searching run's generator on to its next request, or to its end."""
        try:
            request = next(gen) if answer is None else gen.send(answer)
        except StopIteration as end:
            self.searches.pop(run, None)
            self.asks.pop(run, None)
            found, stale = end.value
            row = self._row(run)
            self.searching[row] = False
            if stale:
                self._clear(row)
            if found is None:
                stalls.append(run)
            else:
                self._done.append((row, found))  # finished with the round's others
            return
        self.searches[run] = gen
        self.asks[run] = request.p
        self.searching[self._row(run)] = True

    def receive(self, losses, grads):
        """The answers to ``requests()``'s points, in its order. Returns (rows, t) of the runs
        that completed an iteration, rows ascending (their new weights, loss and gradient in
        self.p, .loss, .g; their runs self.runs[rows]), and the runs that stalled."""
        self._done = []
        stalls: list[int] = []
        losses = np.asarray(losses, dtype=np.float64)
        n_trial = 0 if self._trial is None else self._trial[0].size
        stepped_rows = np.zeros(0, dtype=np.intp)
        stepped_t = np.zeros(0)
        if n_trial:
            rows, d, t0, Q, slope0 = self._trial
            whole = n_trial == len(self)
            f, G = losses[:n_trial], grads[:n_trial]
            f0 = self.loss if whole else self.loss[rows]
            accept = _accept_rows(f, G, d, f0, t0, slope0)
            if accept.all():
                stepped_rows, stepped_t = rows, t0
                self._finish(rows, Q, f, G, t0, whole)
            else:
                ok = np.flatnonzero(accept)
                if ok.size:
                    stepped_rows, stepped_t = rows[ok], t0[ok]
                    self._finish(rows[ok], Q[ok], f[ok], G[ok], t0[ok])
                for i in np.flatnonzero(~accept):
                    row = int(rows[i])
                    run = int(self.runs[row])
                    gen = _lbfgs_search(self.p[row], float(f0[i]), self.g[row], d[i],
                                        float(t0[i]), bool(self.n_pairs[row] > 0),
                                        first=(float(f[i]), G[i]))
                    self._advance(run, gen, None, stalls)
        for j, run in enumerate(self._asked):
            self._advance(run, self.searches[run], (float(losses[n_trial + j]),
                                                    grads[n_trial + j]), stalls)
        if self._done:
            rows = np.array([r for r, _ in self._done], dtype=np.intp)
            t = np.array([found[0] for _, found in self._done])
            self._finish(rows, np.array([found[1] for _, found in self._done]),
                         np.array([found[2] for _, found in self._done]),
                         np.array([found[3] for _, found in self._done]), t)
            stepped_rows = np.concatenate([stepped_rows, rows])
            stepped_t = np.concatenate([stepped_t, t])
            ascending = np.argsort(stepped_rows)  # every row stepped: then rows is arange
            stepped_rows, stepped_t = stepped_rows[ascending], stepped_t[ascending]
        return stepped_rows, stepped_t, stalls

    def _finish(self, rows, Q, f, G, t, whole=False) -> None:
        """Rows that accepted a step (whole: every row, in order): the new pair (when its
        curvature is positive), then the new point. The pairs go in through
        gradstep._core.push_pairs_rows where the C++ core is built (one call instead of ~20 NumPy
        calls; s'y and y'y to rounding), else through _push_pairs_numpy (the specification)."""
        push = _compiled("push_pairs_rows")
        if push is not None and self.head.dtype == np.int64 and self.n_pairs.dtype == np.int64:
            Q = np.ascontiguousarray(Q, dtype=np.float64)
            G = np.ascontiguousarray(G, dtype=np.float64)
            push(np.ascontiguousarray(rows, dtype=np.int64), Q, G, self.p, self.g, self.memory,
                 self.head, self.rho, self.gamma, self.n_pairs, EPS)
        else:
            self._push_pairs_numpy(rows, Q, G, whole)
        if whole:
            # the round's own arrays become the state (nothing else writes into them; a
            # search generator's views of the old rows stay as they were)
            self.p, self.g = Q, np.asarray(G, dtype=np.float64)
            self.loss = np.array(f, dtype=np.float64)
            self.first[:] = False
        else:
            self.p[rows] = Q
            self.loss[rows] = f
            self.g[rows] = G
            self.first[rows] = False

    def _push_pairs_numpy(self, rows, Q, G, whole) -> None:
        """_finish's pair step: s = Q - p and y = G - g of the rows, pushed where s'y > EPS y'y,
        with their gamma and pair counts."""
        if whole:
            s = Q - self.p
            y = G - self.g
        else:
            s = Q - self.p[rows]
            y = G - self.g[rows]
        sy, yy = _rowdot(s, y), _rowdot(y, y)
        keep = sy > EPS * yy
        if whole and keep.all():  # in place, no gathers
            self._push(rows, s, y, sy)
            np.divide(sy, yy, out=self.gamma)
            np.minimum(self.n_pairs + 1, self.rule.m, out=self.n_pairs)
        elif keep.any():
            pr = rows[keep]
            self._push(pr, s[keep], y[keep], sy[keep])
            self.gamma[pr] = sy[keep] / yy[keep]
            self.n_pairs[pr] = np.minimum(self.n_pairs[pr] + 1, self.rule.m)

    def _push(self, rows, s, y, sy) -> None:
        """Append the pairs (s, y) (s'y = sy) to the memories of rows (distinct, in any
        order): into each ring's next slot, over its oldest pair."""
        m = self.rule.m
        head = self.head[rows]
        self.memory[rows, head] = s
        self.memory[rows, m + head] = y
        self.rho[rows, head] = 1.0 / sy
        head += 1
        head %= m
        self.head[rows] = head

    def drop(self, gone: np.ndarray) -> None:
        """Forget the rows where gone is True (runs stopped by the driver)."""
        if self.searches:
            for run in self.runs[gone].tolist():
                gen = self.searches.pop(run, None)
                if gen is not None:
                    gen.close()
                self.asks.pop(run, None)
        keep = ~gone
        self._rows = None
        for name in ("runs", "p", "loss", "g", "memory", "head", "rho", "gamma", "n_pairs",
                     "first", "searching"):
            setattr(self, name, getattr(self, name)[keep])


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
