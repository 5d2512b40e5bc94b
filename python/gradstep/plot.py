"""Pictures of what each step rule does (needs matplotlib: ``pip install gradstep[plot]``).

Every function takes the result of ``gradstep.fit(..., history=True)`` — one run (1-D history)
or a batched call (2-D history, one line per run) — draws on ``ax`` (a new figure when None) and
returns the Axes; ``plot_compare`` puts the three pictures side by side and returns the Figure.

- ``plot_history``: the loss gap to the optimum against the iteration (log scale): how fast each
  rule gets there, and which ones stall or diverge.
- ``plot_gradient_vs_distance``: the gradient norm against the distance to the optimum (log-log).
  The gradient's magnitude is the local steepness, not a ruler: for an L-smooth, mu-strongly
  convex loss mu*dist <= ||g|| <= L*dist, a band whose width is the condition number. Needs
  ``fit(..., reference=optimum)``.
- ``plot_steps``: the length of every step (log scale): a normalized step stays at lr, a vanilla
  step shrinks with the gradient, an adaptive step follows its running averages.

matplotlib is imported inside the functions, never when gradstep is imported.
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass

import numpy as np

from .rules import RULES, StepRule

__all__ = ["plot_compare", "plot_gradient_vs_distance", "plot_history", "plot_steps"]

#: the x axes ``plot_history`` can draw against
X_AXES = ("iteration", "passes")

# one colour per rule, the same in every picture, in the order of the registry RULES (a new rule
# gets the next colour); several lrs or schedules of one rule differ by line style
_PALETTE = (
    "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
    "tab:gray", "tab:olive", "tab:cyan", "black", "magenta", "navy", "lime", "goldenrod", "teal",
)
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
#: the margin under the lowest loss seen when no optimum_loss is given
NO_OPTIMUM_MARGIN = 1e-9
#: a diverging run is followed up to this factor above the largest starting value, then cut
_CEILING_FACTOR = 1e4


# ---------------------------------------------------------------------------------------------
# the three pictures
# ---------------------------------------------------------------------------------------------


def plot_history(result, ax=None, optimum_loss: float | None = None, *, x: str = "iteration"):
    """Loss gap to the optimum, ``loss - optimum_loss``, against the iteration or the passes
    over X (log y).

    One line per run, labelled "rule lr=..." (a curvature rule, which needs no rate, by its
    name). Without ``optimum_loss`` the gap is taken to the lowest loss any run reached minus a
    tiny margin (``NO_OPTIMUM_MARGIN`` times max(1, |loss|)), and the y label says so. Gaps
    below machine precision are drawn at that precision. A run that diverged is drawn up to
    its last finite loss and marked "(diverged)".

    Parameters
    ----------
    result : FitResult
        What ``gradstep.fit(..., history=True)`` returned: one run or a batch of K.
    ax : matplotlib.axes.Axes, optional
        Where to draw; default: the axes of a new pyplot figure.
    optimum_loss : float, optional
        The optimal loss, e.g. ``gradstep.optimum.solve(...).loss``.
    x : {"iteration", "passes"}, default "iteration"
        The x axis. "iteration": the iteration counter (epochs with mini-batches).
        "passes": the cumulative passes over X (``history.passes``: every gradient and every
        Hessian-vector product is one pass), the cost that compares rules fairly: a line
        search or a Newton-CG iteration costs several passes, a first-order step one.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``, with one line per run.

    Raises
    ------
    ValueError
        If ``x`` is not one of ``X_AXES``, or is "passes" for a history without passes.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from sklearn.datasets import make_classification
    >>> import gradstep as gs
    >>> from gradstep.optimum import solve
    >>> X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    >>> result = gs.fit(X, y, ["sgd", "adam", "lbfgs"], lr=[0.5, 0.05, None], alpha=0.01,
    ...                 max_iter=50)
    >>> best = solve(X, y, alpha=0.01).loss
    >>> ax = plot_history(result, Figure().subplots(), optimum_loss=best, x="passes")
    >>> [line.get_label() for line in ax.get_lines()]
    ['sgd lr=0.5', 'adam lr=0.05', 'lbfgs']
    >>> ax.get_xlabel()
    'passes over X'
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(map(repr, X_AXES))}, got {x!r}")
    if x == "passes" and _get_history(result).passes is None:
        raise ValueError("this history has no passes; plot it with x='iteration'")
    loss = _history(result, "loss")
    if optimum_loss is None:
        finite = loss[np.isfinite(loss)]
        best = float(finite.min()) if finite.size else 0.0
        optimum = best - NO_OPTIMUM_MARGIN * max(1.0, abs(best))
        ylabel = "loss − lowest loss seen\n(no optimum given; floor 1e-9)"
    else:
        optimum = float(optimum_loss)
        ylabel = "loss − optimal loss"
    floor = 4 * np.finfo(np.float64).eps * max(abs(optimum), np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore"):
        gap = np.where(np.isfinite(loss), np.maximum(loss - optimum, floor), np.nan)
    gap = _cut_above(gap, _ceiling(gap[:, :1]))
    if x == "passes":
        xs = _history(result, "passes")
    else:
        xs = np.broadcast_to(np.arange(gap.shape[1], dtype=np.float64), gap.shape)
    ax = _axes(ax)
    for k, style in enumerate(_styles(result)):
        ax.plot(xs[k], gap[k], **style)
    ax.set_yscale("log")
    ax.set_xlabel("passes over X" if x == "passes" else "iteration")
    ax.set_ylabel(ylabel)
    ax.set_title("How fast each rule gets there:\nloss gap to the optimum"
                 + (" per pass over X" if x == "passes" else ""))
    _finish(ax)
    return ax


def plot_gradient_vs_distance(result, ax=None, *, lipschitz: float | None = None,
                              mu: float | None = None):
    """Gradient norm against distance to the optimum (log-log), every iterate of every run.

    Answers "does the gradient's magnitude tell me how far the minimum is?": if it did, every
    run would lie on one line. Needs the distances that ``fit(..., reference=optimum)`` records.
    With ``lipschitz`` (L) the region ||g|| <= L*dist, which every point must lie in, is shaded;
    with ``mu`` too (the curvature at the optimum, e.g. the Hessian's smallest eigenvalue) the
    band mu*dist <= ||g|| <= L*dist is shaded instead: a band, not a ruler.

    Parameters
    ----------
    result : FitResult
        What ``gradstep.fit(..., history=True, reference=optimum)`` returned.
    ax : matplotlib.axes.Axes, optional
        Where to draw; default: the axes of a new pyplot figure.
    lipschitz : float, optional
        L, the largest curvature anywhere (``gradstep.lipschitz_constant``).
    mu : float, optional
        The smallest curvature at the optimum: the smallest eigenvalue of
        ``gradstep.optimum.hessian`` there. Used only with ``lipschitz``.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``, log-log, with one line per run (and the shaded band).

    Raises
    ------
    ValueError
        If the result recorded no distances (``fit`` was given no ``reference=``).

    Examples
    --------
    >>> import numpy as np
    >>> from matplotlib.figure import Figure
    >>> from gradstep import fit, optimum
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 3))
    >>> y = (X[:, 0] + rng.standard_normal(200) > 0).astype(float)
    >>> opt = optimum.solve(X, y, alpha=0.01)
    >>> result = fit(X, y, ["sgd", "normalized"], lr=[1.0, 0.1], alpha=0.01, max_iter=30,
    ...              reference=np.append(opt.coef, opt.intercept))

    The curvature is largest at z = 0 (L) and smallest near the optimum (mu):

    >>> L = np.linalg.eigvalsh(optimum.hessian(X, np.zeros(3), alpha=0.01))[-1]
    >>> mu = np.linalg.eigvalsh(optimum.hessian(X, opt.coef, opt.intercept, alpha=0.01))[0]
    >>> ax = plot_gradient_vs_distance(result, Figure().subplots(), lipschitz=L, mu=mu)
    >>> ax.get_xscale(), ax.get_yscale(), len(ax.get_lines())
    ('log', 'log', 2)
    """
    history = _get_history(result)
    if history.distance is None:
        raise ValueError(
            "this result has no distances to the optimum: pass reference= (the optimum's coef "
            "and intercept) to gradstep.fit to record them, e.g. "
            "fit(X, y, ..., reference=np.append(coef_opt, intercept_opt))"
        )
    dist = _history(result, "distance")
    grad = _history(result, "grad_norm")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(dist) & np.isfinite(grad) & (dist > 0) & (grad > 0)
    dist = np.where(ok, dist, np.nan)
    grad = np.where(ok, grad, np.nan)
    # a diverging run ends where it leaves the picture (its values race towards 1e308)
    over = (dist > _ceiling(dist[:, :1])) | (grad > _ceiling(grad[:, :1]))
    dist = _cut_where(dist, over)
    grad = _cut_where(grad, over)
    ax = _axes(ax)
    for k, style in enumerate(_styles(result)):
        ax.plot(dist[k], grad[k], **style)
    if lipschitz is not None and ok.any():
        lo, hi = np.nanmin(dist), np.nanmax(dist)
        span = np.geomspace(lo / 1.5, hi * 1.5, 50)
        low = span * mu if mu is not None and mu > 0 else np.full_like(span, np.nanmin(grad) / 1.5)
        label = (f"μ·dist ≤ ‖g‖ ≤ L·dist\n(L = {lipschitz:.3g}, μ = {mu:.3g})"
                 if mu is not None and mu > 0 else f"‖g‖ ≤ L·dist (L = {lipschitz:.3g})")
        ax.fill_between(span, low, span * lipschitz, color="0.85", alpha=0.6, zorder=0,
                        linewidth=0, label=label)
        ax.set_xlim(span[0], span[-1])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.text(0.02, 0.98, "runs start at the right and move left",
            transform=ax.transAxes, ha="left", va="top", fontsize="small", color="0.3")
    ax.set_xlabel("distance to the optimum ‖p − p*‖")
    ax.set_ylabel("gradient norm ‖g‖")
    ax.set_title("Does ‖g‖ tell how far the minimum is?\ngradient norm vs distance to the optimum")
    _finish(ax)
    return ax


def plot_steps(result, ax=None):
    """Length of the step taken at every iteration (log y); entry 0, the start, is skipped.

    A normalized step has length lr_t whatever the gradient; a vanilla step is lr*||g|| and
    shrinks as the gradient does; adaptive steps follow their running averages. Zero-length
    steps (a normalized step at g = 0) are left out of the log scale.

    Parameters
    ----------
    result : FitResult
        A fit that kept its history (the default of ``gradstep.fit``), single or batched.
    ax : matplotlib.axes.Axes, optional
        The axes to draw on; None opens a new pyplot figure.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``, with one line per run; x is the iteration, from 1.

    Examples
    --------
    A normalized step has the length of its learning rate, whatever the gradient:

    >>> import numpy as np
    >>> from matplotlib.figure import Figure
    >>> from sklearn.datasets import make_classification
    >>> from gradstep import fit
    >>> X, y = make_classification(n_samples=100, n_features=3, n_informative=2,
    ...                            n_redundant=0, random_state=1)
    >>> result = fit(X, y, "normalized", lr=0.05, max_iter=20)
    >>> steps = plot_steps(result, Figure().subplots()).get_lines()[0].get_ydata()
    >>> bool(np.allclose(steps[:result.n_iter], 0.05))
    True
    """
    steps = _history(result, "step_norm")[:, 1:]
    with np.errstate(invalid="ignore"):
        steps = np.where(np.isfinite(steps) & (steps > 0), steps, np.nan)
    steps = _cut_above(steps, _ceiling(steps[:, :1]))
    ax = _axes(ax)
    for k, style in enumerate(_styles(result)):
        ax.plot(np.arange(1, steps.shape[1] + 1), steps[k], **style)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("step length ‖p_t − p_(t−1)‖")
    ax.set_title("Step length per iteration:\nnormalized = lr, vanilla shrinks with ‖g‖")
    _finish(ax)
    return ax


def plot_compare(result, optimum_loss: float | None = None, *, title: str | None = None,
                 lipschitz: float | None = None, mu: float | None = None, fig=None,
                 x: str = "iteration", seconds_per_pass: float | None = None):
    """The three pictures side by side (1 x 3) with one legend below them; returns the Figure.

    The panels are ``plot_history`` (against ``x``), ``plot_gradient_vs_distance`` and
    ``plot_steps``. Without distances (no ``reference=`` given to fit) the middle panel says
    how to get them. With ``x="passes"`` and ``seconds_per_pass`` the left panel has a second
    x axis on top: the estimated time, passes times ``seconds_per_pass``.

    Parameters
    ----------
    result : FitResult
        What ``gradstep.fit(..., history=True)`` returned, best with ``reference=`` the optimum.
    optimum_loss : float, optional
        The optimal loss, for the left panel (see ``plot_history``).
    title : str, optional
        A title above the three panels.
    lipschitz, mu : float, optional
        The curvature bounds of the middle panel (see ``plot_gradient_vs_distance``).
    fig : matplotlib.figure.Figure, optional
        Where to draw (``gradstep compare`` passes a bare ``matplotlib.figure.Figure`` so no
        GUI backend is involved); default: a new pyplot figure.
    x : {"iteration", "passes"}, default "iteration"
        The x axis of the left panel (see ``plot_history``); ``gradstep compare`` uses
        "passes".
    seconds_per_pass : float, optional
        The time of one pass over X, for the time axis on top of the left panel (only with
        ``x="passes"``). ``gradstep compare`` estimates it as the wall time of its batched
        call divided by the most passes any run made: every run is charged the time of one
        shared pass of the batch.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig``, 18 inches wide, with three axes and one legend for all runs.

    Examples
    --------
    >>> import numpy as np
    >>> from matplotlib.figure import Figure
    >>> import gradstep as gs
    >>> from gradstep.optimum import solve
    >>> rng = np.random.default_rng(2)
    >>> X = rng.standard_normal((150, 2))
    >>> y = (X.sum(axis=1) + rng.standard_normal(150) > 0).astype(float)
    >>> opt = solve(X, y, alpha=0.1)
    >>> result = gs.fit(X, y, ["sgd", "adam", "rmsprop"], alpha=0.1, max_iter=25,
    ...                 reference=np.append(opt.coef, opt.intercept))
    >>> fig = plot_compare(result, opt.loss, title="three rules", fig=Figure())
    >>> [len(ax.get_lines()) for ax in fig.get_axes()], len(fig.legends)
    ([3, 3, 3], 1)
    """
    n_runs = _history(result, "loss").shape[0]
    # one legend column per rule (a sweep's lrs of one rule stack in its column), at most 7
    n_cols = max(1, min(len({rule.name for rule in _as_tuple(result.rules)}), 7))
    legend_rows = math.ceil(n_runs / n_cols)
    size = (18.0, 5.6 + 0.28 * legend_rows)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=size)
    else:
        fig.set_size_inches(*size)
    axes = fig.subplots(1, 3)
    plot_history(result, axes[0], optimum_loss=optimum_loss, x=x)
    timed = x == "passes" and seconds_per_pass is not None and seconds_per_pass > 0
    if timed:
        spp = float(seconds_per_pass)  # type: ignore[arg-type]
        top = axes[0].secondary_xaxis("top", functions=(lambda p: p * spp, lambda t: t / spp))
        top.set_xlabel(f"estimated time (s): passes × {_duration(spp)} per pass",
                       fontsize="small")
    if _get_history(result).distance is not None:
        plot_gradient_vs_distance(result, axes[1], lipschitz=lipschitz, mu=mu)
    else:
        axes[1].set_axis_off()
        axes[1].text(0.5, 0.5, "no distances recorded:\npass reference= (the optimum)\n"
                     "to gradstep.fit", ha="center", va="center", transform=axes[1].transAxes)
    plot_steps(result, axes[2])
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
    band = [(h, lab) for h, lab in zip(*axes[1].get_legend_handles_labels()) if "L·dist" in lab]
    if band:  # the shaded band explains itself in the middle panel only
        axes[1].legend(*zip(*band), loc="lower right", fontsize="small", framealpha=0.9)
    fig.legend(handles, labels, loc="lower center", ncol=n_cols, frameon=False,
               fontsize="medium")
    if title:
        fig.suptitle(title, fontsize="large")
    # fixed margins in inches (no tight_layout: it can warn, and the legend sits outside)
    height = size[1]
    fig.subplots_adjust(left=0.05, right=0.99, wspace=0.3,
                        top=1.0 - ((1.15 if title else 0.75) + (0.45 if timed else 0.0)) / height,
                        bottom=(0.75 + 0.3 * legend_rows) / height)
    return fig


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _get_history(result):
    history = getattr(result, "history", None)
    if history is None:
        raise ValueError("this result has no history: fit with history=True (the default)")
    return history


