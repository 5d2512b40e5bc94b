"""Issue 10's L1 and multinomial targets, measured in one run and printed as a Markdown table.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/real_data.py [--quick]
    ... real_data.py --seeds 7,8,9     # the L1 row on three problems (default: seed 7)

- sparse L1: gs.fit(lbfgs = OWL-QN, l1_ratio=1) against LogisticRegression(solver="saga",
  l1_ratio=1) on the same realistic CSR matrix (sparse_bench.make_csr: Zipf feature
  frequencies, rows of varying length), each at the loosest tol that reaches the optimum's
  objective to 1e-6 relative (the optimum from a tight OWL-QN fit); also the two supports.
  gradstep both as a plain fit and with working_set=True (OWL-QN on growing sets of features).
- multinomial digits: GDClassifier() against LogisticRegression() (both C=1, multinomial,
  lbfgs) on standardized digits: fit times with the defaults and at tol 1e-8, and the largest
  difference of predicted probabilities.
Times are the best of a few runs after a warm-up, BLAS on 1 thread; the L1 fit is timed with
gradstep on 1 thread and on all cores (saga has one thread either way), the multinomial fits
on 1 thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

import gradstep as gs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparse_bench import cpu_model, make_csr  # noqa: E402

ALL = os.cpu_count() or 1


def best_time(fn, repeat: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def l1_row(n: int, d: int, repeat: int, seed: int = 7) -> tuple:
    from sklearn.linear_model import LogisticRegression

    X, y = make_csr(n, d, seed=seed)
    C = 1.0
    alpha = 1.0 / (C * n)  # sklearn's C * sum(loss) + ||w||_1, divided by C n
    tight = gs.fit(X, y, "lbfgs", alpha=alpha, l1_ratio=1.0, tol=1e-12, max_iter=20_000,
                   n_threads=1)
    f_star = float(tight.loss)

    def objective(coef, intercept):
        loss = gs.loss_and_grad(X, y, coef, intercept, n_threads=1)[0]
        return float(loss) + alpha * float(np.abs(coef).sum())

    def reached(coef, intercept):
        return (objective(coef, intercept) - f_star) / abs(f_star) <= 1e-6

    def fastest(threads, working_set=False):
        """(time, tol, result) at the loosest tol that reaches the objective."""
        for tol in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9):
            t, res = best_time(lambda tol=tol: gs.fit(X, y, "lbfgs", alpha=alpha, l1_ratio=1.0,
                                                      tol=tol, max_iter=20_000,
                                                      n_threads=threads,
                                                      working_set=working_set), repeat)
            if reached(res.coef, res.intercept):
                return t, tol, res
        return None

    ours, ours_all = fastest(1), fastest(ALL)
    ws, ws_all = fastest(1, working_set=True), fastest(ALL, working_set=True)
    theirs = None
    for tol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-8):
        def saga(tol=tol):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning / FutureWarning
                return LogisticRegression(C=C, l1_ratio=1.0, solver="saga", tol=tol,
                                          max_iter=100_000).fit(X, y)
        t, model = best_time(saga, max(1, repeat // 2))
        if reached(model.coef_[0], model.intercept_[0]):
            theirs = (t, tol, model)
            break
    case = f"sparse L1 fit, {n:,} x {d:,} CSR ({X.nnz:,} nonzeros, seed {seed}), C = {C:g}"
    target = ">= 3 x faster than LogisticRegression(saga, l1_ratio=1), objective to 1e-6"
    if any(r is None for r in (ours, ours_all, ws, ws_all, theirs)):
        return case, target, f"objective not reached: gradstep {ours is not None}, " \
                             f"working set {ws is not None}, saga {theirs is not None}", False
    support_theirs = int(np.count_nonzero(theirs[2].coef_))
    # saga runs on one thread whatever the machine; gradstep's default uses every core
    measured = []
    for name, one, every in (("plain", ours, ours_all), ("working_set=True", ws, ws_all)):
        ratio, ratio_all = theirs[0] / one[0], theirs[0] / every[0]
        measured.append(f"{name}: 1 thread {ratio:.1f} x ({one[0]:.2f} s at tol {one[1]:g}, "
                        f"{one[2].passes} passes, {np.count_nonzero(one[2].coef)} nonzeros), "
                        f"all {ALL} cores {ratio_all:.1f} x ({every[0]:.2f} s)")
    best = max(theirs[0] / r[0] for r in (ours, ours_all, ws, ws_all))
    return (case, target, "; ".join(measured) + f"; saga {theirs[0]:.2f} s at tol "
            f"{theirs[1]:g}, {support_theirs} nonzeros", best >= 3)


def multinomial_row(repeat: int) -> tuple:
    """Defaults against defaults, and both at tol 1e-8: LogisticRegression's default tol (1e-4)
    stops about 1e-2 away from the optimum's probabilities on digits, so "within 1e-4" is
    measured where both have converged; the distances to the exact optimum (a tol 1e-12 fit)
    are printed for the defaults."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = LogisticRegression(tol=1e-12, max_iter=100_000).fit(X, y).predict_proba(X)
        t_ours, ours = best_time(lambda: gs.GDClassifier(n_threads=1).fit(X, y), repeat)
        t_theirs, theirs = best_time(lambda: LogisticRegression(max_iter=10_000).fit(X, y),
                                     repeat)
        t_ours8, ours8 = best_time(lambda: gs.GDClassifier(tol=1e-8, n_threads=1).fit(X, y),
                                   repeat)
        t_theirs8, theirs8 = best_time(
            lambda: LogisticRegression(tol=1e-8, max_iter=10_000).fit(X, y), repeat)
    off = [float(np.abs(m.predict_proba(X) - exact).max()) for m in (ours, theirs)]
    diff8 = float(np.abs(ours8.predict_proba(X) - theirs8.predict_proba(X)).max())
    ratio, ratio8 = t_theirs / t_ours, t_theirs8 / t_ours8
    return ("multinomial digits (1797 x 64, 10 classes), GDClassifier() vs LogisticRegression()",
            "faster; probabilities within 1e-4",
            f"defaults: {ratio:.1f} x ({t_ours * 1e3:.0f} vs {t_theirs * 1e3:.0f} ms), max |p - "
            f"p*| {off[0]:.1e} vs {off[1]:.1e}; both tol 1e-8: {ratio8:.1f} x "
            f"({t_ours8 * 1e3:.0f} vs {t_theirs8 * 1e3:.0f} ms), max |p - p_sk| {diff8:.1e}",
            ratio > 1 and ratio8 > 1 and diff8 <= 1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (checks the script)")
    parser.add_argument("--seeds", default="7",
                        help="make_csr seeds of the L1 rows (comma-separated): OWL-QN's path "
                             "length, and so each row's ratios, vary between problems")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    n, d, repeat = (5_000, 2_000, 1) if args.quick else (50_000, 20_000, 3)
    start = time.perf_counter()
    with threadpool_limits(1):
        rows = [l1_row(n, d, repeat, seed) for seed in seeds] + [multinomial_row(repeat)]
    print(f"CPU: {cpu_model()}; gradstep {gs.__version__}; {time.perf_counter() - start:.0f} s\n")
    print("| case | target | measured | met |\n| --- | --- | --- | --- |")
    for case, target, measured, ok in rows:
        print(f"| {case} | {target} | {measured} | {'yes' if ok else '**no**'} |")


if __name__ == "__main__":
    main()
