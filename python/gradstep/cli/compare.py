"""``gradstep compare``: every step rule side by side on one data set, a table and a figure.

By default every first-order rule first gets ITS best learning rate from a batched sweep (8
rates per rule in ONE ``gs.fit`` call with a short budget); then every rule runs at its chosen
rate, with the curvature rules (which need no rate) beside them, in ONE more call.
"""

from __future__ import annotations

import argparse
import math
import os
import textwrap
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import _data, optimum
from .._data import one_line
from ..rules import RULES, SCHEDULES, Schedule, StepRule, default_lr, make_rule, make_schedule
from . import _args
from ._args import UsageError

DEFAULT_OUT = "gradstep-compare.png"
PLOT_NOTE = "note: the figure needs matplotlib: pip install gradstep[plot]"

#: the sweep's rates are the rule's default lr (1/L where the default is "auto") times
#: 10**SWEEP_EXPONENTS: 8 rates half a decade apart, from a tenth of the default to 316 times
#: it. The grid leans upwards because the defaults are cautious on full batch: 1/L bounds the
#: curvature everywhere (the logistic curvature is largest at z = 0, far smaller along the
#: path), and the adaptive rules' defaults are the literature's values for noisy mini-batches.
SWEEP_EXPONENTS = tuple(float(e) for e in np.linspace(-1.0, 2.5, 8))
#: the sweep's budget: this fraction of --max-iter (at least SWEEP_MIN_ITER, at most all of it).
#: Not much shorter: the rules that cannot settle at a constant rate (normalized, rmsprop,
#: adadelta bounce around the optimum at a height that grows with the rate) gain most from a
#: large rate early and lose by it later, so a very short budget picks rates too large for
#: the comparison.
SWEEP_FRACTION = 0.5
SWEEP_MIN_ITER = 20
#: losses within this relative distance of the best are a tie (won by the fewest iterations,
#: then by the smaller rate)
TIE_RTOL = 1e-12
#: the extra run of the default comparison: a normalized step whose length decays, so that its
#: bounce around the optimum (a constant-length step cannot settle) dies out
DECAYING_SCHEDULE = ("inverse_time", {"decay": 0.05})


def first_order(name: str) -> bool:
    """Whether the registry's rule ``name`` steps from the gradient with a learning rate (the
    curvature rules choose their step lengths themselves)."""
    return RULES[name].update is not StepRule.update


def curvature_rules() -> list:
    return [name for name in RULES if not first_order(name)]


def _default_lrs() -> str:
    out = []
    for name in RULES:
        if not first_order(name):
            continue
        lr = default_lr(name)
        if lr is None:
            lr = make_rule(name, None, make_schedule("constant", {}), {}).lr
        out.append(f"{name} {'1/L' if lr == 'auto' else format(lr, 'g')}")
    return ", ".join(out)


def _grid_text() -> str:
    lo, hi = 10.0 ** SWEEP_EXPONENTS[0], 10.0 ** SWEEP_EXPONENTS[-1]
    return (f"{len(SWEEP_EXPONENTS)} rates from {lo:g} to {hi:.0f} times the default, half a "
            "decade apart")


def _paragraphs(*texts: str) -> str:
    return "\n\n".join(textwrap.fill(" ".join(t.split()), width=92) for t in texts) + "\n"


COMPARE_DESCRIPTION = _paragraphs(
    """Fit binary logistic regression (mean logistic loss + alpha/2 ||w||^2, intercept
    unpenalized) with every step rule side by side and show what each does: a table of
    iterations, passes over the data, final loss, gap to the optimum, final gradient norm, train
    accuracy and time, and a figure with the loss gap against passes over X (with the estimated
    time on top), the gradient norm against the distance to the optimum, and the step length
    per iteration.""",
    f"""No learning rate to tune: without --lr, every first-order rule
    ({', '.join(n for n in RULES if first_order(n))}) first runs at {_grid_text()} (1/L where
    the default is 'auto'), all rules x rates in ONE batched gradstep.fit call with a short
    budget ({SWEEP_FRACTION:.0%} of --max-iter, at least {SWEEP_MIN_ITER} iterations); the
    lowest final loss picks each rule's rate (a diverged run never wins). Then every rule runs
    at its chosen rate, plus a normalized run whose rate decays ({DECAYING_SCHEDULE[0]}
    {' '.join(f'{k}={v:g}' for k, v in DECAYING_SCHEDULE[1].items())}: the cure of the
    constant-length step's bounce), plus the curvature rules ({', '.join(curvature_rules())}),
    which need no rate, again in ONE batched call.""",
    """The optimum is a tight solution of the same objective (L-BFGS-B, then Newton); the gap
    is "final loss - optimal loss". A run that diverges is stopped and shown with status
    'diverged'.""",
)