def _history(result, name: str) -> np.ndarray:
    """One history array as (K, T) float64, a single run as K = 1."""
    return np.atleast_2d(np.asarray(getattr(_get_history(result), name), dtype=np.float64))


def _as_tuple(value) -> tuple:
    if isinstance(value, (str, bytes)) or np.ndim(value) == 0 and not isinstance(value, tuple):
        return (value,)
    return tuple(value)


def _own_steps(rule) -> bool:
    """A curvature rule: it has no single-gradient update and chooses its step lengths."""
    cls = type(rule)
    return (getattr(cls, "update", None) is StepRule.update
            and getattr(cls, "iterate", None) is not StepRule.iterate)


def _schedule_text(rule) -> str:
    """'' for a constant rate, else e.g. 'inverse_time decay=0.05'."""
    schedule = getattr(rule, "schedule", None)
    name = getattr(schedule, "name", "constant")
    if name == "constant":
        return ""
    params = []
    if is_dataclass(schedule) and not isinstance(schedule, type):
        params = [f"{f.name}={getattr(schedule, f.name):g}" for f in fields(schedule)]
    return " ".join([name, *params])


def _rule_colors(rules: tuple) -> dict:
    """{rule name: colour}: registry rules by their place in RULES, others after them."""
    order = list(RULES)
    for rule in rules:
        if rule.name not in order:
            order.append(rule.name)
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(order)}


