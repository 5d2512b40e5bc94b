"""GDClassifier on SciPy sparse X: the same model as on the dense matrix, with no dense copy and
no copy of a CSR (other formats converted once)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

import gradstep.estimator as est
from gradstep import GDClassifier, driver


@pytest.fixture(scope="module")
def data():
    """A sparse, well-conditioned problem with four classes (labels % 2 gives a binary one)."""
    rng = np.random.default_rng(0)
    X = sp.random(300, 20, density=0.3, random_state=0, format="csr")
    w = rng.standard_normal((20, 4))
    y = np.argmax(X @ w + rng.standard_normal((300, 4)), axis=1)
    return X, y


def _no_densify(monkeypatch):
    """Any dense copy of a sparse matrix (toarray/todense) fails the test."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("X was densified")

    for cls in (sp.csr_matrix, sp.csr_array):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)


def _reference_driver(monkeypatch):
    """Dense fits of one lbfgs run take the compiled loop (driver.CompiledCurvatureDriver), CSR
    fits the reference driver; at tol=1e-14 the two trajectories part at rounding level and
    either may stop by the stall rule (|grad| <= 1e3 tol), up to ~4e-10 apart. These tests
    compare the data paths, so both sides run the reference driver."""
    monkeypatch.setattr(driver, "_compiled_curvature", lambda *args: False)


def _same(dense, sparse, X_dense, X_sparse, atol=1e-10):
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=0, atol=atol)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=0, atol=atol)
    np.testing.assert_allclose(sparse.decision_function(X_sparse),
                               dense.decision_function(X_dense), rtol=0, atol=1e-9)
    np.testing.assert_allclose(sparse.predict_proba(X_sparse), dense.predict_proba(X_dense),
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(sparse.predict(X_sparse), dense.predict(X_dense))


@pytest.mark.parametrize("problem", ["binary", "ovr", "multinomial"])
@pytest.mark.parametrize("container", [sp.csr_matrix, sp.csr_array])
def test_csr_fits_the_dense_model_without_copies(data, problem, container, monkeypatch):
    X, labels = data
    y = labels % 2 if problem == "binary" else labels
    multi_class = "ovr" if problem == "ovr" else "auto"
    # tol 1e-14: fits stopped at |grad| <= 1e-12 may differ by ~3e-10 in the multinomial case
    # (see test_float32_data_and_int64_indices), more than _same's atol
    _reference_driver(monkeypatch)
    dense = GDClassifier(multi_class=multi_class, tol=1e-14).fit(X.toarray(), y)
    Xs = container(X)
    before = (Xs.data.copy(), Xs.indices.copy(), Xs.indptr.copy())
    seen = []
    real = est.fit

    def spying(*args, **kwargs):
        first = args[0]
        seen.append(getattr(first, "X", first))  # the multinomial CSR path hands an oracle
        return real(*args, **kwargs)

    monkeypatch.setattr(est, "fit", spying)
    _no_densify(monkeypatch)
    sparse = GDClassifier(multi_class=multi_class, tol=1e-14).fit(Xs, y)
    assert seen and all(x is Xs for x in seen)  # the user's CSR itself: no copy
    for kept, now in zip(before, (Xs.data, Xs.indices, Xs.indptr)):
        np.testing.assert_array_equal(now, kept)  # and never modified
    monkeypatch.undo()  # the dense reference predictions below may densify freely
    _same(dense, sparse, X.toarray(), Xs)
    np.testing.assert_allclose(sparse.predict_log_proba(Xs), np.log(sparse.predict_proba(Xs)))


@pytest.mark.parametrize("problem", ["binary", "multinomial"])
def test_float32_data_and_int64_indices(data, problem):
    X, labels = data
    y = labels % 2 if problem == "binary" else labels
    X32 = X.astype(np.float32)
    wide = sp.csr_array((X32.data, X32.indices.astype(np.int64), X32.indptr.astype(np.int64)),
                        shape=X32.shape)
    assert wide.indices.dtype == np.int64
    dense = GDClassifier(tol=1e-12).fit(X32.toarray(), y)
    sparse = GDClassifier(tol=1e-12).fit(wide, y)
    # Two fits stopped at |grad| <= 1e-12 from different roundings (dense and CSR products) may
    # differ by about |grad| / (smallest curvature). The softmax loss is flat along W + c (the same
    # vector added to every class), where only the penalty (alpha = 1 / 300) curves it: 3e-10.
    _same(dense, sparse, X32.toarray(), wide, atol=1e-10 if problem == "binary" else 1e-9)
    assert sparse.decision_function(wide).dtype == np.float64


@pytest.mark.parametrize("fmt", ["csc", "coo", "lil"])
def test_other_formats_are_converted_once(data, fmt, monkeypatch):
    X, labels = data
    _reference_driver(monkeypatch)
    dense = GDClassifier(tol=1e-14).fit(X.toarray(), labels)  # tol: as in the test above
    other = X.asformat(fmt)
    sparse = GDClassifier(tol=1e-14).fit(other, labels)
    _same(dense, sparse, X.toarray(), other)


def test_sample_weight_class_weight_and_mini_batches(data):
    X, labels = data
    sw = np.random.default_rng(1).uniform(0.5, 2.0, X.shape[0])
    kwargs = dict(class_weight="balanced", tol=1e-12, multi_class="ovr")
    dense = GDClassifier(**kwargs).fit(X.toarray(), labels, sample_weight=sw)
    sparse = GDClassifier(**kwargs).fit(X, labels, sample_weight=sw)
    _same(dense, sparse, X.toarray(), X)
    # mini-batches gathered from CSR rows follow the same seeded order as dense ones
    mini = dict(rule="adam", lr=0.05, batch_size=32, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = GDClassifier(**mini).fit(X.toarray(), labels)
        sparse = GDClassifier(**mini).fit(X, labels)
    _same(dense, sparse, X.toarray(), X)


@pytest.mark.parametrize("multi_class", ["ovr", "multinomial"])
def test_partial_fit_on_csr(data, multi_class):
    X, labels = data
    dense = GDClassifier(rule="adam", lr=0.05, multi_class=multi_class)
    sparse = GDClassifier(rule="adam", lr=0.05, multi_class=multi_class)
    for _ in range(3):
        dense.partial_fit(X.toarray(), labels, classes=np.arange(4))
        sparse.partial_fit(X, labels, classes=np.arange(4))
    _same(dense, sparse, X.toarray(), X, atol=1e-12)


def test_lr_auto_on_sparse_multinomial(data):
    """lr="auto" bounds the softmax curvature from the CSR kernels (no dense copy)."""
    X, labels = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = GDClassifier(rule="sgd", lr="auto", max_iter=20).fit(X.toarray(), labels)
        sparse = GDClassifier(rule="sgd", lr="auto", max_iter=20).fit(X, labels)
    _same(dense, sparse, X.toarray(), X, atol=1e-9)


def test_sparse_tag():
    assert GDClassifier().__sklearn_tags__().input_tags.sparse is True