COMPARE_EPILOG = f"""\
examples:
  gradstep compare                                   all {len(RULES)} rules on breast_cancer, each
                                                     first-order rule at its best swept lr
  gradstep compare --rules sgd,normalized,adam --lr 0.01,0.1,1
                                                     a sweep: every rule x every lr
  gradstep compare --rules sgd,normalized --lr 0.5 --schedule inverse_time:decay=0.05
  gradstep compare --data synthetic:n=5000,d=50 --batch-size 256 --max-iter 50
  gradstep compare --data mydata.csv --out mydata.png
"""


def add_compare(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help=f"all {len(RULES)} step rules side by side: a table and a figure",
        description=COMPARE_DESCRIPTION, epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default="breast_cancer", metavar="SOURCE", help=_data.DATA_HELP
                   + " (default: %(default)s)")
    p.add_argument("--rules", type=_args.rule_list, default=None, metavar="R1,R2,...",
                   help=f"comma-separated step rules, or all (default: all {len(RULES)}: "
                   f"{', '.join(RULES)}; curvature rules are left out with --batch-size)")
    p.add_argument("--lr", type=_args.lr_list, nargs="+", default=None, metavar="LR",
                   help="one or several learning rates, comma- or space-separated (0.01,0.1); "
                   "'auto' is 1/L, the largest rate for which vanilla GD never increases the "
                   "loss; 'default' is the rule's own. Several values make a sweep: every "
                   "first-order rule x every lr; the curvature rules "
                   f"({', '.join(curvature_rules())}) take no lr and run once each at their "
                   "defaults. Default: each first-order rule at the best of "
                   f"{_grid_text()} ({_default_lrs()}), chosen by one batched sweep")
    p.add_argument("--schedule", type=_args.schedule, default=("constant", {}),
                   metavar="NAME[:PARAM=VALUE]",
                   help="learning-rate schedule of the first-order rules: "
                   f"{', '.join(SCHEDULES)}; parameters as inverse_time:decay=0.05, "
                   "inverse_power:power=0.5, exponential:gamma=0.99 (default: constant)")
    p.add_argument("--max-iter", type=_args.positive_int, default=500, metavar="N",
                   help="iterations (epochs with --batch-size) per run (default: %(default)s)")
    p.add_argument("--tol", type=_args.nonneg_float, default=1e-10,
                   help="a full-batch run stops when its largest gradient entry is <= tol "
                   "(default: %(default)g)")
    p.add_argument("--batch-size", type=_args.positive_int, default=None, metavar="B",
                   help="mini-batches of B shuffled rows (default: full batch)")
    p.add_argument("--alpha", type=_args.nonneg_float, default=None,
                   help="L2 strength (default: 1/n, the strength of scikit-learn's "
                   "LogisticRegression(C=1), so the optimum is finite)")
    p.add_argument("--backend", choices=("auto", "cpp", "numba", "numpy"), default="auto",
                   help="compute backend (default: %(default)s: the fastest available)")
    p.add_argument("--threads", type=_args.positive_int, default=None, metavar="N",
                   help="threads per pass over X (default: all cores)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="PATH",
                   help="where to write the figure (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    p.add_argument("--seed", type=_args.seed, default=0,
                   help="seed of the synthetic data and the mini-batch shuffle "
                   "(default: %(default)s)")
    p.set_defaults(func=cmd_compare, parser=p)


# ---------------------------------------------------------------------------------------------
# the optimum: a tight solution of the same objective, for the gap and the distances
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimum:
    params: np.ndarray  # (d + 1,): coef then intercept
    loss: float
    grad_norm: float
    method: str
    lipschitz: float  # L: the largest curvature anywhere (1/L is lr="auto")
    mu: float | None  # the smallest curvature at the optimum (Hessian's smallest eigenvalue)


