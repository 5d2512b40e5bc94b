"""The ``gradstep`` command line: ``gradstep compare`` and ``gradstep bench``.

Each command is two functions: ``_add_<name>(subparsers)`` declares its arguments and sets
``func=cmd_<name>``; ``cmd_<name>(args) -> int`` does the work and returns the exit code. A new
command is registered by appending its ``_add_<name>`` to ``COMMANDS``.

A user's mistake (a bad option value, a missing file, a data set gradstep cannot fit) ends with
exit code 2 and one line on stderr, never a traceback: commands raise ``UsageError`` and
``main`` reports it the way argparse reports its own errors.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import __version__
from . import _data
from .rules import ESTIMATOR_LR, RULES, SCHEDULE_PARAMS, SCHEDULES, make_rule, make_schedule

PROG = "gradstep"
DEFAULT_OUT = "gradstep-compare.png"
PLOT_NOTE = "note: the figure needs matplotlib: pip install gradstep[plot]"


class UsageError(Exception):
    """A mistake in what the user asked for; main() reports it on one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors on ONE line of stderr (no usage block), exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------------------------
# argument types: each turns one string into a value or explains, in one line, what is wrong
# ---------------------------------------------------------------------------------------------


def _rule_list(text: str) -> list:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("empty rule list; e.g. --rules sgd,normalized,adam")
    if names == ["all"]:
        return list(RULES)
    for name in names:
        if name not in RULES:
            raise argparse.ArgumentTypeError(
                f"unknown rule {name!r}; valid: {', '.join(RULES)} (or all)"
            )
    return list(dict.fromkeys(names))  # in the order given, each once


def _lr_list(text: str) -> list:
    """Learning rates: positive numbers, 'auto' (1/L) or 'default' (the rule's own, as None)."""
    out = []
    for token in [t.strip() for t in text.split(",")]:
        if token.lower() in ("auto", "default"):
            out.append("auto" if token.lower() == "auto" else None)
            continue
        try:
            value = float(token)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(
                f"invalid learning rate {token!r}: give positive numbers such as 0.1 or "
                "0.01,0.1, or 'auto' (1/L) or 'default' (each rule's own)"
            )
        out.append(value)
    return out


def _schedule(text: str) -> tuple:
    """NAME or NAME:param=value, e.g. inverse_time:decay=0.05 -> (name, {param: value})."""
    name, _, rest = text.strip().partition(":")
    params = {}
    for item in [i.strip() for i in rest.split(",") if i.strip()]:
        key, sep, value = item.partition("=")
        try:
            params[key.strip()] = float(value) if sep else float("nan")
        except ValueError:
            params[key.strip()] = float("nan")
        if not sep or not math.isfinite(params[key.strip()]):
            raise argparse.ArgumentTypeError(
                f"malformed schedule {text!r}: parameters are key=number, "
                "e.g. inverse_time:decay=0.05"
            )
    unknown = [k for k in params if k not in SCHEDULE_PARAMS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown schedule parameter {unknown[0]!r}; valid: "
            + ", ".join(f"{v}:{k}=..." for k, v in SCHEDULE_PARAMS.items())
        )
    try:
        make_schedule(name, params)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, params


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


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
    mu: Optional[float]  # the smallest curvature at the optimum (Hessian's smallest eigenvalue)


def solve_optimum(X: np.ndarray, y: np.ndarray, alpha: float, backend: str = "auto",
                  n_threads: Optional[int] = None) -> Optimum:
    """Minimize mean logistic loss + alpha/2 ||w||^2 (intercept unpenalized) to ~1e-12.

    L-BFGS-B on gradstep.loss_and_grad (a long vanilla run with lr=1/L when scipy is missing),
    then a few Newton steps when the Hessian is small enough to form, which take the gradient
    to rounding level and give the curvature at the optimum.
    """
    import gradstep as gs

    n, d = X.shape

    def fun(p):
        loss, gw, gb = gs.loss_and_grad(X, y, p[:d], p[d], alpha=alpha, backend=backend,
                                        n_threads=n_threads)
        return loss, np.append(gw, gb)

    try:
        from scipy.optimize import minimize
    except ImportError:
        minimize = None
    if minimize is not None:
        res = minimize(fun, np.zeros(d + 1), jac=True, method="L-BFGS-B", tol=1e-12,
                       options={"maxiter": 20000, "maxcor": 30})
        params, method = np.asarray(res.x, dtype=np.float64), "L-BFGS-B"
    else:
        run = gs.fit(X, y, "sgd", lr="auto", alpha=alpha, tol=1e-10, max_iter=100000,
                     history=False, backend=backend, n_threads=n_threads)
        params, method = np.append(run.coef, run.intercept), "gradient descent lr=1/L"
    params, hessian = _newton_polish(X, y, params, alpha, fun)
    if hessian is not None:
        method += " + Newton"
    loss, grad = fun(params)
    lipschitz = gs.lipschitz_constant(X, np.empty(0), alpha, True)
    mu = float(np.linalg.eigvalsh(hessian)[0]) if hessian is not None else None
    if mu is not None and mu <= 1e-12 * lipschitz:  # flat direction (alpha = 0, separable)
        mu = None
    return Optimum(params, float(loss), float(np.linalg.norm(grad)), method, lipschitz, mu)


