"""fit(..., working_set=True): an L1 fit on growing sets of features reaches the plain fit's
optimum, meets the optimality conditions on the whole problem, reads fewer columns in its
rounds, and refuses what it cannot do."""

import numpy as np
import pytest
import scipy.sparse as sp

import gradstep as gs
from gradstep import working_set


def sparse_problem(n=400, d=1500, seed=0, classes=2):
    """Text-like CSR data (a few common features, a long tail) and labels from a sparse
    model: its L1 solution has a few dozen nonzero weights of d > working_set.START."""
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, d + 1) ** 0.8
    mask = rng.random((n, d)) < np.minimum(0.5, 30 * freq / freq.sum())
    X = sp.csr_matrix(np.where(mask, rng.lognormal(0.0, 0.5, (n, d)), 0.0))
    W = np.zeros((classes, d))
    W[:, rng.choice(d, 20, replace=False)] = rng.standard_normal((classes, 20)) * 3.0
    scores = X @ W.T
    if classes == 2:
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(scores[:, 0] - 0.3)))).astype(float)
    else:
        y = np.argmax(scores + rng.gumbel(size=scores.shape), axis=1)
    return X, y


def objective(X, y, res, alpha, l1_ratio, loss):
    kw = dict(alpha=alpha * (1 - l1_ratio), loss=loss, backend="numpy")
    value = gs.loss_and_grad(X, y, res.coef, res.intercept, **kw)[0]
    return float(value) + alpha * l1_ratio * float(np.abs(res.coef).sum())


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("loss", ["logistic", "multinomial"])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_reaches_the_plain_fits_optimum_reading_fewer_columns(monkeypatch, dense, loss, l1_ratio):
    X, y = sparse_problem(classes=2 if loss == "logistic" else 3, seed=1)
    if dense:
        X = X.toarray()
    alpha, tol = 0.02, 1e-9
    widths = []
    columns = working_set.columns

    def recording(X_, features):
        widths.append(features.size)
        return columns(X_, features)

    monkeypatch.setattr(working_set, "columns", recording)
    X_before, y_before = X.copy(), y.copy()
    kw = dict(alpha=alpha, l1_ratio=l1_ratio, loss=loss, tol=tol, max_iter=5000,
              backend="cpp")
    plain = gs.fit(X, y, "lbfgs", **kw)
    ws = gs.fit(X, y, "lbfgs", working_set=True, **kw)
    assert ws.status == "converged" and plain.status == "converged"
    # the rounds read column subsets, the first well below d
    assert widths and widths[0] == working_set.START < X.shape[1] // 2
    f_plain = objective(X, y, plain, alpha, l1_ratio, loss)
    f_ws = objective(X, y, ws, alpha, l1_ratio, loss)
    assert abs(f_ws - f_plain) <= 1e-9 * abs(f_plain)
    assert abs(float(ws.loss) - f_ws) <= 1e-12 * abs(f_ws)  # its loss is the whole objective
    assert 0 < np.count_nonzero(ws.coef) < X.shape[1] // 10
    np.testing.assert_array_equal(ws.coef != 0, plain.coef != 0)
    # optimality on the whole problem: |g_j| <= l1 (+ tol) wherever w_j = 0
    _, g, _ = gs.loss_and_grad(X, y, ws.coef, ws.intercept, alpha=alpha * (1 - l1_ratio),
                               loss=loss, backend="numpy")
    zero = ws.coef == 0
    assert np.abs(g[zero]).max() <= alpha * l1_ratio + tol
    # the user's arrays are untouched
    assert (X != X_before).nnz == 0 if sp.issparse(X) else np.array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


def test_rounds_slice_the_checked_csr_a_coo_x_is_converted_once(monkeypatch):
    X, y = sparse_problem(seed=1)
    seen = []
    columns = working_set.columns

    def recording(X_, features):
        seen.append(X_)
        return columns(X_, features)

    monkeypatch.setattr(working_set, "columns", recording)
    kw = dict(alpha=0.02, l1_ratio=1.0, tol=1e-8, working_set=True)
    from_coo = gs.fit(X.tocoo(), y, "lbfgs", **kw)
    assert seen and all(sp.issparse(M) and M.format == "csr" for M in seen)
    assert len({id(M) for M in seen}) == 1  # one CSR, converted once, sliced every round
    np.testing.assert_array_equal(from_coo.coef, gs.fit(X, y, "lbfgs", **kw).coef)


def test_history_and_counts_join_the_rounds():
    X, y = sparse_problem(seed=2)
    res = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, tol=1e-8, working_set=True,
                 backend="numpy")
    h = res.history
    assert res.n_iter == h.loss.size - 1
    assert np.all(np.diff(h.passes) >= 1)  # every iteration takes at least one pass
    assert res.passes > h.passes[-1]  # and the last check over the whole X
    assert np.all(np.diff(h.loss) <= 1e-12)  # one descent: each round starts where one ended
    assert h.loss[-1] == pytest.approx(res.loss, rel=1e-12)
    assert res.state is None and res.coef.shape == (X.shape[1],)