def find_optimum(X: np.ndarray, y: np.ndarray, alpha: float, backend: str = "auto",
                 n_threads: int | None = None) -> Optimum:
    """``gradstep.optimum.solve`` with what the report prints: the gradient norm there, L, and
    mu when the Hessian is small enough to form."""
    import gradstep as gs

    result = optimum.solve(X, y, alpha=alpha, backend=backend, n_threads=n_threads)
    _, grad_coef, grad_intercept = gs.loss_and_grad(X, y, result.coef, result.intercept,
                                                    alpha=alpha, backend=backend,
                                                    n_threads=n_threads)
    grad_norm = float(np.linalg.norm(np.append(grad_coef, grad_intercept)))
    lipschitz = gs.lipschitz_constant(X, None, alpha, True, backend=backend,
                                      n_threads=n_threads)
    method, mu = "L-BFGS-B", None
    if optimum.newton_polishes(X.shape[0], X.shape[1] + 1) and isinstance(X, np.ndarray):
        method += " + Newton"
        hessian = optimum.hessian(X, result.coef, result.intercept, alpha=alpha)
        mu = float(np.linalg.eigvalsh(hessian)[0])
        if mu <= 1e-12 * lipschitz:  # flat direction (alpha = 0, separable)
            mu = None
    return Optimum(np.append(result.coef, result.intercept), float(result.loss), grad_norm,
                   method, lipschitz, mu)


# ---------------------------------------------------------------------------------------------
# the runs: which rules at which rates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One first-order rule with one schedule: a row of the comparison (or several, one per lr
    of an --lr sweep), and 8 runs of the automatic lr sweep."""

    name: str
    schedule: Schedule
    label: str  # "sgd", or "normalized+inverse_time" for the extra decaying run

    def rule(self, lr: float | None) -> StepRule:
        return make_rule(self.name, lr, self.schedule, {})

    def base_lr(self, inv_lipschitz: float) -> float:
        """The centre of this rule's sweep: its default lr (1/L where that is "auto")."""
        lr = default_lr(self.name)
        if lr == "auto":
            return inv_lipschitz
        return float(self.rule(None if lr is None else float(lr)).lr)


def plan_variants(names: Sequence[str], schedule: Schedule, decaying: bool) -> list:
    """The first-order rows in the order of ``names``; with ``decaying`` a normalized rule is
    followed by a normalized run with the DECAYING_SCHEDULE (when --schedule is constant)."""
    out = []
    for name in names:
        if not first_order(name):
            continue
        out.append(Variant(name, schedule, name))
        if decaying and name == "normalized" and schedule.name == "constant":
            sched = make_schedule(*DECAYING_SCHEDULE)
            out.append(Variant(name, sched, f"{name}+{sched.name}"))
    return out


def sweep_rates(base: float) -> np.ndarray:
    """The rates a rule with default ``base`` is tried at."""
    return base * 10.0 ** np.asarray(SWEEP_EXPONENTS)


def sweep_iterations(max_iter: int) -> int:
    """The sweep's budget: a fraction of the comparison's."""
    return min(max_iter, max(SWEEP_MIN_ITER, int(round(SWEEP_FRACTION * max_iter))))


def choose(losses: np.ndarray, status: Sequence[str], n_iter: np.ndarray,
           rates: np.ndarray) -> int | None:
    """The index of the winning rate: the lowest final loss among the runs that did not diverge
    (ties within TIE_RTOL: the fewest iterations, then the smaller rate); None when all
    diverged."""
    losses = np.asarray(losses, dtype=np.float64)
    ok = np.isfinite(losses) & (np.asarray(status) != "diverged")
    if not ok.any():
        return None
    best = float(losses[ok].min())
    tied = np.flatnonzero(ok & (losses <= best + TIE_RTOL * max(1.0, abs(best))))
    return int(min(tied, key=lambda i: (int(n_iter[i]), float(rates[i]))))