def _newton_polish(X, y, params, alpha, fun, steps: int = 8):
    """A few damped Newton steps from a near-optimal point; (params, Hessian there) or
    (params, None) when the problem is too large to form the Hessian."""
    n, d = X.shape
    if d + 1 > 2000 or n * (d + 1) > 2 * 10**7:
        return params, None
    A = np.hstack([X, np.ones((n, 1))])
    reg = np.full(d + 1, alpha)
    reg[d] = 0.0
    loss, grad = fun(params)
    hessian = None
    for _ in range(steps + 1):
        z = A @ params
        curv = 0.25 * (1.0 - np.tanh(0.5 * z) ** 2)  # sigmoid(z)(1 - sigmoid(z)), no overflow
        hessian = (A.T * curv) @ A / n + np.diag(reg)
        if np.abs(grad).max() <= 1e-15:
            break
        try:
            delta = np.linalg.solve(hessian, grad)
        except np.linalg.LinAlgError:
            break
        if not np.isfinite(delta).all():
            break
        t, moved = 1.0, False
        while t > 1e-6:
            new_loss, new_grad = fun(params - t * delta)
            if new_loss <= loss:
                params, loss, grad, moved = params - t * delta, new_loss, new_grad, True
                break
            t *= 0.5
        if not moved:
            break
    return params, hessian


# ---------------------------------------------------------------------------------------------
# gradstep compare
# ---------------------------------------------------------------------------------------------


def _default_lrs() -> str:
    out = []
    for name in RULES:
        lr = ESTIMATOR_LR.get(name) or make_rule(name, None, make_schedule("constant", {}), {}).lr
        out.append(f"{name} {lr:g}")
    return ", ".join(out)


COMPARE_DESCRIPTION = """\
Fit binary logistic regression (mean logistic loss + alpha/2 ||w||^2, intercept unpenalized)
with every step rule side by side, in ONE batched gradstep.fit call, and show what each does:
a table of iterations, final loss, gap to the optimum, final gradient norm, train accuracy and
time, and a figure with the loss gap, the gradient norm against the distance to the optimum,
and the step length per iteration.

The optimum is a tight solution of the same objective (L-BFGS-B, then Newton); the gap is
"final loss - optimal loss". A run that diverges is stopped and shown with status 'diverged'.
"""

COMPARE_EPILOG = """\
examples:
  gradstep compare                                   all 8 rules on breast_cancer
  gradstep compare --rules sgd,normalized,adam --lr 0.01,0.1,1
                                                     a sweep: every rule x every lr
  gradstep compare --rules sgd,normalized --lr 0.5 --schedule inverse_time:decay=0.05
  gradstep compare --data synthetic:n=5000,d=50 --batch-size 256 --max-iter 50
  gradstep compare --data mydata.csv --out mydata.png
"""