def _styles(result) -> list:
    """Label, colour and line style of every run: colour by rule (in the registry's order),
    line style by the run's (schedule, lr) rank among the runs of its rule."""
    rules = _as_tuple(result.rules)
    status = _as_tuple(getattr(result, "status", ("",) * len(rules)))
    colors = _rule_colors(rules)

    def key(rule) -> tuple:
        lr = getattr(rule, "lr", None)
        return (_schedule_text(rule), -1.0 if lr is None else float(lr))

    keys_by_rule: dict = {}
    for rule in rules:
        keys_by_rule.setdefault(rule.name, set()).add(key(rule))
    out = []
    for k, rule in enumerate(rules):
        keys = sorted(keys_by_rule[rule.name])
        lr = getattr(rule, "lr", None)
        label = rule.name
        if lr is not None and not _own_steps(rule):
            label += f" lr={float(lr):.3g}"
        schedule = _schedule_text(rule)
        if schedule:
            label += f" ({schedule})"
        if k < len(status) and str(status[k]) == "diverged":
            label += " (diverged)"
        out.append(dict(
            label=label,
            color=colors[rule.name],
            linestyle=_LINESTYLES[keys.index(key(rule)) % len(_LINESTYLES)],
            linewidth=1.4,
        ))
    return out


def _ceiling(start: np.ndarray) -> float:
    """Where a picture stops following a diverging run: far above every run's start."""
    finite = start[np.isfinite(start)]
    return _CEILING_FACTOR * float(finite.max()) if finite.size else np.inf


def _cut_above(values: np.ndarray, ceiling: float) -> np.ndarray:
    """Each row up to the first value above ``ceiling``, that one drawn at the ceiling."""
    with np.errstate(invalid="ignore"):
        return _cut_where(np.minimum(values, ceiling), values > ceiling)


def _cut_where(values: np.ndarray, over: np.ndarray) -> np.ndarray:
    """NaN after the first True of ``over`` in each row (the first one is kept)."""
    out = values.copy()
    seen = np.cumsum(over, axis=1)
    out[(seen > 1) | ((seen == 1) & ~over)] = np.nan
    return out


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.4, 4.8))
    return ax


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _finish(ax) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
