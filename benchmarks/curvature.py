"""The curvature rules' targets (lbfgs, newton, batched paths and cross-validation, lr="auto"),
measured in one run and printed as a Markdown table with the causes of any miss.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/curvature.py
    python benchmarks/curvature.py --quick    # small sizes, to check the script itself

Every ratio compares timings taken in this process on the same arrays: the contenders of a row
run in turn, ``--repeat`` rounds, and each time is the median of its rounds (interleaving keeps
a load that comes and goes from favouring one side). NumPy's BLAS, scikit-learn's OpenMP,
PyTorch and gradstep all get the same ``THREADS`` threads.

"Time to gap 1e-7": every method minimizes the same objective, the mean logistic loss plus
alpha/2 ||w||^2 (scikit-learn's C = 1 / (alpha n)); loss* is ``gradstep.optimum.solve``'s. An
untimed probe finds how far each method must run to reach loss - loss* <= 1e-7, and the timed
fit then runs exactly that far:

* gradstep: the first iteration of the probe's history at the gap; timed with max_iter set to it
  (tol=0, so nothing else stops it).
* scikit-learn: the loosest tol of a grid that reaches the gap, and the smallest max_iter that
  does (tol=0), both at 2 threads, and that max_iter at 1 thread (BLAS and OpenMP threads fight
  on a loaded 2-core machine); the fastest of the three is the baseline, so scikit-learn gets
  the same exact stop as gradstep and its best thread count.
* PyTorch: LBFGS steps of one iteration until the gap; timed as one .step() with max_iter set to
  that count (tolerance_grad = tolerance_change = 0, max_eval unbounded).

The gap of every timed result is computed with gradstep.loss_and_grad and printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import scipy
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info, threadpool_limits

import gradstep as gs
from gradstep import _core
from gradstep.bench import backend_gradient
from gradstep.optimum import solve
from gradstep.oracle import DenseOracle, lanczos_top_eigenvalue

THREADS = 2
GAP = 1e-7
ALPHA = 1e-4
SKLEARN_TOLS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8,
                1e-9, 1e-10)


# ---------------------------------------------------------------------------------------------
# data and measurement
# ---------------------------------------------------------------------------------------------


def make_problem(n: int, d: int = 100, seed: int = 0):
    """Correlated features (10 latent factors plus noise) on scales from 1e-2 to 1e2 with
    offsets, standardized as users do; labels from a sparse logistic model, 5 % flipped.
    Returns (X C-contiguous float64, y 0/1 float64)."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n, 10))
    loadings = 0.7 * rng.standard_normal((10, d))
    Z = factors @ loadings
    Z += rng.standard_normal((n, d))
    scales = 10.0 ** rng.uniform(-2, 2, d)
    Z *= scales
    Z += rng.uniform(-5, 5, d) * scales
    Z -= Z.mean(axis=0)
    Z /= Z.std(axis=0)
    w = 0.5 * rng.standard_normal(d) * (rng.random(d) < 0.5)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(Z @ w + 0.3)))).astype(np.float64)
    flip = rng.random(n) < 0.05
    y[flip] = 1.0 - y[flip]
    return np.ascontiguousarray(Z), y


def objective(X, y, coef, intercept, alpha, sample_weight=None) -> float:
    return float(gs.loss_and_grad(X, y, np.ravel(coef), float(np.ravel(intercept)[0]),
                                  alpha=alpha, sample_weight=sample_weight,
                                  n_threads=THREADS)[0])


def interleaved(funcs: dict[str, Callable[[], object]], repeat: int,
                warmup: Callable[[], object] | None = None) -> dict[str, float]:
    """Median wall time of each function over `repeat` rounds, the functions taking turns
    within a round, after one untimed warm-up call each (or one call of `warmup` instead, for
    rows whose calls take minutes)."""
    for f in [warmup] if warmup is not None else funcs.values():
        f()
    times: dict[str, list] = {name: [] for name in funcs}
    for _ in range(repeat):
        for name, f in funcs.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def limited(threads: int, func):
    """Call func with BLAS and OpenMP limited to `threads`."""
    with threadpool_limits(limits=threads):
        return func()


