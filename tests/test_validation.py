"""Input validation (a ValueError that names the argument), inputs never modified, and layouts:
float32, Fortran order, integer X, read-only arrays, no copy of a C-contiguous float X."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradstep as gs
from conftest import make_data
from gradstep import _validate


@pytest.fixture(scope="module")
def xy():
    return make_data(n=40, d=3, seed=0)


def _with(a, index, value):
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


# ---- bad data --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(xy, bad):
    X, y = xy
    sw = np.ones(len(y))
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        gs.fit(_with(X, (3, 1), bad), y)
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        gs.fit(X, _with(y, 5, bad))
    with pytest.raises(ValueError, match="sample_weight contains NaN or infinity"):
        gs.fit(X, y, sample_weight=_with(sw, 0, bad))
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        gs.loss_and_grad(_with(X, (0, 0), bad), y, np.zeros(3))
    with pytest.raises(ValueError, match="sample_weight contains NaN or infinity"):
        gs.loss_and_grad(X, y, np.zeros(3), sample_weight=_with(sw, 1, bad))
    with pytest.raises(ValueError, match="coef"):
        gs.loss_and_grad(X, y, np.array([0.0, bad, 0.0]))
    with pytest.raises(ValueError, match="coef_init"):
        gs.fit(X, y, coef_init=np.array([0.0, bad, 0.0]))


def test_non_finite_float32_X(xy):
    X, y = xy
    with pytest.raises(ValueError, match="X contains NaN"):
        gs.fit(_with(X, (1, 1), np.nan).astype(np.float32), y)
    # finite entries whose float32 sum overflows are still accepted
    big = np.full((4, 1), 3e38, dtype=np.float32)
    assert np.isfinite(gs.loss_and_grad(big, [0, 1, 0, 1], np.zeros(1))[0])


@pytest.mark.parametrize("y_bad", [np.zeros(40), np.arange(40) % 3])
def test_1d_y_needs_two_classes(xy, y_bad):
    X, _ = xy
    with pytest.raises(ValueError, match=r"y must have exactly two classes.*got [13]"):
        gs.fit(X, y_bad)


def test_2d_y_must_be_0_1(xy):
    X, y = xy
    with pytest.raises(ValueError, match="y must contain only 0 and 1"):
        gs.fit(X, np.column_stack([y, 2 * y]))
    with pytest.raises(ValueError, match="y must contain only 0 and 1"):
        gs.fit(X, np.column_stack([y, y - 0.5]))
    with pytest.raises(ValueError, match="y must contain only 0 and 1"):
        gs.loss_and_grad(X, 2 * y, np.zeros(3))  # loss_and_grad takes 0/1 only
    with pytest.raises(ValueError, match="y must be 1-D .* or 2-D"):
        gs.fit(X, y.reshape(-1, 1, 1))


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("bad, message", [(0.5, "only 0 and 1"), (np.nan, "NaN or infinity"),
                                          (np.inf, "NaN or infinity"), (-1.0, "only 0 and 1")])
def test_bad_target_found_in_any_chunk_of_a_long_y(n_threads, bad, message):
    # 200,003 rows: the compiled 0/1 check cuts y into chunks of 65,536 run on several threads;
    # a bad value in the last, short chunk and one in a 2-D y's second column must both be found
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200_003, 2))
    y = (rng.random(200_003) < 0.5).astype(np.float64)
    for where in (200_002, 70_000):
        with pytest.raises(ValueError, match=message):
            gs.loss_and_grad(X, _with(y, where, bad), np.zeros(2), n_threads=n_threads)
    Y = np.column_stack([y, _with(y, 131_072, bad)])
    with pytest.raises(ValueError, match=message):
        gs.loss_and_grad(X, Y, np.zeros((2, 2)), np.zeros(2), n_threads=n_threads)
    # the same check on a strided y (NumPy's path) and the good y passes on both paths
    with pytest.raises(ValueError, match=message):
        _validate.check_targets(np.column_stack([_with(y, 3, bad), y])[:, 0], len(y),
                                labels=False)
    for arr in (y, np.column_stack([y, y])[:, 1]):
        got, _ = _validate.check_targets(arr, len(y), labels=False, n_threads=n_threads)
        np.testing.assert_array_equal(got[:, 0], y)


def test_mismatched_lengths(xy):
    X, y = xy
    with pytest.raises(ValueError, match="y has 39 rows but X has 40"):
        gs.fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(40,\)"):
        gs.fit(X, y, sample_weight=np.ones(41))
    with pytest.raises(ValueError, match="sample_weight"):
        gs.fit(X, y, sample_weight=np.ones((40, 1, 1)))
    with pytest.raises(ValueError, match="sample_weight"):  # 3 weight columns, 2 rules
        gs.fit(X, y, ["sgd", "adam"], sample_weight=np.ones((40, 3)))
    with pytest.raises(ValueError, match="y has 39 rows"):
        gs.loss_and_grad(X, y[:-1], np.zeros(3))
    with pytest.raises(ValueError, match="coef must have shape"):
        gs.loss_and_grad(X, y, np.zeros(4))
    with pytest.raises(ValueError, match="coef_init must have shape"):
        gs.fit(X, y, coef_init=np.zeros(2))
    with pytest.raises(ValueError, match="y has 2 columns/entries but coef has 3 rows"):
        gs.loss_and_grad(X, np.column_stack([y, y]), np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="must pair up, but rule has 3, y has 2"):
        gs.fit(X, np.column_stack([y, y]), ["sgd", "adam", "sgd"])


def test_bad_sample_weight_values(xy):
    X, y = xy
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        gs.fit(X, y, sample_weight=_with(np.ones(40), 2, -1.0))
    with pytest.raises(ValueError, match="sample_weight sums to zero"):
        gs.fit(X, y, sample_weight=np.zeros(40))


def test_bad_X_shapes_and_types(xy):
    _, y = xy
    with pytest.raises(ValueError, match="X must be 2-D"):
        gs.fit(np.arange(40.0), y)
    with pytest.raises(ValueError, match="X must be 2-D"):
        gs.loss_and_grad(np.arange(40.0), y, np.zeros(1))
    with pytest.raises(ValueError, match="X is empty"):
        gs.fit(np.empty((0, 3)), np.empty(0))
    with pytest.raises(ValueError, match="X is empty"):
        gs.fit(np.empty((40, 0)), y)
    with pytest.raises(ValueError, match="X must hold real numbers"):
        gs.fit(np.full((40, 2), "a"), y)
    with pytest.raises(ValueError, match="X must hold real numbers"):
        gs.fit(np.ones((40, 2), dtype=complex), y)


# ---- bad options -----------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, -np.inf, np.inf, np.nan, "fast", [0.1, -1.0]])
def test_bad_lr(xy, lr):
    X, y = xy
    with pytest.raises(ValueError, match="lr must be"):
        gs.fit(X, y, lr=lr)


def test_bad_rule_and_schedule(xy):
    X, y = xy
    with pytest.raises(ValueError, match="unknown rule 'bogus'; valid names: sgd, momentum, "
                                         "nesterov, normalized, adagrad, rmsprop, adadelta, adam, "
                                         "armijo, bb, lbfgs, newton"):
        gs.fit(X, y, "bogus")
    with pytest.raises(ValueError, match="unknown rule"):
        gs.fit(X, y, ["sgd", "nope"])
    with pytest.raises(ValueError, match=r"unknown schedule 'linear'.*constant.*cosine"):
        gs.fit(X, y, schedule="linear")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['beta1'\] for rule 'sgd'"):
        gs.fit(X, y, "sgd", beta1=0.5)
    with pytest.raises(ValueError, match="'gamma' is a parameter of the 'exponential'"):
        gs.fit(X, y, schedule="cosine", gamma=0.5)
    with pytest.raises(ValueError, match="rule is an empty sequence"):
        gs.fit(X, y, [])


@pytest.mark.parametrize("rule,name", [("adam", "beta1"), ("adam", "beta2"),
                                       ("momentum", "mu"), ("nesterov", "mu"),
                                       ("rmsprop", "rho"), ("adadelta", "rho")])
@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_betas_outside_0_1(xy, rule, name, value):
    X, y = xy
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\)"):
        gs.fit(X, y, rule, **{name: value})


@pytest.mark.parametrize("rule", ["normalized", "adagrad", "rmsprop", "adadelta", "adam"])
def test_negative_eps(xy, rule):
    X, y = xy
    with pytest.raises(ValueError, match="eps must be >= 0"):
        gs.fit(X, y, rule, eps=-1e-8)
    with pytest.raises(ValueError, match="eps"):
        gs.fit(X, y, rule, eps=np.nan)


def test_bad_schedule_params(xy):
    X, y = xy
    with pytest.raises(ValueError, match="decay must be >= 0"):
        gs.fit(X, y, schedule="inverse_time", decay=-1.0)
    with pytest.raises(ValueError, match="power must be >= 0"):
        gs.fit(X, y, schedule="inverse_power", power=-0.5)
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        gs.fit(X, y, schedule="exponential", gamma=1.5)


def test_bad_counts_and_sequences(xy):
    X, y = xy
    with pytest.raises(ValueError, match="must pair up, but rule has 2, lr has 3"):
        gs.fit(X, y, ["sgd", "adam"], lr=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        gs.fit(X, y, max_iter=0)
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        gs.fit(X, y, max_iter=2.5)
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        gs.fit(X, y, n_threads=0)
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        gs.loss_and_grad(X, y, np.zeros(3), n_threads=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        gs.fit(X, y, batch_size=0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        gs.fit(X, y, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        gs.loss_and_grad(X, y, np.zeros(3), alpha=np.inf)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        gs.fit(X, y, tol=-1e-3)
    with pytest.raises(ValueError, match="random_state must be >= 0"):
        gs.fit(X, y, random_state=-1)
    with pytest.raises(ValueError, match="intercept_init was given but fit_intercept=False"):
        gs.fit(X, y, intercept_init=0.5, fit_intercept=False)


@settings(max_examples=30, deadline=None, database=None)
@given(value=st.one_of(st.floats(max_value=0.0), st.just(float("nan")),
                       st.just(float("inf")), st.text(max_size=5)))
def test_property_any_bad_lr_is_rejected(value):
    X, y = make_data(n=20, d=2)
    if value == "auto":
        return
    with pytest.raises(ValueError, match="lr must be"):
        gs.fit(X, y, lr=value, max_iter=1, backend="numpy")


# ---- inputs are never modified ---------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 16])
def test_inputs_are_not_modified(backend, xy, batch_size):
    X, y = xy
    X, y = X.copy(), y.copy()
    sw = np.random.default_rng(0).uniform(0.5, 2, 40)
    w0 = np.array([0.1, 0.2, -0.3])
    ref = np.array([1.0, 1.0, 1.0, 0.0])
    copies = [a.copy() for a in (X, y, sw, w0, ref)]
    gs.fit(X, y, ["adam", "normalized"], lr=0.1, sample_weight=sw, coef_init=w0,
           intercept_init=0.2, reference=ref, max_iter=15, batch_size=batch_size,
           random_state=0, backend=backend)
    gs.loss_and_grad(X, y, w0, 0.3, sample_weight=sw, backend=backend)
    for a, b in zip((X, y, sw, w0, ref), copies):
        np.testing.assert_array_equal(a, b)


def test_read_only_inputs(backend, xy):
    X, y = xy
    X, y = X.copy(), y.copy()
    sw = np.ones(40)
    w0 = np.zeros(3)
    expected = gs.fit(X, y, "adam", lr=0.1, max_iter=10, sample_weight=sw, coef_init=w0,
                      backend=backend)
    for a in (X, y, sw, w0):
        a.setflags(write=False)
    res = gs.fit(X, y, "adam", lr=0.1, max_iter=10, sample_weight=sw, coef_init=w0,
                 backend=backend)
    np.testing.assert_array_equal(res.coef, expected.coef)
    got = gs.loss_and_grad(X, y, w0, sample_weight=sw, backend=backend)
    assert np.isfinite(got[0])
    X32 = X.astype(np.float32)
    X32.setflags(write=False)
    gs.fit(X32, y, max_iter=3, batch_size=8, random_state=0, backend=backend)


# ---- layout ----------------------------------------------------------------------------------


def test_float32_close_to_float64(backend):
    X, y = make_data(n=300, d=5, seed=0)
    kw = dict(lr=["auto", 0.05, 0.01], alpha=1e-3, max_iter=100, tol=None, backend=backend)
    r64 = gs.fit(X, y, ["sgd", "momentum", "adam"], **kw)
    r32 = gs.fit(X.astype(np.float32), y, ["sgd", "momentum", "adam"], **kw)
    np.testing.assert_allclose(r32.coef, r64.coef, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r32.loss, r64.loss, rtol=1e-5)
    # the float32 data are used as given (widened per element), not rounded any further:
    # the same values in float64 give the same fit up to summation order
    r_same = gs.fit(X.astype(np.float32).astype(np.float64), y, ["sgd", "momentum", "adam"],
                    **kw)
    np.testing.assert_allclose(r32.coef, r_same.coef, rtol=1e-12, atol=1e-14)


def test_fortran_and_integer_X(backend):
    rng = np.random.default_rng(1)
    Xi = rng.integers(-3, 4, size=(200, 4))
    y = (Xi @ [1, -1, 0.5, 0] + rng.standard_normal(200) > 0).astype(int)
    expected = gs.fit(Xi.astype(np.float64), y, "adam", lr=0.05, max_iter=30, backend=backend)
    for X in (Xi, np.asfortranarray(Xi), np.asfortranarray(Xi.astype(np.float64)),
              Xi.astype(np.float64)[:, ::-1][:, ::-1], Xi.astype(np.int8), Xi.tolist()):
        res = gs.fit(X, y, "adam", lr=0.05, max_iter=30, backend=backend)
        np.testing.assert_allclose(res.coef, expected.coef, rtol=1e-13)
    bools = gs.fit(Xi > 0, y, max_iter=5, backend=backend)
    ref = gs.fit((Xi > 0).astype(float), y, max_iter=5, backend=backend)
    np.testing.assert_allclose(bools.coef, ref.coef, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_contiguous_float_X_is_not_copied(dtype):
    X = np.ones((10, 3), dtype=dtype)
    assert _validate.check_X(X) is X
    X.setflags(write=False)
    assert _validate.check_X(X) is X
    F = np.asfortranarray(np.ones((10, 3), dtype=dtype))
    out = _validate.check_X(F)
    assert out.flags.c_contiguous and out.dtype == dtype and not np.shares_memory(out, F)
    assert _validate.check_X(np.ones((10, 3), dtype=np.int32)).dtype == np.float64
    assert _validate.check_X(np.ones((10, 3), dtype=np.float16)).dtype == np.float64
