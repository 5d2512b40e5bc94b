"""The `gradstep` command line: `gradstep compare` and its errors."""

import sys

import numpy as np
import pytest

from gradstep import _data, cli
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


@needs_mpl
def test_compare_default_data_all_rules_and_png(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["compare", "--max-iter", "50", "--out", out]) == 0
    text = capsys.readouterr().out
    assert _table_rules(text) == list(RULES)
    assert "breast_cancer" in text and "569 samples x 30 features" in text
    for column in ("lr", "status", "iters", "final loss", "gap to opt", "|grad|", "train acc",
                   "time"):
        assert column in text
    assert "one batched gs.fit call (8 runs)" in text
    assert _is_png(out)


def test_compare_table_numbers(capsys):
    assert cli.main(["compare", "--rules", "sgd,adam", "--lr", "auto", "--max-iter", "2000",
                     "--no-plot"]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.split() and line.split()[0] in ("sgd", "adam")}
    sgd = rows["sgd"]
    assert float(sgd[1]) == pytest.approx(0.301, rel=1e-3)  # 1/L on standardized breast cancer
    assert sgd[2] in ("converged", "max_iter")
    gap = float(sgd[5])
    assert 0 <= gap < 1e-4  # 2000 steps at 1/L get close to the optimum
    assert sgd[7].endswith("%") and 95 < float(sgd[7][:-1]) <= 100


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
    assert lrs == ["0.01", "0.03"]  # 'default' is the full-batch default of the rule


@needs_mpl
def test_synthetic_data(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert cli.main(["compare", "--data", "synthetic:n=500,d=5", *FAST, "--out", out]) == 0
    text = capsys.readouterr().out
    assert "500 samples x 5 features" in text
    assert _table_rules(text) == list(RULES)
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
    assert _table_rules(text) == list(RULES)


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
    assert "120 samples x 3 features (LIBSVM" in text
    assert _table_rules(text) == ["sgd", "adam"]


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
                       "5-9 -> class 1"):
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
    opt = cli.solve_optimum(data.X, data.y, 1.0 / n)
    assert opt.grad_norm < 1e-9
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10000).fit(data.X, data.y)
    np.testing.assert_allclose(opt.params[:-1], ref.coef_[0], rtol=1e-5, atol=1e-6)
    assert 0 < opt.mu <= opt.lipschitz