def _add_compare(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="every step rule side by side: a table and a figure",
        description=COMPARE_DESCRIPTION, epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default="breast_cancer", metavar="SOURCE", help=_data.DATA_HELP
                   + " (default: %(default)s)")
    p.add_argument("--rules", type=_rule_list, default=list(RULES), metavar="R1,R2,...",
                   help=f"comma-separated step rules, or all (default: all of {', '.join(RULES)})")
    p.add_argument("--lr", type=_lr_list, nargs="+", default=None, metavar="LR",
                   help="one or several learning rates, comma- or space-separated (0.01,0.1); "
                   "'auto' is 1/L, the largest rate for which vanilla GD never increases the "
                   "loss; 'default' is the rule's own. Several values make a sweep: every rule "
                   f"x every lr. Default: each rule's own ({_default_lrs()})")
    p.add_argument("--schedule", type=_schedule, default=("constant", {}),
                   metavar="NAME[:PARAM=VALUE]",
                   help=f"learning-rate schedule: {', '.join(SCHEDULES)}; parameters as "
                   "inverse_time:decay=0.05, inverse_power:power=0.5, exponential:gamma=0.99 "
                   "(default: constant)")
    p.add_argument("--max-iter", type=_positive_int, default=500, metavar="N",
                   help="iterations (epochs with --batch-size) per run (default: %(default)s)")
    p.add_argument("--tol", type=_nonneg_float, default=1e-6,
                   help="a full-batch run stops when its largest gradient entry is <= tol "
                   "(default: %(default)g)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help="mini-batches of B shuffled rows (default: full batch)")
    p.add_argument("--alpha", type=_nonneg_float, default=None,
                   help="L2 strength (default: 1/n, the strength of scikit-learn's "
                   "LogisticRegression(C=1), so the optimum is finite)")
    p.add_argument("--backend", choices=("auto", "cpp", "numba", "numpy"), default="auto",
                   help="compute backend (default: %(default)s: the fastest available)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads per pass over X (default: all cores)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="PATH",
                   help="where to write the figure (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the synthetic data and the mini-batch shuffle "
                   "(default: %(default)s)")
    p.set_defaults(func=cmd_compare, parser=p)


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


def _runs(rules: list, lrs: Optional[list]) -> tuple:
    """(rule names, lrs) of the K runs: every rule x every lr, rule-major."""
    lrs = [None] if not lrs else lrs
    names, values = [], []
    for name in rules:
        for lr in lrs:
            names.append(name)
            values.append(ESTIMATOR_LR.get(name) if lr is None else lr)
    return names, values


def cmd_compare(args) -> int:
    import gradstep as gs

    lrs = [v for group in args.lr for v in group] if args.lr else None
    if not args.no_plot:
        _check_out(args.out)
    try:
        data = _data.load(args.data, seed=args.seed)
    except OSError as exc:
        raise UsageError(f"--data {args.data!r}: {exc.strerror or _one_line(exc)}") from None
    except ValueError as exc:  # DataError included
        raise UsageError(_one_line(exc)) from None
    X, y = data.X, data.y
    n, d = X.shape
    alpha = 1.0 / n if args.alpha is None else args.alpha
    names, values = _runs(args.rules, lrs)
    schedule, schedule_params = args.schedule
    common = dict(alpha=alpha, max_iter=args.max_iter, tol=args.tol, batch_size=args.batch_size,
                  random_state=args.seed, backend=args.backend, n_threads=args.threads,
                  history=True)
    try:
        gs._backends.get(args.backend)
        if args.batch_size is not None and args.batch_size > n:
            raise ValueError(f"--batch-size {args.batch_size} is larger than the {n} samples")
        opt = solve_optimum(X, y, alpha, args.backend, args.threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gs.DivergenceWarning)  # the table shows them
            # warm-up: thread pool, page faults, Numba's compilation stay out of the timings
            gs.fit(X, y, names, lr=values, schedule=schedule, reference=opt.params,
                   **dict(common, max_iter=1), **schedule_params)
            start = time.perf_counter()
            result = gs.fit(X, y, names, lr=values, schedule=schedule, reference=opt.params,
                            **common, **schedule_params)
            batched_seconds = time.perf_counter() - start
            single_seconds = []
            for rule in result.rules:  # each run alone, for the time column
                start = time.perf_counter()
                gs.fit(X, y, rule, reference=opt.params, **common)
                single_seconds.append(time.perf_counter() - start)
        losses, gw, gb = gs.loss_and_grad(X, y, result.coef, result.intercept, alpha=alpha,
                                          backend=args.backend, n_threads=args.threads)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    grad_norms = np.sqrt((gw**2).sum(axis=1) + gb**2)
    with np.errstate(all="ignore"):
        accuracy = ((X @ result.coef.T + result.intercept > 0) == (y[:, None] > 0.5)).mean(axis=0)

    print(f"gradstep compare: {data.name} - {data.description}, standardized")
    batch = f"mini-batches of {args.batch_size}" if args.batch_size else "full batch"
    sched = schedule + "".join(f" {k}={v:g}" for k, v in schedule_params.items())
    print(f"alpha {alpha:.6g}{' (1/n)' if args.alpha is None else ''}, max_iter {args.max_iter}, "
          f"tol {args.tol:g}, {batch}, schedule {sched}, backend {result.backend}")
    print(f"optimum ({opt.method}): loss {opt.loss:.10f}, |grad| {opt.grad_norm:.1e}; "
          f"1/L = {1.0 / opt.lipschitz:.4g} (lr=auto)"
          + (f", curvature there mu = {opt.mu:.3g}" if opt.mu is not None else ""))
    if alpha == 0:
        print("note: alpha = 0: on separable data the optimum is at infinity and the gap is "
              "only to the best point found")
    print()
    rows = []
    for k, rule in enumerate(result.rules):
        rows.append((rule.name, f"{rule.lr:.4g}", str(result.status[k]), int(result.n_iter[k]),
                     float(losses[k]), float(losses[k]) - opt.loss, float(grad_norms[k]),
                     float(accuracy[k]), single_seconds[k]))
    print(format_table(rows))
    print()
    print(f"one batched gs.fit call ({len(rows)} runs): {_seconds(batched_seconds)} wall; "
          f"the same runs one by one: {_seconds(sum(single_seconds))} in all")

    if args.no_plot:
        return 0
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(PLOT_NOTE)
        return 0
    from .plot import plot_compare

    title = (f"gradstep compare — {data.name}: {n} samples × {d} features, alpha = {alpha:.3g}, "
             f"{batch}, schedule {sched}")
    fig = plot_compare(result, optimum_loss=opt.loss, title=title, lipschitz=opt.lipschitz,
                       mu=opt.mu, fig=Figure())
    try:
        fig.savefig(args.out, dpi=110)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--out {args.out!r}: cannot write the figure: {_one_line(exc)}") \
            from None
    print(f"figure: {args.out}")
    return 0


def format_table(rows: Sequence[tuple]) -> str:
    """rows of (rule, lr, status, iterations, loss, gap, grad norm, accuracy, seconds)."""
    head = (f"{'rule':<11}{'lr':>8}  {'status':<10}{'iters':>6}{'final loss':>13}"
            f"{'gap to opt':>11}{'|grad|':>10}{'train acc':>11}{'time':>10}")
    lines = [head, "-" * len(head)]
    for rule, lr, status, iters, loss, gap, grad, acc, seconds in rows:
        gap_text = f"{gap:.2e}" if gap > 0 else "0"
        loss_text = f"{loss:.8f}" if abs(loss) < 1e4 else f"{loss:.3e}"
        lines.append(
            f"{rule:<11}{lr:>8}  {status:<10}{iters:>6}{loss_text:>13}{gap_text:>11}"
            f"{grad:>10.2e}{acc:>10.1%} {_seconds(seconds):>10}"
        )
    return "\n".join(lines)


def _seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def _add_bench(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time one loss+gradient pass and one fit per backend against NumPy",
        description="Time one loss+gradient pass and one whole fit (full-batch Adam) for each "
        "available backend and for plain NumPy, with the time of one X @ w as the floor "
        "(reading X once). Prints seconds, GB/s of X read, the ratio to the floor and the "
        "speed-up over NumPy; NumPy's BLAS is limited to the same threads.",
    )
    p.add_argument("--n", type=_positive_int, default=200_000, help="rows (default: %(default)s)")
    p.add_argument("--d", type=_positive_int, default=100, help="features (default: %(default)s)")
    p.add_argument("--k", type=_positive_int, default=1,
                   help="runs sharing each pass over X (default: %(default)s)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--threads", type=_positive_int, nargs="+", default=None, metavar="N",
                   help="one table per thread count (default: all cores)")
    p.add_argument("--fit-iter", type=_positive_int, default=20, metavar="N",
                   help="iterations of the timed fit (default: %(default)s)")
    p.add_argument("--repeat", type=_positive_int, default=5,
                   help="timed repeats; the median is shown (default: %(default)s)")
    p.add_argument("--backend", choices=("cpp", "numba", "numpy"), nargs="+", default=None,
                   help="backends to time (default: every available one)")
    p.set_defaults(func=cmd_bench, parser=p)


def cmd_bench(args) -> int:
    import gradstep as gs

    from . import bench

    missing = [b for b in (args.backend or []) if not gs.backends()[b]]
    if missing:
        raise UsageError(f"backend {missing[0]!r} is not available: "
                         f"{gs.backends()['why'][missing[0]]}")
    gib = args.n * args.d * (4 if args.dtype == "float32" else 8) / 2**30
    print(f"gradstep bench: X {args.n} x {args.d} {args.dtype} ({gib:.2f} GiB), K={args.k}; "
          f"{bench.machine_description()}")
    for threads in args.threads or [os.cpu_count() or 1]:
        rows, blas = bench.run(args.n, args.d, args.k, args.dtype, threads, args.fit_iter,
                               args.repeat, args.backend)
        print()
        print(bench.format_table(rows, f"threads={threads}; NumPy BLAS: {blas}"))
    return 0


#: one function per command; each adds its subparser and sets func=cmd_<name>
COMMANDS = [_add_compare, _add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Logistic regression by gradient descent: vanilla, normalized and adaptive "
        "steps, side by side.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns its exit code. argparse errors and UsageError raise
    SystemExit(2) after one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else [os.fspath(a) for a in argv])
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        args.parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gradstep compare | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    return 2  # not reached: args.parser.error exits


if __name__ == "__main__":
    sys.exit(main())
