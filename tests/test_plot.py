"""gradstep.plot: every picture draws one line per run, for batched and single-run results."""

import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import gradstep as gs  # noqa: E402
from gradstep import optimum, plot  # noqa: E402
from gradstep._data import load  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RULES = ["sgd", "normalized", "adagrad", "adam"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def problem():
    data = load("synthetic:n=300,d=4", seed=1)
    alpha = 1.0 / data.n_samples
    result = optimum.solve(data.X, data.y, alpha=alpha)
    hessian = optimum.hessian(data.X, result.coef, result.intercept, alpha=alpha)
    opt = SimpleNamespace(
        params=np.append(result.coef, result.intercept),
        loss=result.loss,
        lipschitz=gs.lipschitz_constant(data.X, np.ones(data.n_samples), alpha, True),
        mu=float(np.linalg.eigvalsh(hessian)[0]),
    )
    return data.X, data.y, alpha, opt


@pytest.fixture(scope="module")
def batched(problem):
    X, y, alpha, opt = problem
    return gs.fit(X, y, RULES, lr=[0.5, 0.05, 0.1, 0.05], alpha=alpha, max_iter=40,
                  reference=opt.params)


@pytest.fixture(scope="module")
def single(problem):
    X, y, alpha, opt = problem
    return gs.fit(X, y, "normalized", lr=0.05, alpha=alpha, max_iter=30, reference=opt.params)


def _save_png(fig, path):
    fig.savefig(path)
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC


@pytest.mark.parametrize("draw", [plot.plot_history, plot.plot_gradient_vs_distance,
                                  plot.plot_steps])
def test_one_line_per_run_batched(draw, batched, tmp_path):
    ax = draw(batched)
    assert len(ax.get_lines()) == len(RULES)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "sgd lr=0.5" and labels[1] == "normalized lr=0.05"
    _save_png(ax.figure, tmp_path / f"{draw.__name__}.png")


@pytest.mark.parametrize("draw", [plot.plot_history, plot.plot_gradient_vs_distance,
                                  plot.plot_steps])
def test_single_run_result(draw, single, tmp_path):
    ax = draw(single)
    assert len(ax.get_lines()) == 1
    assert ax.get_lines()[0].get_label() == "normalized lr=0.05"
    _save_png(ax.figure, tmp_path / "single.png")


def test_draws_on_the_given_axes(batched):
    fig, ax = plt.subplots()
    assert plot.plot_steps(batched, ax=ax) is ax


def test_log_scales(batched):
    assert plot.plot_history(batched).get_yscale() == "log"
    ax = plot.plot_gradient_vs_distance(batched)
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert plot.plot_steps(batched).get_yscale() == "log"


def test_history_gap_to_the_given_optimum(batched, problem):
    opt = problem[3]
    ax = plot.plot_history(batched, optimum_loss=opt.loss)
    x, gap = ax.get_lines()[0].get_data()
    np.testing.assert_allclose(gap[:5], batched.history.loss[0, :5] - opt.loss)
    assert x[0] == 0
    assert "optimal" in ax.get_ylabel()


def test_history_without_optimum_says_so(batched):
    ax = plot.plot_history(batched)
    assert "lowest loss seen" in ax.get_ylabel()
    gaps = np.concatenate([line.get_ydata() for line in ax.get_lines()])
    assert np.nanmin(gaps) > 0  # the best point is just above the floor, never log(0)


def test_steps_skip_entry_zero_and_normalized_is_lr(batched):
    ax = plot.plot_steps(batched)
    x, steps = ax.get_lines()[1].get_data()  # the normalized run
    assert x[0] == 1
    n = int(batched.n_iter[1])
    np.testing.assert_allclose(steps[:n], 0.05, rtol=1e-9)


def test_gradient_vs_distance_needs_reference(problem):
    X, y, alpha, _ = problem
    res = gs.fit(X, y, ["sgd", "adam"], alpha=alpha, max_iter=5)
    with pytest.raises(ValueError, match="reference="):
        plot.plot_gradient_vs_distance(res)


def test_gradient_vs_distance_band_is_not_a_line(batched, problem):
    opt = problem[3]
    ax = plot.plot_gradient_vs_distance(batched, lipschitz=opt.lipschitz, mu=opt.mu)
    assert len(ax.get_lines()) == len(RULES)  # the band is a shaded area
    assert len(ax.collections) == 1


def test_compare_figure(batched, problem, tmp_path):
    opt = problem[3]
    fig = plot.plot_compare(batched, optimum_loss=opt.loss, title="t", lipschitz=opt.lipschitz,
                            mu=opt.mu)
    axes = fig.get_axes()
    assert len(axes) == 3
    assert [len(ax.get_lines()) for ax in axes] == [len(RULES)] * 3
    assert len(fig.legends) == 1  # shared legend, one entry per run
    assert len(fig.legends[0].get_texts()) == len(RULES)
    _save_png(fig, tmp_path / "compare.png")


def test_compare_into_a_bare_figure_and_without_reference(problem, tmp_path):
    from matplotlib.figure import Figure

    X, y, alpha, _ = problem
    res = gs.fit(X, y, ["sgd", "rmsprop"], alpha=alpha, max_iter=10)
    fig = plot.plot_compare(res, fig=Figure())
    axes = fig.get_axes()
    assert len(axes[0].get_lines()) == 2 and len(axes[2].get_lines()) == 2
    assert "reference=" in axes[1].texts[0].get_text()
    _save_png(fig, tmp_path / "noref.png")


def test_diverged_run_is_drawn_and_labelled(problem):
    X, y, _, _ = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.DivergenceWarning)
        res = gs.fit(X, y, ["sgd", "sgd"], lr=[0.1, 50.0], alpha=1.0, max_iter=300)
    assert res.status[1] == "diverged"
    ax = plot.plot_history(res)
    assert len(ax.get_lines()) == 2
    assert ax.get_lines()[1].get_label().endswith("(diverged)")
    # same rule, two lrs: same colour, different line styles
    a, b = ax.get_lines()
    assert a.get_color() == b.get_color() and a.get_linestyle() != b.get_linestyle()