@dataclass(frozen=True)
class SweepResult:
    chosen: dict  # label -> lr
    marks: dict  # label -> "" | "*" (at the grid's edge) | "!" (every rate diverged)
    n_runs: int
    iterations: int
    seconds: float

    def line(self) -> str:
        parts = [f"{label} {lr:.3g}{self.marks[label]}" for label, lr in self.chosen.items()]
        return (f"best lr per rule ({len(SWEEP_EXPONENTS)}-rate sweep, one call): "
                + ", ".join(parts))


def run_sweep(gs, X, y, variants: list, inv_lipschitz: float, common: dict) -> SweepResult:
    """Every variant at every rate of its grid in ONE gs.fit call; the best rate of each."""
    grids = [sweep_rates(v.base_lr(inv_lipschitz)) for v in variants]
    rules = [v.rule(float(lr)) for v, grid in zip(variants, grids) for lr in grid]
    iterations = sweep_iterations(common["max_iter"])
    options = dict(common, max_iter=iterations, history=False)
    gs.fit(X, y, rules, **dict(options, max_iter=1))  # warm-up, as for the comparison
    start = time.perf_counter()
    result = gs.fit(X, y, rules, **options)
    seconds = time.perf_counter() - start
    chosen, marks = {}, {}
    width = len(SWEEP_EXPONENTS)
    for j, (variant, grid) in enumerate(zip(variants, grids)):
        part = slice(j * width, (j + 1) * width)
        i = choose(result.loss[part], result.status[part], result.n_iter[part], grid)
        if i is None:  # every rate diverged: the smallest is the best guess
            chosen[variant.label], marks[variant.label] = float(grid[0]), "!"
        else:
            chosen[variant.label] = float(grid[i])
            marks[variant.label] = "*" if i in (0, width - 1) else ""
    return SweepResult(chosen, marks, len(rules), iterations, seconds)


# ---------------------------------------------------------------------------------------------
# gradstep compare
# ---------------------------------------------------------------------------------------------


