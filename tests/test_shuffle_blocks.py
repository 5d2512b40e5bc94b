"""shuffle="blocks" (issue 12): the order of state.shuffle_order_blocks is a permutation, the same
on every backend, different per epoch; "rows" stays the default bit for bit; a blocks fit reaches
about the loss of a rows fit; bad values are refused."""

import numpy as np
import pytest

import gradstep as gs
from gradstep._backends import available
from gradstep._backends.state import (
    SHUFFLE_BLOCK,
    SHUFFLE_WINDOW,
    block_seed,
    shuffle_order,
    shuffle_order_blocks,
)

BACKENDS = [b for b in ("numpy", "numba", "cpp") if b in available()]


def _data(n=3001, d=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(float)
    return X, y


@pytest.mark.parametrize("n", [1, 2, 7, SHUFFLE_BLOCK - 1, SHUFFLE_BLOCK, SHUFFLE_BLOCK + 1,
                               SHUFFLE_WINDOW + 1, 3001, 20001])
@pytest.mark.parametrize("block", [1, 3, SHUFFLE_BLOCK, 2 * SHUFFLE_WINDOW])
def test_order_is_a_permutation(n, block):
    order = shuffle_order(n, 12345, 2, blocks=block)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_order_structure():
    # each window holds whole blocks (as consecutive row runs) and is a permutation of them
    n, seed, epoch = 5000, 9, 4
    order = shuffle_order_blocks(n, seed, epoch, SHUFFLE_BLOCK)
    blocks = shuffle_order(-(-n // SHUFFLE_BLOCK), block_seed(seed), epoch)
    per_window = SHUFFLE_WINDOW // SHUFFLE_BLOCK
    start = 0
    for w in range(0, blocks.size, per_window):
        rows = np.concatenate([np.arange(b * SHUFFLE_BLOCK, min((b + 1) * SHUFFLE_BLOCK, n))
                               for b in blocks[w:w + per_window]])
        window = order[start:start + rows.size]
        np.testing.assert_array_equal(np.sort(window), np.sort(rows))
        start += rows.size
    assert start == n
    # a batch of 256 mixes rows of many blocks
    assert np.unique(order[:256] // SHUFFLE_BLOCK).size >= 10


def test_epochs_and_seeds_differ():
    a, b = shuffle_order(5000, 1, 0, blocks=SHUFFLE_BLOCK), shuffle_order(5000, 1, 1,
                                                                          blocks=SHUFFLE_BLOCK)
    c = shuffle_order(5000, 2, 0, blocks=SHUFFLE_BLOCK)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, shuffle_order(5000, 1, 0))  # not the row order


@pytest.mark.skipif("numba" not in available(), reason="numba backend not available")
@pytest.mark.parametrize("n", [1, 5, 64, 65, 1025, 20001])
def test_numba_order_matches_spec(n):
    from gradstep._backends import numba as nb

    for epoch in (0, 3):
        want = shuffle_order_blocks(n, 7, epoch, SHUFFLE_BLOCK)
        got = nb._shuffle_order_blocks(n, np.uint64(7), np.uint64(block_seed(7)), epoch,
                                       SHUFFLE_BLOCK, SHUFFLE_WINDOW)
        np.testing.assert_array_equal(got, want)


def _fit(X, y, backend, **kw):
    kw = {"lr": 0.01, "batch_size": 50, "max_iter": 4, "tol": None, "random_state": 3, **kw}
    r = gs.fit(X, y, "adam", backend=backend, **kw)
    return np.append(r.coef.ravel(), r.intercept), r


@pytest.mark.parametrize("weights", [False, True])
def test_backends_agree(weights):
    X, y = _data()
    sw = np.random.default_rng(1).uniform(0.5, 2, size=y.size) if weights else None
    want, _ = _fit(X, y, "numpy", shuffle="blocks", sample_weight=sw)
    for backend in BACKENDS:
        got, r = _fit(X, y, backend, shuffle="blocks", sample_weight=sw)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=backend)
        assert r.state.epoch == 4
    rows, _ = _fit(X, y, "numpy", sample_weight=sw)
    assert np.abs(rows - want).max() > 1e-6  # a different order really is used


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_is_the_default_bit_for_bit(backend):
    X, y = _data()
    a, _ = _fit(X, y, backend)
    b, _ = _fit(X, y, backend, shuffle="rows")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_continues_the_epochs(backend):
    X, y = _data()
    whole, _ = _fit(X, y, backend, shuffle="blocks", max_iter=5)
    _, first = _fit(X, y, backend, shuffle="blocks", max_iter=2)
    resumed, _ = _fit(X, y, backend, shuffle="blocks", max_iter=3, resume=first)
    np.testing.assert_allclose(resumed, whole, rtol=0, atol=1e-12)


def test_blocks_loss_close_to_rows():
    X, y = _data(n=20000, d=20, seed=4)
    alpha = 1e-4
    losses = {}
    for shuffle in ("rows", "blocks"):
        r = gs.fit(X, y, "adam", lr=1e-3, alpha=alpha, batch_size=64, max_iter=5, tol=None,
                   random_state=0, shuffle=shuffle)
        losses[shuffle] = float(np.ravel(gs.loss_and_grad(X, y, r.coef, r.intercept,
                                                          alpha=alpha)[0])[0])
    assert abs(losses["blocks"] - losses["rows"]) <= 0.01 * losses["rows"]


@pytest.mark.parametrize("value", ["block", "Rows", "", None, 64, True])
def test_bad_shuffle_rejected(value):
    X, y = _data(n=100)
    with pytest.raises(ValueError, match="shuffle must be 'rows' or 'blocks'"):
        gs.fit(X, y, batch_size=10, max_iter=1, shuffle=value)


def test_blocks_needs_batch_size():
    X, y = _data(n=100)
    with pytest.raises(ValueError, match="shuffle='blocks'.*batch_size"):
        gs.fit(X, y, max_iter=1, shuffle="blocks")
    gs.fit(X, y, max_iter=1, shuffle="rows")  # the default is fine full batch
