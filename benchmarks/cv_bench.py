"""GDClassifierCV against scikit-learn's LogisticRegressionCV: time and chosen C.

Both at Cs=10 (np.logspace(-4, 4, 10)), cv=5 (StratifiedKFold), accuracy, on standardized
breast cancer (binary) and digits (10 classes, multinomial). gradstep fits all 5 x 10 fold x C
runs in one batched call; scikit-learn fits each fold's path of Cs with warm starts (lbfgs,
its defaults tol=1e-4, max_iter=100). Each time is the best of ``--repeat`` runs after a
warm-up (Numba compilation is not timed).

GDClassifierCV is timed at its default tol (1e-6) and at ``--tols`` (default 1e-4):
LogisticRegressionCV's tol=1e-4 is the same stopping test (L-BFGS-B's max |projected gradient|
<= tol on the mean loss + 1/(2 C n) ||w||^2, which is gradstep's objective with alpha = 1/(C n)),
so the 1e-4 row compares the two at the same precision.

    python benchmarks/cv_bench.py [--repeat 3] [--rules lbfgs,newton] [--tols 1e-4]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from gradstep import GDClassifierCV


def best_time(make, X, y, repeat: int):
    model, times = None, []
    for _ in range(repeat):
        began = time.perf_counter()
        model = make().fit(X, y)
        times.append(time.perf_counter() - began)
    return model, min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rules", default="lbfgs,newton",
                        help="GDClassifierCV rules to time (comma-separated)")
    parser.add_argument("--tols", default="1e-4",
                        help="tols to time besides the default (comma-separated; '' for none)")
    args = parser.parse_args(argv)
    rules = args.rules.split(",")
    tols = [None] + [float(t) for t in args.tols.split(",") if t]
    print(f"{'data':14s} {'estimator':28s} {'time':>9s} {'C_':>10s} {'mean acc at C_':>15s} "
          f"{'speed-up':>9s}")
    for load in (load_breast_cancer, load_digits):
        X, y = load(return_X_y=True)
        X = StandardScaler().fit_transform(X)
        name = load.__name__.replace("load_", "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs at max_iter=100 on the largest Cs
            theirs, t_sk = best_time(
                lambda: LogisticRegressionCV(Cs=10, cv=5, scoring="accuracy",
                                             l1_ratios=(0.0,), use_legacy_attributes=True),
                X, y, args.repeat)
        key = list(theirs.scores_)[0]
        sk_best = int(np.argmax(theirs.scores_[key][:, :, 0].mean(axis=0)))
        print(f"{name:14s} {'LogisticRegressionCV':28s} {t_sk * 1e3:7.0f}ms "
              f"{theirs.C_[0]:10.4g} {theirs.scores_[key][:, sk_best, 0].mean():15.4f} "
              f"{'1.0x':>9s}")
        for rule in rules:
            for tol in tols:
                kw = {} if tol is None else {"tol": tol}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    GDClassifierCV(Cs=10, cv=5, rule=rule, **kw).fit(X, y)  # warm-up: Numba
                    ours, t_gs = best_time(
                        lambda r=rule, kw=kw: GDClassifierCV(Cs=10, cv=5, rule=r, **kw), X, y,
                        args.repeat)
                best = int(np.argmax(ours.scores_[key].mean(axis=0)))
                same = "same C_" if np.array_equal(ours.C_, theirs.C_) else "OTHER C_"
                label = f"GDClassifierCV({rule}" + ("" if tol is None else f", tol={tol:g}") + ")"
                print(f"{name:14s} {label:28s} {t_gs * 1e3:7.0f}ms "
                      f"{ours.C_[0]:10.4g} {ours.scores_[key][:, best].mean():15.4f} "
                      f"{t_sk / t_gs:8.1f}x  {same}")


if __name__ == "__main__":
    main()