def quiet(func):
    """Call func with scikit-learn's ConvergenceWarning silenced (max_iter stops are wanted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return func()


# ---------------------------------------------------------------------------------------------
# the contenders of the time-to-gap rows
# ---------------------------------------------------------------------------------------------


def gradstep_probe(X, y, rule, alpha, loss_star, gap=GAP, max_iter=2000):
    """(iterations, passes) at the first iteration with loss - loss* <= gap, from a fit's
    history; (None, None) when the fit never gets there."""
    res = gs.fit(X, y, rule, alpha=alpha, tol=1e-12, max_iter=max_iter, n_threads=THREADS)
    reached = np.flatnonzero(res.history.loss - loss_star <= gap)
    if reached.size == 0:
        return None, None
    i = int(reached[0])
    return i, float(res.history.passes[i])


def gradstep_fit(X, y, rule, alpha, n_iter):
    return gs.fit(X, y, rule, alpha=alpha, tol=0.0, max_iter=n_iter, n_threads=THREADS,
                  history=False)


def sklearn_fit(X, y, solver, C, tol, max_iter=10_000):
    return quiet(lambda: LogisticRegression(C=C, solver=solver, tol=tol, max_iter=max_iter)
                 .fit(X, y))


def sklearn_probe(X, y, solver, C, alpha, loss_star, gap=GAP):
    """The loosest tol of SKLEARN_TOLS and the smallest max_iter (tol=0) whose fit reaches the
    gap; each as (setting, kwargs) or None."""
    def gap_of(model):
        return objective(X, y, model.coef_, model.intercept_, alpha) - loss_star

    by_tol, lo, hi = None, 0, None
    for tol in SKLEARN_TOLS:
        model = sklearn_fit(X, y, solver, C, tol)
        if gap_of(model) <= gap:
            by_tol, hi = (f"tol={tol:g}", {"tol": tol}), int(np.ravel(model.n_iter_)[0])
            break
        lo = int(np.ravel(model.n_iter_)[0])  # stops of one deterministic trajectory
    if hi is None:
        return None, None
    # the smallest max_iter at tol=0 that reaches the gap: more than the last failing tol's
    # iterations, at most the reaching tol's; bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gap_of(sklearn_fit(X, y, solver, C, 0.0, mid)) <= gap:
            hi = mid
        else:
            lo = mid
    return by_tol, (f"max_iter={hi}", {"tol": 0.0, "max_iter": hi})


def torch_problem(X, y, alpha):
    import torch

    torch.set_num_threads(THREADS)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def fresh(max_iter):
        w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=10**9,
                                tolerance_grad=0.0, tolerance_change=0.0, history_size=10,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w + b, yt)
            loss = loss + 0.5 * alpha * (w @ w)
            loss.backward()
            return loss

        return w, b, opt, closure

    return fresh


def torch_probe(fresh, X, y, alpha, loss_star, gap=GAP, max_iter=2000):
    """LBFGS steps of one iteration each until the gap; the iteration count or None."""
    w, b, opt, closure = fresh(1)
    for it in range(1, max_iter + 1):
        opt.step(closure)
        if objective(X, y, w.detach().numpy(), b.detach().numpy(), alpha) - loss_star <= gap:
            return it
    return None


def torch_fit(fresh, n_iter):
    w, b, opt, closure = fresh(n_iter)
    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy(), opt.state[opt._params[0]]


# ---------------------------------------------------------------------------------------------
# the rows
# ---------------------------------------------------------------------------------------------


def gap_rows(n: int, repeat: int, notes: list) -> list:
    X, y = make_problem(n)
    alpha, C = ALPHA, 1.0 / (ALPHA * n)
    start = time.perf_counter()
    opt = solve(X, y, alpha=alpha, n_threads=THREADS)
    loss_star = opt.loss
    gmax = np.abs(np.append(*gs.loss_and_grad(X, y, opt.coef, opt.intercept, alpha=alpha)[1:]
                            )).max()
    notes.append(f"{n:,} x 100: loss* = {loss_star:.15f} (gradstep.optimum.solve, "
                 f"{time.perf_counter() - start:.1f} s, status {opt.status}, max |grad| "
                 f"{gmax:.1e}); alpha = {alpha:g}, sklearn C = 1/(alpha n) = {C:g}")

    # one pass over X: the kernel alone (as inside a fit) and the public call
    oracle = DenseOracle(X, y, alpha=alpha, n_threads=THREADS)
    P = np.append(opt.coef, opt.intercept)[None]
    one = np.ones(1, np.uint8)
    pass_times = interleaved({
        "grad": lambda: oracle.loss_grad(P, one),
        "hessp": lambda: oracle.hessp(P, P, one),
        "public": lambda: gs.loss_and_grad(X, y, opt.coef, opt.intercept, alpha=alpha,
                                           n_threads=THREADS),
    }, 3 * repeat)

    def gap_of(coef, intercept):
        return objective(X, y, coef, intercept, alpha) - loss_star

    rows = []
    measured = {}
    for rule, solver in (("lbfgs", "lbfgs"), ("newton", "newton-cholesky")):
        n_iter, passes = gradstep_probe(X, y, rule, alpha, loss_star)
        if n_iter is None:
            rows.append((rule, None))
            continue
        by_tol, by_iter = sklearn_probe(X, y, solver, C, alpha, loss_star)
        funcs = {"gradstep": lambda r=rule, k=n_iter: gradstep_fit(X, y, r, alpha, k),
                 # as many kernel passes as the fit made, back to back: the floor of the fit
                 "passes": lambda k=int(passes): [oracle.loss_grad(P, one) for _ in range(k)]}
        variants = {}
        for label, setting in (("sk_tol", by_tol), ("sk_iter", by_iter)):
            if setting is not None:
                variants[label] = (f"{setting[0]}, {THREADS} threads", setting[1], THREADS)
        if by_iter is not None:  # scikit-learn at 1 thread: on a loaded machine often faster
            variants["sk_iter1"] = (f"{by_iter[0]}, 1 thread", by_iter[1], 1)
        for label, (_, kw, threads) in variants.items():
            funcs[label] = lambda s=solver, kw=kw, t=threads: limited(
                t, lambda: sklearn_fit(X, y, s, C, **kw))
        fresh = torch_n = None
        if rule == "lbfgs":
            try:
                fresh = torch_problem(X, y, alpha)
            except ImportError:
                fresh = None
            if fresh is not None:
                torch_n = torch_probe(fresh, X, y, alpha, loss_star)
                if torch_n is not None:
                    funcs["torch"] = lambda k=torch_n, f=fresh: torch_fit(f, k)
        times = interleaved(funcs, repeat)
        res = gradstep_fit(X, y, rule, alpha, n_iter)
        m = {"n_iter": n_iter, "passes": passes, "time": times["gradstep"],
             "gap": gap_of(res.coef, res.intercept)}
        if variants:
            t_sk, key = min((times[k], k) for k in variants)
            how, kw, _ = variants[key]
            model = sklearn_fit(X, y, solver, C, **kw)
            m["sklearn"] = (t_sk, how, gap_of(model.coef_, model.intercept_),
                            int(np.ravel(model.n_iter_)[0]))
            m["sklearn_all"] = {variants[k][0]: times[k] for k in variants}
        m["passes_time"] = times["passes"]
        if "torch" in times:
            w, b, state = torch_fit(fresh, torch_n)
            m["torch"] = (times["torch"], torch_n, gap_of(w, b), int(state["func_evals"]))
        m["per_pass"] = m["time"] / passes
        measured[rule] = m
        rows.append((rule, m))
    return rows, pass_times, measured


def path_row(n: int, repeat: int, notes: list) -> tuple:
    X, y = make_problem(n, seed=1)
    alphas = np.logspace(-6, -1, 16)
    Cs = 1.0 / (alphas * n)

    def ours():
        return gs.fit(X, y, "lbfgs", alpha=alphas, tol=1e-6, max_iter=1000, n_threads=THREADS)

    def theirs():
        return [sklearn_fit(X, y, "lbfgs", C, 1e-6, 1000) for C in Cs]

    times = interleaved({"gradstep": ours, "sklearn": theirs}, repeat,
                        warmup=lambda: (gs.fit(X[:2000], y[:2000], "lbfgs", alpha=alphas[:2]),
                                        sklearn_fit(X[:2000], y[:2000], "lbfgs", 1.0, 1e-6)))
    res, models = ours(), theirs()
    ours_loss = np.array([objective(X, y, res.coef[k], [res.intercept[k]], a)
                          for k, a in enumerate(alphas)])
    their_loss = np.array([objective(X, y, m.coef_, m.intercept_, a)
                           for m, a in zip(models, alphas)])
    worse = float(np.max(ours_loss - their_loss))
    notes.append(f"path: gradstep n_iter per alpha {res.n_iter.tolist()}, passes "
                 f"{int(np.nanmax(res.history.passes))} in all; sklearn n_iter "
                 f"{[int(m.n_iter_[0]) for m in models]}")
    ratio = times["sklearn"] / times["gradstep"]
    ok = ratio >= 8 and bool(np.all(res.status == "converged")) and worse <= 1e-7
    return ("regularization path, 16 alphas 1e-6..1e-1 (log grid), lbfgs tol 1e-6, "
            f"{n:,} x 100", ">= 8 x faster than 16 LogisticRegression(lbfgs, tol=1e-6) fits",
            f"{ratio:.2f} x ({times['gradstep']:.2f} vs {times['sklearn']:.2f} s); all "
            f"{set(res.status.tolist())}; objective - sklearn's <= {worse:.1e}", ok)


def cv_row(n: int, repeat: int, notes: list) -> tuple:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    X, y = make_problem(n, seed=2)
    folds = list(StratifiedKFold(n_splits=5).split(X, y))  # GridSearchCV's cv=5 for a classifier
    alpha_grid = np.logspace(-6, -1, 8)
    n_train = np.array([len(tr) for tr, _ in folds])
    Cs = 1.0 / (alpha_grid * np.median(n_train))

    def ours():
        W = np.zeros((n, 5 * len(Cs)))
        run_alpha = np.empty(5 * len(Cs))
        for f, (train, _) in enumerate(folds):
            for j, C in enumerate(Cs):
                k = f * len(Cs) + j
                W[train, k] = 1.0
                run_alpha[k] = 1.0 / (C * len(train))  # sklearn's objective on this fold
        res = gs.fit(X, y, "lbfgs", alpha=run_alpha, sample_weight=W, tol=1e-6, max_iter=1000,
                     n_threads=THREADS)
        scores = np.empty((5, len(Cs)))
        for f, (_, test) in enumerate(folds):
            k = slice(f * len(Cs), (f + 1) * len(Cs))
            pred = (X[test] @ res.coef[k].T + res.intercept[k]) > 0
            scores[f] = (pred == (y[test][:, None] > 0.5)).mean(axis=0)
        return res, scores.mean(axis=0)

    def theirs():
        return quiet(lambda: GridSearchCV(LogisticRegression(tol=1e-6, max_iter=1000),
                                          {"C": list(Cs)}, cv=5, refit=False).fit(X, y))

    times = interleaved({"gradstep": ours, "sklearn": theirs}, repeat,
                        warmup=lambda: (gs.fit(X[:2000], y[:2000], "lbfgs", alpha=alpha_grid[:2],
                                               sample_weight=np.ones((2000, 2))),
                                        sklearn_fit(X[:2000], y[:2000], "lbfgs", 1.0, 1e-6)))
    (res, ours_scores), search = ours(), theirs()
    their_scores = search.cv_results_["mean_test_score"]
    ours_best, their_best = int(np.argmax(ours_scores)), int(search.best_index_)
    notes.append("cv: mean accuracy per C, gradstep " + " ".join(f"{s:.5f}" for s in ours_scores)
                 + "; sklearn " + " ".join(f"{s:.5f}" for s in their_scores)
                 + f"; gradstep statuses {sorted(set(res.status.tolist()))}")
    ratio = times["sklearn"] / times["gradstep"]
    # accuracies are counts: two Cs can tie exactly, and a tie is broken by the grid's order.
    # gradstep's choice also counts as the same when scikit-learn's own scores tie it with
    # scikit-learn's choice (both are then the best C of the search)
    same = ours_best == their_best
    tied = their_scores[ours_best] == their_scores[their_best]
    choice = (f"same chosen C = {Cs[their_best]:.3g}" if same else
              f"C {Cs[ours_best]:.3g} vs {Cs[their_best]:.3g}, "
              + ("tied in sklearn's own scores" if tied else "not tied"))
    ok = ratio >= 8 and (same or tied)
    return (f"5-fold x 8 C cross-validation as ONE fit (K = 40 weighted runs), {n:,} x 100",
            ">= 8 x faster than GridSearchCV(LogisticRegression(tol=1e-6), 8 Cs, cv=5, "
            "refit=False); same chosen C",
            f"{ratio:.2f} x ({times['gradstep']:.2f} vs {times['sklearn']:.2f} s); {choice}", ok)


def lipschitz_row(n: int, repeat: int, notes: list) -> tuple:
    X, y = make_problem(n, seed=3)
    w = np.zeros(X.shape[1])
    calls = []

    class Counting(DenseOracle):
        def hessp(self, P, V, active):
            calls.append(1)
            return super().hessp(P, V, active)

    counting = Counting(X, y, n_threads=THREADS)
    lanczos_top_eigenvalue(counting, 1, True)
    raw = backend_gradient("cpp", X, y, w[None], np.zeros(1), THREADS)
    times = interleaved({
        "lipschitz": lambda: gs.lipschitz_constant(X, n_threads=THREADS),
        "grad": lambda: gs.loss_and_grad(X, y, w, alpha=ALPHA, n_threads=THREADS),
        "kernel": raw,
    }, repeat)
    ratio = times["lipschitz"] / times["grad"]
    notes.append(f"lipschitz: Lanczos used {len(calls)} Hessian-vector passes; one kernel "
                 f"gradient pass {times['kernel'] * 1e3:.0f} ms, the public loss_and_grad "
                 f"{times['grad'] * 1e3:.0f} ms")
    return (f'lr="auto" (gs.lipschitz_constant), {n:,} x 100', "<= 10 x one gs.loss_and_grad",
            f"{ratio:.2f} x ({times['lipschitz'] * 1e3:.0f} vs {times['grad'] * 1e3:.0f} ms; "
            f"{len(calls)} passes)", ratio <= 10)


def digits_row(repeat: int, notes: list) -> tuple:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)

    def ours():
        return gs.GDClassifier().fit(X_train, y_train)

    def theirs():
        return quiet(lambda: OneVsRestClassifier(LogisticRegression(C=1)).fit(X_train, y_train))

    times = interleaved({"gradstep": ours, "sklearn": theirs}, 5 * repeat)
    a_ours = 100 * ours().score(X_test, y_test)
    model = theirs()
    a_theirs = 100 * model.score(X_test, y_test)
    iters = [int(e.n_iter_[0]) for e in model.estimators_]
    notes.append(f"digits: sklearn n_iter per class {iters} (max_iter=100 default)")
    ok = times["gradstep"] < times["sklearn"] and abs(a_ours - a_theirs) <= 0.5
    return ("GDClassifier() on digits (standardized, 75/25 split)",
            "faster than OneVsRestClassifier(LogisticRegression(C=1)); accuracy within 0.5 pt",
            f"{times['sklearn'] / times['gradstep']:.2f} x faster ({times['gradstep'] * 1e3:.0f} "
            f"vs {times['sklearn'] * 1e3:.0f} ms); accuracy {a_ours:.2f} vs {a_theirs:.2f} %", ok)


# ---------------------------------------------------------------------------------------------
# header and table
# ---------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def blas_kernel() -> str:
    return ", ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')}, "
                     f"{i.get('num_threads')} threads)"
                     for i in threadpool_info() if i.get("user_api") == "blas")


def header() -> str:
    try:
        import torch

        torch_version = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_version = "torch not installed"
    return (f"CPU {cpu_name()}, {os.cpu_count()} cores; {THREADS} threads everywhere; "
            f"NumPy BLAS {blas_kernel()}; gradstep {gs.__version__} (C++ kernel "
            f"{_core.kernel()}), NumPy {np.__version__}, SciPy {scipy.__version__}, "
            f"scikit-learn {sklearn.__version__}, {torch_version}; "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}, "
            f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}")


def gap_table_rows(n: int, measured: dict) -> list:
    rows = []
    lb, nt = measured.get("lbfgs"), measured.get("newton")
    if lb is not None:
        t = lb["time"]
        sk, th = lb.get("sklearn"), lb.get("torch")
        parts = [f"{t:.2f} s, {lb['n_iter']} iterations, {lb['passes']:.0f} passes, gap "
                 f"{lb['gap']:.1e}"]
        ok = True
        if th is not None:
            parts.append(f"{t / th[0]:.2f} x torch ({th[0]:.2f} s, {th[1]} iterations, "
                         f"{th[3]} evaluations, gap {th[2]:.1e})")
            ok = ok and t <= 0.5 * th[0]
        else:
            parts.append("torch not measured")
            ok = None
        if sk is not None:
            parts.append(f"{t / sk[0]:.2f} x sklearn ({sk[0]:.2f} s at {sk[1]}, "
                         f"{sk[3]} iterations, gap {sk[2]:.1e})")
            ok = ok if ok is None else ok and t <= 0.25 * sk[0]
        rows.append((f"{n:,} x 100 float64, alpha={ALPHA:g}, time to loss gap {GAP:g}, "
                     f"{THREADS} threads, `lbfgs`",
                     '<= 0.5 x torch.optim.LBFGS(line_search_fn="strong_wolfe", float64, '
                     'history_size=10) and <= 0.25 x LogisticRegression(solver="lbfgs")',
                     "; ".join(parts), ok))
    if nt is not None:
        t, sk = nt["time"], nt.get("sklearn")
        measured_text = (f"{t:.2f} s, {nt['n_iter']} iterations, {nt['passes']:.0f} passes, "
                         f"gap {nt['gap']:.1e}")
        ok = None
        if sk is not None:
            measured_text += (f"; {t / sk[0]:.2f} x sklearn ({sk[0]:.2f} s at {sk[1]}, "
                              f"{sk[3]} iterations, gap {sk[2]:.1e})")
            ok = t <= 0.5 * sk[0]
        rows.append(("same, `newton`", '<= 0.5 x LogisticRegression(solver="newton-cholesky")',
                     measured_text, ok))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (checks the script)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds per row")
    parser.add_argument("--rows", default="gap,path,cv,lipschitz,digits",
                        help="comma-separated subset of gap,path,cv,lipschitz,digits")
    args = parser.parse_args()
    wanted = set(args.rows.split(","))
    n_gap, n_path, n_lip = (20_000, 20_000, 50_000) if args.quick else (
        200_000, 200_000, 1_000_000)
    repeat = 1 if args.quick else args.repeat
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    notes: list = []
    rows: list = []

    def attempt(case, make_rows):
        """Run one row (or rows); a failure (the library changing under the run, say) becomes
        a row that says so instead of ending the table."""
        began = time.perf_counter()
        try:
            made = make_rows()
        except Exception as exc:  # noqa: BLE001 - reported in the table
            made = [(case, "", f"failed: {type(exc).__name__}: {exc}", False)]
        rows.extend(made if isinstance(made, list) else [made])
        print(f"[{time.perf_counter() - start:5.0f} s] {case}: "
              f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        for row in made if isinstance(made, list) else [made]:  # kept if the run is cut short
            print(f"  {row}", file=sys.stderr, flush=True)

    with threadpool_limits(limits=THREADS):
        head = header()
        gap_result: list = []

        def gaps():
            gap_result.extend(gap_rows(n_gap, repeat, notes))
            return gap_table_rows(n_gap, gap_result[2])

        for key, case, make_rows in (
            ("gap", "time to gap", gaps),
            ("path", "regularization path", lambda: path_row(n_path, 1, notes)),  # minutes
            ("cv", "cross-validation", lambda: cv_row(n_path, 1, notes)),  # per round: one
            ("lipschitz", "lipschitz", lambda: lipschitz_row(n_lip, repeat, notes)),
            ("digits", "digits", lambda: digits_row(repeat, notes)),
        ):
            if key in wanted:
                attempt(case, make_rows)
    print(head)
    print(f"{time.perf_counter() - start:.0f} s; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; times are medians of {repeat} interleaved rounds "
          "(path and cross-validation: one round)\n")
    print("| case | target | measured | met |\n| --- | --- | --- | --- |")
    for case, target, text, ok in rows:
        met = "n/a" if ok is None else ("yes" if ok else "**no**")
        print(f"| {case} | {target} | {text} | {met} |")
    print()
    for note in notes:
        print(f"- {note}")
    if not gap_result:
        return
    _, pass_times, measured = gap_result
    g, h, p = pass_times["grad"], pass_times["hessp"], pass_times["public"]
    print(f"- one pass over {n_gap:,} x 100: kernel loss+grad {g * 1e3:.1f} ms, Hessian-vector "
          f"{h * 1e3:.1f} ms, public gs.loss_and_grad {p * 1e3:.1f} ms")
    for rule, m in measured.items():
        floor = m["passes_time"]
        overhead = m["time"] - floor
        print(f"- {rule}: {m['passes'] / max(m['n_iter'], 1):.2f} passes per iteration; "
              f"{m['per_pass'] * 1e3:.1f} ms per pass inside the fit; the same {m['passes']:.0f} "
              f"kernel passes back to back take {floor:.2f} s, so {overhead:.2f} s "
              f"({100 * overhead / m['time']:.0f} %) of the fit is not passes over X")
        if "sklearn_all" in m:
            tried = ", ".join(f"{k}: {v:.2f} s" for k, v in m["sklearn_all"].items())
            print(f"  sklearn stops timed: {tried}")


if __name__ == "__main__":
    main()
