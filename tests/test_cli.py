"""The `gradstep` command line: `gradstep compare` and its errors."""

import argparse
import contextlib
import io
import re
import subprocess
import sys

import numpy as np
import pytest

from gradstep import _data, cli
from gradstep.cli import _args, compare
from gradstep.rules import RULES

try:
    import matplotlib

    matplotlib.use("Agg")
    HAVE_MPL = True
except ImportError:  # the table still works; the figure tests are skipped
    HAVE_MPL = False

needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--max-iter", "30"]


def _table_rules(out: str) -> list:
    """The rule names of the table rows (the lines after the dashed line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("----")) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split()[0])
    return rows


def _rows(out: str) -> list:
    """The table rows, split on whitespace."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("----")) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def _default_rows() -> list:
    """The default comparison's rows: every rule of the registry, in its order, and a second
    normalized run (the one with a decaying rate)."""
    return [name for name in RULES for _ in range(2 if name == "normalized" else 1)]


FIRST_ORDER = [name for name in RULES if compare.first_order(name)]
CURVATURE = [name for name in RULES if not compare.first_order(name)]


def _best_lrs(out: str) -> dict:
    """{label: lr} from the line 'best lr per rule (...): sgd 9.52, ...'."""
    line = next(line for line in out.splitlines() if line.startswith("best lr per rule"))
    items = line.split("): ", 1)[1].split(", ")
    return {item.split()[0]: float(item.split()[1].rstrip("*!")) for item in items}


def _is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == PNG_MAGIC


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