def _check_out(path: str) -> None:
    """Fail before any work when the figure cannot be written where asked."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise UsageError(f"--out {path!r} is a directory; give a file name such as {DEFAULT_OUT}")
    if not os.path.isdir(folder):
        raise UsageError(f"--out {path!r}: the folder {folder!r} does not exist")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return
    types = FigureCanvasBase.get_supported_filetypes()
    if ext not in types:
        raise UsageError(
            f"--out {path!r}: cannot tell the image format from the extension; "
            f"use one of {', '.join('.' + t for t in sorted(types))}"
        )


def _check_rules(names: list, explicit: bool, schedule: Schedule, batch_size: int | None,
                 lrs: list | None) -> tuple:
    """(rule names to run, notes to print): what the curvature rules can and cannot do."""
    curvature = [n for n in names if not first_order(n)]
    which = ", ".join(curvature)
    one = len(curvature) == 1
    notes = []
    if curvature and batch_size:
        if explicit:
            raise UsageError(
                f"{which} {'is a full-batch method' if one else 'are full-batch methods'} (a "
                "line search needs the whole objective) and cannot run with --batch-size; drop "
                "--batch-size or leave the curvature rules out of --rules"
            )
        notes.append(f"note: mini-batches: the full-batch curvature rules ({which}) are left out")
        names = [n for n in names if first_order(n)]
        curvature = []
    if curvature and schedule.name != "constant":
        own = ("chooses its own step length and takes" if one
               else "choose their own step lengths and take")
        if len(curvature) == len(names):
            raise UsageError(
                f"--schedule {schedule.name}: {which} {own} no schedule; add a first-order rule "
                "to --rules or drop --schedule"
            )
        notes.append(f"note: the schedule applies to the first-order rules only: {which} {own} "
                     "none")
    if curvature and lrs:
        notes.append(f"note: {which} {'takes' if one else 'take'} no learning rate: one run "
                     f"{'' if one else 'each '}at the defaults (--lr applies to the first-order "
                     "rules)")
    return names, notes


def _resolve_lr(name: str, lr, inv_lipschitz: float) -> float | None:
    """An --lr value as a number (None: the class default)."""
    if lr is None:
        lr = default_lr(name)
    if lr == "auto":
        return inv_lipschitz
    return None if lr is None else float(lr)


def cmd_compare(args) -> int:
    import gradstep as gs

    lrs = [v for group in args.lr for v in group] if args.lr else None
    if not args.no_plot:
        _check_out(args.out)
    schedule = make_schedule(*args.schedule)
    names, notes = _check_rules(list(RULES) if args.rules is None else args.rules,
                                args.rules is not None, schedule, args.batch_size, lrs)
    try:
        data = _data.load(args.data, seed=args.seed)
    except OSError as exc:
        raise UsageError(f"--data {args.data!r}: {exc.strerror or one_line(exc)}") from None
    except ValueError as exc:  # DataError included
        raise UsageError(one_line(exc)) from None
    X, y = data.X, data.y
    n, d = X.shape
    alpha = 1.0 / n if args.alpha is None else args.alpha
    common = dict(alpha=alpha, max_iter=args.max_iter, tol=args.tol, batch_size=args.batch_size,
                  random_state=args.seed, backend=args.backend, n_threads=args.threads)
    variants = plan_variants(names, schedule, decaying=lrs is None)
    sweep = None
    try:
        gs._backends.get(args.backend)
        if args.batch_size is not None and args.batch_size > n:
            raise ValueError(f"--batch-size {args.batch_size} is larger than the {n} samples")
        opt = find_optimum(X, y, alpha, args.backend, args.threads)
        inv_l = 1.0 / opt.lipschitz
        with warnings.catch_warnings():
            # the table shows them
            warnings.simplefilter("ignore", gs.DivergenceWarning)
            warnings.simplefilter("ignore", gs.StallWarning)
            if lrs is None and variants:
                sweep = run_sweep(gs, X, y, variants, inv_l, common)
            rules = []
            for name in names:
                if not first_order(name):
                    rules.append(make_rule(name, None, make_schedule("constant", {}), {}))
                    continue
                for variant in (v for v in variants if v.name == name):
                    if sweep is not None:
                        rules.append(variant.rule(sweep.chosen[variant.label]))
                    else:
                        rules.extend(variant.rule(_resolve_lr(name, lr, inv_l)) for lr in lrs or [])
            # warm-up: thread pool, page faults, Numba's compilation stay out of the timings
            gs.fit(X, y, rules, reference=opt.params, **dict(common, max_iter=1))
            start = time.perf_counter()
            result = gs.fit(X, y, rules, reference=opt.params, **common)
            batched_seconds = time.perf_counter() - start
            single_seconds = []
            for rule in result.rules:  # each run alone, for the time column
                start = time.perf_counter()
                gs.fit(X, y, rule, reference=opt.params, **dict(common, history=False))
                single_seconds.append(time.perf_counter() - start)
        losses, gw, gb = gs.loss_and_grad(X, y, result.coef, result.intercept, alpha=alpha,
                                          backend=args.backend, n_threads=args.threads)
    except ValueError as exc:
        raise UsageError(one_line(exc)) from None
    grad_norms = np.sqrt((gw**2).sum(axis=1) + gb**2)
    with np.errstate(all="ignore"):
        accuracy = ((X @ result.coef.T + result.intercept > 0) == (y[:, None] > 0.5)).mean(axis=0)
    passes = final_passes(result)
    seconds_per_pass = batched_seconds / max(float(passes.max()), 1.0)

    print(f"gradstep compare: {data.name} - {data.description}, standardized")
    batch = f"mini-batches of {args.batch_size}" if args.batch_size else "full batch"
    sched = schedule.name + "".join(f" {k}={v:g}" for k, v in args.schedule[1].items())
    print(f"alpha {alpha:.6g}{' (1/n)' if args.alpha is None else ''}, max_iter {args.max_iter}, "
          f"tol {args.tol:g}, {batch}, schedule {sched}, backend {result.backend}")
    print(f"optimum ({opt.method}): loss {opt.loss:.10f}, |grad| {opt.grad_norm:.1e}; "
          f"1/L = {inv_l:.4g} (lr=auto)"
          + (f", curvature there mu = {opt.mu:.3g}" if opt.mu is not None else ""))
    if alpha == 0:
        print("note: alpha = 0: on separable data the optimum is at infinity and the gap is "
              "only to the best point found")
    for note in notes:
        print(note)
    if sweep is not None:
        auto = [v.label for v in variants if default_lr(v.name) == "auto"]
        print(f"lr sweep: {_grid_text()}" + (f" (1/L for {', '.join(auto)})" if auto else "")
              + f", {sweep.iterations} iterations each: {sweep.n_runs} runs in one gs.fit "
              f"call, {_seconds(sweep.seconds)}")
        print(sweep.line())
        marks = set(sweep.marks.values())
        legend = {"*": "* the best rate is at the edge of the grid",
                  "!": "! every rate diverged: the smallest is used"}
        if marks - {""}:
            print("  (" + "; ".join(legend[m] for m in sorted(marks - {""})) + ")")
    print()
    rows = []
    for k, rule in enumerate(result.rules):
        rows.append((rule.name, lr_text(rule), str(result.status[k]), int(result.n_iter[k]),
                     int(passes[k]), float(losses[k]), float(losses[k]) - opt.loss,
                     float(grad_norms[k]), float(accuracy[k]), single_seconds[k]))
    print(format_table(rows))
    print()
    if any(not first_order(r.name) for r in result.rules if r.name in RULES):
        print("lr '-': the rule chooses every step length itself (line search, secant or "
              "Newton step)")
    print(f"one batched gs.fit call ({len(rows)} runs): {_seconds(batched_seconds)} wall; "
          f"the same runs one by one: {_seconds(sum(single_seconds))} in all")

    if args.no_plot:
        return 0
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(PLOT_NOTE)
        return 0
    from ..plot import plot_compare

    title = (f"gradstep compare — {data.name}: {n} samples × {d} features, alpha = {alpha:.3g}, "
             f"{batch}, schedule {sched}")
    fig = plot_compare(result, optimum_loss=opt.loss, title=title, lipschitz=opt.lipschitz,
                       mu=opt.mu, fig=Figure(), x="passes", seconds_per_pass=seconds_per_pass)
    try:
        fig.savefig(args.out, dpi=110)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--out {args.out!r}: cannot write the figure: {one_line(exc)}") \
            from None
    print(f"figure: {args.out} (time axis: passes x {_seconds(seconds_per_pass)}, the batched "
          "call's wall time over the most passes any run made)")
    return 0


def final_passes(result) -> np.ndarray:
    """Passes over X each run made (the last recorded entry of history.passes)."""
    passes = np.atleast_2d(np.asarray(result.history.passes, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row
        out = np.nanmax(passes, axis=1)
    return np.where(np.isfinite(out), out, 0.0)


def lr_text(rule: StepRule) -> str:
    """The lr cell: the rate, with the schedule's formula when it is not constant; '-' for the
    rules that choose their own step lengths."""
    if rule.name in RULES and not first_order(rule.name):
        return "-"
    lr = f"{float(rule.lr):.3g}"
    sched = rule.schedule
    param = sched.param()
    if sched.name == "constant":
        return lr
    if sched.name == "inverse_time":
        return f"{lr}/(1+{param:g}t)"
    if sched.name == "inverse_power":
        return f"{lr}/√t" if param == 0.5 else f"{lr}/t^{param:g}"
    if sched.name == "exponential":
        return f"{lr}·{param:g}^t"
    return f"{lr}·{sched.name}"


def format_table(rows: Sequence[tuple]) -> str:
    """rows of (rule, lr, status, iterations, passes, loss, gap, grad norm, accuracy, seconds)."""
    lr_width = max([8] + [len(row[1]) + 1 for row in rows])
    head = (f"{'rule':<11}{'lr':>{lr_width}}  {'status':<10}{'iters':>6}{'passes':>7}"
            f"{'final loss':>13}{'gap to opt':>11}{'|grad|':>10}{'train acc':>11}{'time':>10}")
    lines = [head, "-" * len(head)]
    for rule, lr, status, iters, passes, loss, gap, grad, acc, seconds in rows:
        gap_text = f"{gap:.2e}" if gap > 0 else "0"
        loss_text = f"{loss:.8f}" if abs(loss) < 1e4 else f"{loss:.3e}"
        lines.append(
            f"{rule:<11}{lr:>{lr_width}}  {status:<10}{iters:>6}{passes:>7}{loss_text:>13}"
            f"{gap_text:>11}{grad:>10.2e}{acc:>10.1%} {_seconds(seconds):>10}"
        )
    return "\n".join(lines)


def _seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"