def test_max_iter_and_no_intercept():
    X, y = sparse_problem(seed=3)
    short = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, max_iter=4, working_set=True)
    assert short.status == "max_iter" and short.n_iter <= 4
    res = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, tol=1e-8, fit_intercept=False,
                 working_set=True)
    plain = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, tol=1e-8, fit_intercept=False)
    assert res.intercept == 0.0 and res.status == "converged"
    np.testing.assert_allclose(res.coef, plain.coef, atol=1e-6)


def test_a_narrow_problem_is_one_plain_round(monkeypatch):
    # d <= START: the first working set is every feature, X itself, no column copy
    X, y = sparse_problem(d=120, seed=4)
    monkeypatch.setattr(working_set, "columns", lambda *a: pytest.fail("copied columns"))
    res = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, tol=1e-8, working_set=True)
    plain = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, tol=1e-8)
    np.testing.assert_array_equal(res.coef, plain.coef)
    assert res.passes == plain.passes + 1  # the first scores' pass


@pytest.mark.parametrize("kwargs, names", [
    (dict(l1_ratio=0.0), "l1_ratio > 0"),
    (dict(rule=["lbfgs", "armijo"]), "one run"),
    (dict(alpha=[0.01, 0.02]), "one run"),
    (dict(rule="sgd", lr=0.1, batch_size=10), "batch_size"),
    (dict(monitor=lambda p: None), "monitor"),
    (dict(reference=np.zeros(1500)), "reference"),
    (dict(tol=None), "tol"),
    (dict(working_set="yes"), "True or False"),
])
def test_refuses_what_it_cannot_do(kwargs, names):
    X, y = sparse_problem()
    args = dict(rule="lbfgs", alpha=0.02, l1_ratio=1.0, working_set=True)
    args.update(kwargs)
    with pytest.raises(ValueError, match="working_set") as info:
        gs.fit(X, y, **args)
    assert names in str(info.value)


def test_false_in_numpy_spelling_is_the_plain_fit():
    X, y = sparse_problem()
    plain = gs.fit(X, y, "lbfgs", alpha=0.02, tol=1e-8)
    also = gs.fit(X, y, "lbfgs", alpha=0.02, tol=1e-8, working_set=np.False_)
    np.testing.assert_array_equal(plain.coef, also.coef)


def test_refuses_resume():
    X, y = sparse_problem()
    first = gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, max_iter=3)
    with pytest.raises(ValueError, match="no resume"):
        gs.fit(X, y, "lbfgs", alpha=0.02, l1_ratio=1.0, working_set=True, resume=first)


def test_one_run_in_batched_form_and_a_callback():
    # a 2-D y of one column and a sequence of one alpha (as the estimators call fit): the same
    # fit with a leading run axis
    X, y = sparse_problem(seed=5)
    kw = dict(l1_ratio=1.0, tol=1e-8, working_set=True)
    one = gs.fit(X, y, "lbfgs", alpha=0.02, **kw)
    batched = gs.fit(X, y[:, None], "lbfgs", alpha=[0.02], **kw)
    assert batched.batched and batched.coef.shape == (1, X.shape[1])
    np.testing.assert_array_equal(batched.coef[0], one.coef)
    assert batched.intercept[0] == one.intercept and batched.passes[0] == one.passes
    assert batched.status.tolist() == ["converged"]
    np.testing.assert_array_equal(batched.history.loss[0], one.history.loss)
    # a callback sees the rounds' progress, and stops the fit
    seen = []
    stopped = gs.fit(X, y, "lbfgs", alpha=0.02, callback=lambda p: seen.append(p) or False,
                     **kw)
    assert seen and stopped.status == "stopped"


@pytest.mark.parametrize("classes", [2, 3])
def test_the_estimator_takes_it(classes):
    X, y = sparse_problem(classes=classes, seed=6)
    kw = dict(C=5.0, l1_ratio=1.0, tol=1e-9, max_iter=5000)
    plain = gs.GDClassifier(**kw).fit(X, y)
    ws = gs.GDClassifier(working_set=True, **kw).fit(X, y)
    assert ws.status_ == "converged"
    np.testing.assert_array_equal(ws.coef_ != 0, plain.coef_ != 0)
    np.testing.assert_allclose(ws.predict_proba(X), plain.predict_proba(X), atol=1e-6)
    assert ws.loss_curve_.size == ws.n_iter_[0] + 1
    # partial_fit goes on epoch by epoch: no rounds
    gs.GDClassifier(rule="sgd", lr=0.1, l1_ratio=1.0, working_set=True).partial_fit(
        X, y, classes=np.unique(y))


def test_the_estimator_refuses_what_it_cannot_do():
    X, y = sparse_problem(classes=3, seed=6)
    with pytest.raises(ValueError, match="one-vs-rest"):
        gs.GDClassifier(l1_ratio=1.0, multi_class="ovr", working_set=True).fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        gs.GDClassifier(l1_ratio=1.0, early_stopping=True, working_set=True).fit(X, y)
    with pytest.raises(ValueError, match="l1_ratio > 0"):
        gs.GDClassifier(working_set=True).fit(X, y)