# ---------------------------------------------------------------------------------------------
# compare: the job
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run() -> str:
    """The output of a plain `gradstep compare --no-plot` (the default data, rules, budget)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(["compare", "--no-plot"]) == 0
    return buffer.getvalue()


def test_default_runs_every_rule_and_a_decaying_normalized(default_run):
    assert _table_rules(default_run) == _default_rows()
    assert set(_table_rules(default_run)) == set(RULES)
    normalized = [row for row in _rows(default_run) if row[0] == "normalized"]
    assert "/(1+0.05t)" not in normalized[0][1] and normalized[1][1].endswith("/(1+0.05t)")
    assert f"one batched gs.fit call ({len(_default_rows())} runs)" in default_run


def test_default_picks_every_first_order_rate_in_one_sweep(default_run):
    best = _best_lrs(default_run)
    assert list(best) == [*FIRST_ORDER[:4], "normalized+inverse_time", *FIRST_ORDER[4:]]
    n_runs = len(compare.SWEEP_EXPONENTS) * len(best)
    assert f"{n_runs} runs in one gs.fit call" in default_run
    # the table runs each rule at the rate the sweep chose
    rows = {row[0]: row for row in _rows(default_run) if row[0] in FIRST_ORDER}
    for name in FIRST_ORDER:
        if name != "normalized":  # two rows: the first is the constant-rate one
            assert float(rows[name][1]) == pytest.approx(best[name], rel=1e-2)
    # the curvature rules need no rate
    assert all(row[1] == "-" for row in _rows(default_run) if row[0] in CURVATURE)


def test_default_curvature_rules_reach_the_optimum(default_run):
    rows = [row for row in _rows(default_run) if row[0] in CURVATURE]
    assert [row[0] for row in rows] == CURVATURE
    for row in rows:
        assert row[2] in ("converged", "max_iter"), row  # never diverged or stalled
        assert float(row[6]) < 1e-10, row  # the gap to the optimum


def test_default_passes_column(default_run):
    assert "passes" in default_run.splitlines()[
        next(i for i, line in enumerate(default_run.splitlines()) if line.startswith("----")) - 1]
    for row in _rows(default_run):
        iters, passes = int(row[3]), int(row[4])
        if row[0] in FIRST_ORDER:  # one gradient per step, plus the start
            assert passes == iters + 1
        else:  # line searches and Hessian products cost passes too
            assert passes > iters


def test_sweep_is_one_call_with_all_rules_x_rates(capsys, monkeypatch):
    import gradstep as gs

    calls = []
    fit = gs.fit

    def recording_fit(X, y, rule, **kwargs):
        calls.append((len(rule) if isinstance(rule, (list, tuple)) else 1, kwargs["max_iter"]))
        return fit(X, y, rule, **kwargs)

    monkeypatch.setattr(gs, "fit", recording_fit)
    assert cli.main(["compare", "--max-iter", "40", "--no-plot"]) == 0
    n_sweep = len(compare.SWEEP_EXPONENTS) * (len(FIRST_ORDER) + 1)
    budget = compare.sweep_iterations(40)
    assert budget == 20 and calls.count((n_sweep, budget)) == 1  # (and one warm-up)
    assert calls.count((len(_default_rows()), 40)) == 1  # the comparison, one call
    assert "best lr per rule" in capsys.readouterr().out


def test_choose_never_picks_a_diverged_run():
    rates = np.array([0.1, 1.0, 10.0])
    assert compare.choose([0.5, 0.2, 0.1], ["max_iter", "max_iter", "diverged"], [9, 9, 3],
                          rates) == 1
    assert compare.choose([0.5, np.nan, np.inf], ["max_iter"] * 3, [9, 9, 9], rates) == 0
    assert compare.choose([1.0, 1.0], ["diverged", "diverged"], [1, 1], rates[:2]) is None
    # a tie within rounding: the fewest iterations, then the smaller rate
    assert compare.choose([0.3, 0.3 + 1e-15, 0.3], ["converged"] * 3, [50, 20, 20], rates) == 1
    assert compare.choose([0.3, 0.3, 0.3], ["converged"] * 3, [20, 20, 20], rates) == 0


def test_sweep_grid():
    rates = compare.sweep_rates(0.01)
    assert len(rates) == 8
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(0.01 * 10**2.5)
    np.testing.assert_allclose(rates[1:] / rates[:-1], 10**0.5)
    sgd = compare.Variant("sgd", compare.make_schedule("constant", {}), "sgd")
    adam = compare.Variant("adam", compare.make_schedule("constant", {}), "adam")
    assert sgd.base_lr(0.25) == 0.25  # 1/L
    assert adam.base_lr(0.25) == 0.001  # the class default
    assert np.isclose(compare.sweep_rates(0.001), 0.001).any()  # the default is on the grid


@needs_mpl
def test_compare_default_data_all_rules_and_png(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["compare", "--max-iter", "50", "--out", out]) == 0
    text = capsys.readouterr().out
    assert _table_rules(text) == _default_rows()
    assert "breast_cancer" in text and "569 samples x 30 features" in text
    for column in ("lr", "status", "iters", "passes", "final loss", "gap to opt", "|grad|",
                   "train acc", "time"):
        assert column in text
    assert "time axis: passes x" in text
    assert _is_png(out)


def test_compare_table_numbers(capsys):
    assert cli.main(["compare", "--rules", "sgd,adam", "--lr", "auto", "--max-iter", "2000",
                     "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "best lr per rule" not in text  # an explicit --lr: no sweep
    rows = {row[0]: row for row in _rows(text)}
    sgd = rows["sgd"]
    assert float(sgd[1]) == pytest.approx(0.301, rel=1e-3)  # 1/L on standardized breast cancer
    assert sgd[2] in ("converged", "max_iter")
    assert int(sgd[4]) == int(sgd[3]) + 1  # passes
    gap = float(sgd[6])
    assert 0 <= gap < 1e-4  # 2000 steps at 1/L get close to the optimum
    assert sgd[8].endswith("%") and 95 < float(sgd[8][:-1]) <= 100


def test_sweep_is_rules_times_lrs(capsys):
    assert cli.main(["compare", "--rules", "sgd,adam", "--lr", "0.01,0.1", *FAST,
                     "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert _table_rules(text) == ["sgd", "sgd", "adam", "adam"]
    lrs = [line.split()[1] for line in text.splitlines() if line.split()[:1] in (["sgd"], ["adam"])]
    assert lrs == ["0.01", "0.1", "0.01", "0.1"]


def test_lr_space_separated_and_default(capsys):
    assert cli.main(["compare", "--rules", "adam", "--lr", "0.01", "default", *FAST,
                     "--no-plot"]) == 0
    text = capsys.readouterr().out
    lrs = [line.split()[1] for line in text.splitlines() if line.split()[:1] == ["adam"]]
    assert lrs == ["0.01", "0.001"]  # 'default' is the rule's own (Adam's 0.001)


@needs_mpl
def test_synthetic_data(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert cli.main(["compare", "--data", "synthetic:n=500,d=5", *FAST, "--out", out]) == 0
    text = capsys.readouterr().out
    assert "500 samples x 5 features" in text
    assert _table_rules(text) == _default_rows()
    assert _is_png(out)


def _sample(n=120, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * [1.0, 10.0, 100.0][:d] + 5.0
    y = (X[:, 0] - 5.0 + rng.standard_normal(n) > 0).astype(int)
    return X, y


def test_csv_file(tmp_path, capsys):
    X, y = _sample()
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,label", comments="")
    assert cli.main(["compare", "--data", str(path), *FAST, "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "120 samples x 3 features (CSV, header row skipped)" in text
    assert _table_rules(text) == _default_rows()


def test_csv_with_text_labels_and_semicolons(tmp_path, capsys):
    X, y = _sample()
    path = tmp_path / "data.csv"
    with open(path, "w") as fh:
        for row, label in zip(X, y):
            fh.write(";".join(f"{v:.6f}" for v in row) + (";yes\n" if label else ";no\n"))
    assert cli.main(["compare", "--data", str(path), "--rules", "sgd", *FAST, "--no-plot"]) == 0
    assert "120 samples x 3 features (CSV, no header)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["data.svm", "data.txt", "data.libsvm"])
def test_svmlight_file(tmp_path, capsys, name):
    from sklearn.datasets import dump_svmlight_file

    X, y = _sample(d=3)
    X[X < 5.0] = 0.0  # some zeros: sparse entries
    path = tmp_path / name
    dump_svmlight_file(X, 2 * y - 1, str(path))  # LIBSVM's -1/+1 labels
    assert cli.main(["compare", "--data", str(path), "--rules", "sgd,adam", *FAST,
                     "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "120 samples x 3 features (LIBSVM, sparse" in text
    assert _table_rules(text) == ["sgd", "adam"]


def _sparse_problem():
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    X = sp.random(400, 60, density=0.05, format="csr", random_state=3)
    y = (X @ rng.standard_normal(60) > 0).astype(np.float64)
    return X, y


def test_sparse_files_stay_sparse_and_are_scaled_not_centered(tmp_path):
    # a LIBSVM file and a save_npz file of [X | y] load as the same CSR matrix, never dense:
    # each column divided by its standard deviation, zeros kept
    import scipy.sparse as sp
    from sklearn.datasets import dump_svmlight_file

    X, y = _sparse_problem()
    dump_svmlight_file(X, y, str(tmp_path / "d.svm"))
    sp.save_npz(tmp_path / "d.npz", sp.hstack([X, sp.csr_matrix(y[:, None])]).tocsr())
    expected = X.toarray() / np.where(X.toarray().std(axis=0) > 0, X.toarray().std(axis=0), 1)
    for name in ("d.svm", "d.npz"):
        data = _data.load(str(tmp_path / name))
        assert sp.issparse(data.X) and data.X.format == "csr", name
        assert data.X.nnz == X.nnz
        np.testing.assert_allclose(data.X.toarray(), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(data.y, y)
        assert "sparse" in data.description


def test_npz_file_runs_compare(tmp_path, capsys):
    import scipy.sparse as sp

    X, y = _sparse_problem()
    path = tmp_path / "data.npz"
    sp.save_npz(path, sp.hstack([X, sp.csr_matrix(y[:, None])]).tocsr())
    assert cli.main(["compare", "--data", str(path), "--rules", "sgd,lbfgs", *FAST,
                     "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "400 samples x 60 features (.npz, sparse" in text
    assert _table_rules(text) == ["sgd", "lbfgs"]


def test_npz_that_is_not_a_sparse_matrix(tmp_path, capsys):
    path = tmp_path / "arrays.npz"
    np.savez(path, X=np.ones((3, 2)))
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", "--data", str(path), "--no-plot"])
    assert info.value.code == 2
    assert "not a file saved by scipy.sparse.save_npz" in capsys.readouterr().err


def test_diverged_run_in_table_not_a_crash(capsys):
    # lr * alpha > 2: the L2 term alone makes vanilla GD blow up
    assert cli.main(["compare", "--rules", "sgd,adam", "--lr", "1000", "--alpha", "1",
                     "--max-iter", "300", "--no-plot"]) == 0
    text = capsys.readouterr().out
    sgd = next(line for line in text.splitlines() if line.startswith("sgd"))
    assert "diverged" in sgd


def test_schedule_and_minibatch(capsys):
    assert cli.main(["compare", "--rules", "sgd,normalized", "--lr", "0.5", "--schedule",
                     "inverse_time:decay=0.1", "--batch-size", "64", "--max-iter", "5",
                     "--seed", "3", "--backend", "numpy", "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "mini-batches of 64" in text and "inverse_time decay=0.1" in text
    assert _table_rules(text) == ["sgd", "normalized"]


def test_without_matplotlib_prints_table_and_note(tmp_path, capsys, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backend_bases"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "x.png"
    assert cli.main(["compare", "--rules", "sgd", *FAST, "--out", out]) == 0
    text = capsys.readouterr().out
    assert _table_rules(text) == ["sgd"]
    assert cli.PLOT_NOTE in text and "pip install gradstep[plot]" in text
    assert not out.exists()


def test_lr_list_runs_curvature_rules_once_at_their_defaults(capsys):
    assert cli.main(["compare", "--lr", "0.1,1", "--max-iter", "20", "--no-plot"]) == 0
    text = capsys.readouterr().out
    expected = [n for n in RULES for _ in range(2 if n in FIRST_ORDER else 1)]
    assert _table_rules(text) == expected  # first-order x lrs, curvature rules once
    assert f"note: {', '.join(CURVATURE)} take no learning rate" in text
    assert "best lr per rule" not in text


def test_minibatch_default_leaves_curvature_rules_out(capsys):
    assert cli.main(["compare", "--data", "synthetic:n=300,d=3", "--batch-size", "64",
                     "--max-iter", "5", "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "curvature rules" in text and "are left out" in text
    assert not set(_table_rules(text)) & set(CURVATURE)
    assert set(_table_rules(text)) == set(FIRST_ORDER)


def test_schedule_applies_to_first_order_rules_only(capsys):
    assert cli.main(["compare", "--rules", "sgd,lbfgs", "--lr", "1", "--schedule",
                     "inverse_time:decay=0.1", "--max-iter", "20", "--no-plot"]) == 0
    text = capsys.readouterr().out
    rows = {row[0]: row for row in _rows(text)}
    assert rows["sgd"][1] == "1/(1+0.1t)" and rows["lbfgs"][1] == "-"
    assert "lbfgs chooses its own step length" in text


# ---------------------------------------------------------------------------------------------
# help and errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "compare" in out
    if argv[0] == "compare":
        for option in ("--data", "--rules", "--lr", "--schedule", "--max-iter", "--batch-size",
                       "--alpha", "--backend", "--out", "--seed", "0-4 -> class 0",
                       "5-9 -> class 1", f"all {len(RULES)} rules", "best of 8 rates"):
            assert option in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("gradstep ")


@pytest.mark.parametrize("argv, expect", [
    (["compare", "--rules", "sgd,bogus"], "unknown rule 'bogus'"),
    (["compare", "--data", "no/such/file.csv"], "no such file"),
    (["compare", "--lr", "abc"], "invalid learning rate 'abc'"),
    (["compare", "--lr", "-0.1"], "invalid learning rate"),
    (["compare", "--lr", "0.1,0"], "invalid learning rate '0'"),
    (["compare", "--lr", "nan"], "invalid learning rate"),
    (["compare", "--data", "synthetic:n=abc"], "malformed synthetic spec"),
    (["compare", "--data", "synthetic:n=10,k=3"], "malformed synthetic spec"),
    (["compare", "--data", "synthetic;n=10"], "malformed synthetic spec"),
    (["compare", "--schedule", "weekly"], "unknown schedule 'weekly'"),
    (["compare", "--schedule", "inverse_time:gamma=0.5"], "'gamma' is a parameter"),
    (["compare", "--schedule", "exponential:gamma=2"], "gamma must be in (0, 1]"),
    (["compare", "--max-iter", "0"], "positive integer"),
    (["compare", "--alpha", "-1"], "number >= 0"),
    (["compare", "--backend", "gpu"], "invalid choice"),
    (["compare", "--out", "no/such/dir/x.png"], "does not exist"),
    (["compare", "--out", "x.unknownformat"], "image format"),
    (["compare", "--bogus-option"], "unrecognized arguments"),
    (["compare", "--rules", "lbfgs,newton", "--schedule", "inverse_time"], "take no schedule"),
    (["compare", "--rules", "sgd,bb", "--batch-size", "10"], "bb is a full-batch method"),
    ([], "required"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2_on_one_line(argv, expect, capsys):
    if "--out" in argv and not HAVE_MPL and "image format" in expect:
        pytest.skip("the format check needs matplotlib")
    err = _usage_error(capsys, argv)
    assert expect in err
    assert err.startswith("gradstep")


def test_bad_files_exit_2(tmp_path, capsys):
    three = tmp_path / "three.csv"
    np.savetxt(three, np.column_stack([np.arange(9.0), np.arange(9) % 3]), delimiter=",")
    assert "3 distinct values" in _usage_error(capsys, ["compare", "--data", str(three)])
    holes = tmp_path / "holes.csv"
    holes.write_text("1,2,0\n3,,1\n4,5,0\n")
    assert "not a finite number" in _usage_error(capsys, ["compare", "--data", str(holes)])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in _usage_error(capsys, ["compare", "--data", str(empty)])
    broken = tmp_path / "broken.svm"
    broken.write_text("1 1:0.5 2:x\n")
    assert "LIBSVM" in _usage_error(capsys, ["compare", "--data", str(broken)])
    assert "directory" in _usage_error(capsys, ["compare", "--data", str(tmp_path)])


def test_batch_size_larger_than_data_is_a_usage_error(capsys):
    err = _usage_error(capsys, ["compare", "--data", "synthetic:n=50,d=2", "--batch-size",
                                "100", "--no-plot"])
    assert "larger than the 50 samples" in err


# ---------------------------------------------------------------------------------------------
# the data sources
# ---------------------------------------------------------------------------------------------


def test_data_sources_are_standardized_and_binary():
    for spec in ("breast_cancer", "digits", "synthetic:n=200,d=3"):
        data = _data.load(spec)
        np.testing.assert_allclose(data.X.mean(axis=0), 0.0, atol=1e-10)
        std = data.X.std(axis=0)
        assert np.all((np.abs(std - 1) < 1e-10) | (std == 0))  # constant pixels stay 0
        assert set(np.unique(data.y)) == {0.0, 1.0}
    digits = _data.load("digits")
    assert digits.X.shape == (1797, 64) and 0.45 < digits.y.mean() < 0.55


def test_synthetic_is_seeded():
    a, b, c = (_data.load("synthetic:n=100,d=4", seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)
    assert _data.parse_synthetic("synthetic") == {"n": 1000, "d": 20}
    assert _data.parse_synthetic("synthetic:d=7") == {"n": 1000, "d": 7}


def test_optimum_is_tight():
    from sklearn.linear_model import LogisticRegression

    data = _data.load("breast_cancer")
    n = data.n_samples
    opt = compare.find_optimum(data.X, data.y, 1.0 / n)
    assert opt.grad_norm < 1e-9
    assert opt.method == "L-BFGS-B + Newton"
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10000).fit(data.X, data.y)
    np.testing.assert_allclose(opt.params[:-1], ref.coef_[0], rtol=1e-5, atol=1e-6)
    assert 0 < opt.mu <= opt.lipschitz


# ---------------------------------------------------------------------------------------------
# the package: entry points, converters, bench
# ---------------------------------------------------------------------------------------------


def test_entry_points_reach_main():
    from importlib.metadata import entry_points

    scripts = [ep for ep in entry_points(group="console_scripts") if ep.name == "gradstep"]
    if scripts:  # installed: pyproject's gradstep = "gradstep.cli:main"
        assert scripts[0].value == "gradstep.cli:main"
        assert scripts[0].load() is cli.main
    out = subprocess.run([sys.executable, "-m", "gradstep", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("gradstep ")


@pytest.mark.parametrize("convert, text, value", [
    (_args.positive_int, "3", 3), (_args.nonneg_float, "0", 0.0), (_args.seed, "0", 0),
    (_args.lr_list, "0.1,auto,default", [0.1, "auto", None]),
    (_args.schedule, "exponential:gamma=0.5", ("exponential", {"gamma": 0.5})),
    (_args.rule_list, "adam,sgd,adam", ["adam", "sgd"]),
])
def test_converters_accept(convert, text, value):
    assert convert(text) == value


@pytest.mark.parametrize("convert, text, expect", [
    (_args.positive_int, "0", "expected a positive integer, got '0'"),
    (_args.positive_int, "1.5", "expected a positive integer"),
    (_args.nonneg_float, "inf", "expected a finite number >= 0, got 'inf'"),
    (_args.seed, "-1", "expected an integer >= 0"),
    (_args.schedule, "inverse_time:decay", "malformed schedule"),
    (_args.schedule, "inverse_time:decay=x", "malformed schedule"),
    (_args.rule_list, ",", "empty rule list"),
])
def test_converters_reject_in_one_line(convert, text, expect):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(expect)):
        convert(text)


def test_bench_small(capsys):
    assert cli.main(["bench", "--n", "2000", "--d", "5", "--repeat", "1", "--fit-iter", "2",
                     "--backend", "numpy"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("gradstep bench: X 2000 x 5 float64")
    assert "X @ w (floor)" in text and "fit adam x2" in text


def test_bench_unavailable_backend_is_a_usage_error(capsys, monkeypatch):
    import gradstep

    def backends():
        return {"cpp": True, "numba": False, "numpy": True, "why": {"numba": "not installed"}}

    monkeypatch.setattr(gradstep, "backends", backends)
    err = _usage_error(capsys, ["bench", "--backend", "numba"])
    assert "backend 'numba' is not available: not installed" in err



@pytest.mark.parametrize("content,message", [
    ("a,b,label\n1e300,1,1\n2,3,0\n1,1,1\n0,2,0\n", "too large to standardize"),
    ("a,b,label\n1,1,1\n2,3,nan\n1,1,1\n0,2,nan\n", "label (last column) is empty or not"),
])
def test_hostile_csv_files_get_a_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    err = _usage_error(capsys, ["compare", "--data", str(path), "--rules", "sgd",
                                "--max-iter", "3", "--no-plot"])
    assert message in err


@pytest.mark.parametrize("args,message", [
    (["--n", "1099511627776"], "GiB for X alone"),
    (["--threads", "2147483648"], "an integer from 1 to 65536"),
])
def test_bench_refuses_impossible_sizes_before_any_work(capsys, args, message):
    assert message in _usage_error(capsys, ["bench", *args])