def test_history_against_passes(batched, problem):
    ax = plot.plot_history(batched, optimum_loss=problem[3].loss, x="passes")
    for k, line in enumerate(ax.get_lines()):
        x, _ = line.get_data()
        np.testing.assert_array_equal(x, batched.history.passes[k])
    assert ax.get_xlabel() == "passes over X"
    assert plot.plot_history(batched).get_xlabel() == "iteration"  # the default


def test_history_x_is_checked(batched):
    with pytest.raises(ValueError, match="x must be one of 'iteration', 'passes'"):
        plot.plot_history(batched, x="time")


@pytest.fixture(scope="module")
def every_rule(problem):
    """All registry rules, plus a second normalized run with a decaying rate: 13 runs."""
    X, y, alpha, opt = problem
    rules = [gs.rules.make_rule(name, None, gs.rules.make_schedule("constant", {}), {})
             for name in gs.rules.RULES]
    rules.insert(4, gs.Normalized(lr=0.1, schedule=gs.InverseTime(decay=0.05)))
    return gs.fit(X, y, rules, alpha=alpha, max_iter=30, tol=1e-10, reference=opt.params)


def test_colours_follow_the_registry_and_runs_stay_distinct(every_rule):
    names = list(gs.rules.RULES)
    ax = plot.plot_history(every_rule, x="passes")
    lines = ax.get_lines()
    assert len(lines) == len(names) + 1
    for line, rule in zip(lines, every_rule.rules):
        assert line.get_color() == plot._PALETTE[names.index(rule.name)]
    assert len({line.get_color() for line in lines}) == len(names)  # one colour per rule
    # the two normalized runs: same colour, another line style, the schedule in the label
    constant, decaying = lines[3], lines[4]
    assert constant.get_color() == decaying.get_color()
    assert constant.get_linestyle() != decaying.get_linestyle()
    assert decaying.get_label() == "normalized lr=0.1 (inverse_time decay=0.05)"
    # the curvature rules need no rate: labelled by their name
    assert [line.get_label() for line in lines[-4:]] == ["armijo", "bb", "lbfgs", "newton"]


def test_compare_against_passes_with_a_time_axis(every_rule, problem, tmp_path):
    from matplotlib.figure import Figure

    opt = problem[3]
    fig = plot.plot_compare(every_rule, optimum_loss=opt.loss, fig=Figure(), x="passes",
                            seconds_per_pass=2e-4)
    left = fig.get_axes()[0]
    assert left.get_xlabel() == "passes over X"
    top = [child for child in left.child_axes if "estimated time" in child.get_xlabel()]
    assert len(top) == 1 and "200 µs per pass" in top[0].get_xlabel()
    assert len(fig.legends[0].get_texts()) == len(every_rule.rules)
    _save_png(fig, tmp_path / "every_rule.png")


def test_import_gradstep_does_not_import_matplotlib():
    code = ("import sys, gradstep, gradstep.plot, gradstep.cli, gradstep.optimum; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
