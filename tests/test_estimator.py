"""GDClassifier: scikit-learn's estimator contract, multiclass, warnings, pipelines, accuracy."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gradstep import GDClassifier, GDClassifierCV


def _expected_failed_checks(estimator):
    """No check fails for the default (full-batch) estimator; with mini-batches one does."""
    if getattr(estimator, "batch_size", None) is None:
        return {}
    why = ("mini-batches: a repeated row lands in different batches than one row with a "
           "doubled weight, so the two paths differ (as for SGDClassifier)")
    return {"check_sample_weight_equivalence_on_dense_data": why,
            "check_sample_weight_equivalence_on_sparse_data": why}


# ConvergenceWarning is allowed: several checks fit tiny or unscaled problems with a capped
# max_iter, where stopping at max_iter is the right answer. The mini-batch variant runs with
# tol=None (no early stop), as scikit-learn runs SGDClassifier's checks with a longer patience:
# a noisy epoch loss otherwise stops it before extreme class weights have moved the intercept.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    [GDClassifier(), GDClassifier(rule="sgd", lr="auto", batch_size=16, tol=None),
     GDClassifierCV(Cs=3, cv=3)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def binary_data():
    X, y = make_classification(n_samples=400, n_features=6, n_informative=4, random_state=0)
    return StandardScaler().fit_transform(X), y


def test_binary_attributes_and_probabilities(binary_data):
    X, y = binary_data
    labels = np.where(y == 1, "spam", "ham")
    clf = GDClassifier(rule="sgd", lr="auto", C=np.inf, max_iter=3000, tol=1e-8).fit(X, labels)
    assert clf.classes_.tolist() == ["ham", "spam"]
    assert clf.coef_.shape == (1, 6) and clf.intercept_.shape == (1,)
    assert clf.n_features_in_ == 6
    assert clf.loss_curve_.shape == (clf.n_iter_[0] + 1,)
    assert clf.status_ == "converged"
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    z = X @ clf.coef_[0] + clf.intercept_[0]
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert set(clf.predict(X)) <= {"ham", "spam"}
    # The optimum of the unregularized problem, found independently by scikit-learn.
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(clf.coef_, ref.coef_, rtol=1e-4, atol=1e-5)


def test_C_is_logistic_regression_strength(binary_data):
    X, y = binary_data
    clf = GDClassifier(rule="sgd", lr="auto", C=0.5, max_iter=5000, tol=1e-10).fit(X, y)
    ref = LogisticRegression(C=0.5, tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(clf.coef_, ref.coef_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(clf.intercept_, ref.intercept_, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="alpha.*C"):
        GDClassifier(alpha=0.1, C=0.5).fit(X, y)


def test_multiclass_is_one_batched_call(monkeypatch):
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X[:300])
    y = y[:300]
    calls = []
    import gradstep.estimator as est

    real = est.fit

    def counting(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(est, "fit", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = GDClassifier(rule="adam", max_iter=50, multi_class="ovr").fit(X, y)
    assert calls == [(300, 10)]  # one engine call, one 0/1 column per class
    assert clf.coef_.shape == (10, 64)
    assert clf.loss_curve_.shape[0] == 10
    # Each class's run equals a binary fit of that class against the rest.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = GDClassifier(rule="adam", max_iter=50).fit(X, (y == 3).astype(int))
    np.testing.assert_allclose(clf.coef_[3], one.coef_[0], rtol=1e-9, atol=1e-12)


def test_digits_accuracy_close_to_logistic_regression():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    reference = LogisticRegression(max_iter=5000).fit(X_train, y_train).score(X_test, y_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GDClassifier(rule="adam", lr=0.03, C=1.0).fit(X_train, y_train).score(X_test,
                                                                                  y_test)
    assert ours >= reference - 0.01


@pytest.mark.parametrize("load", [load_iris, load_wine, load_breast_cancer, load_digits])
def test_defaults_converge_quietly_and_match_scikit_learn(load):
    """GDClassifier() (L-BFGS, C=1) converges without a warning on the classic data sets and
    scores within 0.5 points of the same model fitted by scikit-learn: LogisticRegression(C=1)
    (multinomial for several classes), and one-vs-rest with multi_class="ovr"."""
    X, y = load(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = GDClassifier().fit(X_train, y_train)
        ovr = GDClassifier(multi_class="ovr").fit(X_train, y_train)
    assert np.all(np.asarray(ours.status_) == "converged")
    same = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)
    reference = same.fit(X_train, y_train).score(X_test, y_test)
    assert abs(ours.score(X_test, y_test) - reference) <= 0.005
    same_ovr = OneVsRestClassifier(LogisticRegression(C=1.0, tol=1e-10, max_iter=10000))
    reference_ovr = same_ovr.fit(X_train, y_train).score(X_test, y_test)
    assert abs(ovr.score(X_test, y_test) - reference_ovr) <= 0.005


def test_max_iter_warns_with_advice(binary_data):
    X, y = binary_data
    pattern = r"rule 'sgd' with lr=0.001.*max_iter=5.*'lbfgs'.*smaller C.*lr='auto'"
    with pytest.warns(ConvergenceWarning, match=pattern) as record:
        GDClassifier(rule="sgd", lr=0.001, max_iter=5).fit(X, y)
    assert record[0].filename == __file__  # the warning points at the caller's line


def test_divergence_raises_with_advice(binary_data):
    X, y = binary_data
    with pytest.raises(ValueError, match=r"rule 'sgd' with lr=1e\+06.*iteration \d+.*smaller lr"):
        GDClassifier(rule="sgd", lr=1e6, alpha=10.0, max_iter=3000).fit(X, y)


def test_pipeline_gridsearch_and_pickle(binary_data):
    X, y = binary_data
    pipe = make_pipeline(StandardScaler(), GDClassifier(rule="sgd", lr="auto", max_iter=300))
    search = GridSearchCV(pipe, {"gdclassifier__alpha": [1e-3, 1e-1]}, cv=3).fit(X, y)
    baseline = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression()), X, y, cv=3)
    assert search.best_score_ >= baseline.mean() - 0.02
    model = search.best_estimator_
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict_proba(X), model.predict_proba(X))


def test_dataframe_feature_names(binary_data):
    pd = pytest.importorskip("pandas")
    X, y = binary_data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = GDClassifier(rule="sgd", lr="auto", max_iter=200).fit(frame, y)
    assert clf.feature_names_in_.tolist() == list(frame.columns)


def test_partial_fit_keeps_rule_state(binary_data):
    X, y = binary_data
    # Two partial_fit epochs of Adam equal a two-iteration full-batch fit: the moments carry over.
    inc = GDClassifier(rule="adam", lr=0.05)
    inc.partial_fit(X, y, classes=[0, 1])
    inc.partial_fit(X, y)
    with pytest.warns(ConvergenceWarning):
        full = GDClassifier(rule="adam", lr=0.05, max_iter=2).fit(X, y)
    np.testing.assert_allclose(inc.coef_, full.coef_, rtol=1e-12)
    assert inc.n_iter_.tolist() == [2]
    assert inc.loss_curve_.shape == (2,)
    with pytest.raises(ValueError, match="classes"):
        GDClassifier().partial_fit(X, y)


def test_warm_start_continues(binary_data):
    X, y = binary_data
    with pytest.warns(ConvergenceWarning):
        clf = GDClassifier(rule="sgd", lr=0.5, max_iter=10, warm_start=True).fit(X, y)
    first_loss = clf.loss_curve_[-1]
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    assert clf.loss_curve_[0] == pytest.approx(first_loss, rel=1e-12)


def test_verbose_progress_bar(binary_data, capsys):
    X, y = binary_data
    GDClassifier(rule="sgd", lr="auto", max_iter=200, verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "GDClassifier(sgd)" in err and "/200" in err and "#" in err


def test_keyboard_interrupt_stops_cleanly(binary_data, monkeypatch):
    X, y = binary_data
    import gradstep.estimator as est

    seen = []

    class Interrupting(est.ProgressBar):
        def __call__(self, progress):
            seen.append(int(progress.iteration.max()))
            raise KeyboardInterrupt

    monkeypatch.setattr(est, "ProgressBar", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        GDClassifier(rule="sgd", lr=0.01, max_iter=10**7, tol=0, verbose=1).fit(X, y)
    # the compiled loop returned after its first ~0.1 s chunk and the fit stopped there
    assert len(seen) == 1 and 0 < seen[0] < 10**7


# ---- the penalty's spelling: l1_ratio and penalty --------------------------------------------


def _kkt_violation(X, y01, coef, intercept, alpha, l1_ratio):
    """The largest violation of the optimality conditions of the mean loss plus
    alpha (l1_ratio ||w||_1 + (1 - l1_ratio)/2 ||w||^2): the smooth gradient plus
    alpha l1_ratio sign(w_j) is 0 where w_j != 0, at most alpha l1_ratio in size where
    w_j = 0; the intercept's gradient is 0."""
    import gradstep as gs

    _, g, g0 = gs.loss_and_grad(X, y01, coef, intercept, alpha=alpha * (1 - l1_ratio))
    bound = alpha * l1_ratio
    nonzero = coef != 0
    worst = np.abs(g[nonzero] + bound * np.sign(coef[nonzero]))
    slack = np.maximum(np.abs(g[~nonzero]) - bound, 0.0)
    return max(worst.max(initial=0.0), slack.max(initial=0.0), abs(g0))


@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_l1_ratio_is_scikit_learns_elastic_net(l1_ratio):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    C = 0.1
    clf = GDClassifier(l1_ratio=l1_ratio, C=C, tol=1e-10).fit(X, y)
    assert clf.status_ == "converged"
    assert (clf.coef_ == 0).sum() >= 10  # exact zeros, not merely small weights
    alpha = 1.0 / (C * len(y))  # scikit-learn's objective divided by C * sum(s)
    assert _kkt_violation(X, y, clf.coef_[0], clf.intercept_[0], alpha, l1_ratio) < 1e-8
    # the old spelling gives the same model
    old = "l1" if l1_ratio == 1.0 else "elasticnet"
    same = GDClassifier(penalty=old, l1_ratio=l1_ratio if old == "elasticnet" else 0.0,
                        C=C, tol=1e-10).fit(X, y)
    np.testing.assert_array_equal(same.coef_, clf.coef_)


def test_l1_one_vs_rest_on_csr_and_multinomial():
    import scipy.sparse as sp

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ovr = GDClassifier(l1_ratio=1.0, C=0.05, tol=1e-10, multi_class="ovr")
    dense = ovr.fit(X, y).coef_.copy()
    sparse = ovr.fit(sp.csr_array(X), y).coef_
    np.testing.assert_allclose(sparse, dense, atol=1e-9)
    alpha = 1.0 / (0.05 * len(y))
    for k in range(3):
        assert _kkt_violation(X, (y == k) * 1, ovr.coef_[k], ovr.intercept_[k], alpha,
                              1.0) < 1e-8
    multinomial = GDClassifier(l1_ratio=1.0, C=0.05, tol=1e-10).fit(X, y)
    assert (multinomial.coef_ == 0).any() and multinomial.status_ == "converged"
    # the multinomial L1 fit on CSR is the dense one (gs.fit takes CSR with loss="multinomial")
    on_csr = GDClassifier(l1_ratio=1.0, C=0.05, tol=1e-10).fit(sp.csr_array(X), y)
    np.testing.assert_allclose(on_csr.coef_, multinomial.coef_, atol=1e-8)
    np.testing.assert_array_equal(on_csr.coef_ == 0, multinomial.coef_ == 0)


def test_penalty_none_and_contradictions(binary_data):
    X, y = binary_data
    none = GDClassifier(penalty=None, C=0.01, tol=1e-10).fit(X, y)
    unpenalized = GDClassifier(C=np.inf, tol=1e-10).fit(X, y)
    np.testing.assert_array_equal(none.coef_, unpenalized.coef_)
    l2 = GDClassifier(penalty="l2", C=0.5, tol=1e-10).fit(X, y)
    np.testing.assert_array_equal(l2.coef_, GDClassifier(C=0.5, tol=1e-10).fit(X, y).coef_)
    for params, match in ((dict(penalty="l2", l1_ratio=0.5), "penalty='l2'.*l1_ratio"),
                          (dict(penalty="ridge"), "penalty"),
                          (dict(l1_ratio=1.5), "l1_ratio"),
                          (dict(l1_ratio=[0.0, 1.0]), "l1_ratio")):
        with pytest.raises(ValueError, match=match):
            GDClassifier(**params).fit(X, y)


def test_cv_with_l1_scores_separate_fits():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    from sklearn.model_selection import StratifiedKFold

    from gradstep import GDClassifierCV

    cv = GDClassifierCV(Cs=[0.05, 0.5], cv=3, l1_ratio=1.0, tol=1e-10,
                        scoring="neg_log_loss").fit(X, y)
    train, test = next(iter(StratifiedKFold(3).split(X, y)))
    one = GDClassifier(C=0.5, l1_ratio=1.0, tol=1e-10).fit(X[train], y[train])
    np.testing.assert_allclose(cv.coefs_paths_[1][0, 1, :-1], one.coef_[0], atol=1e-7)
    assert (cv.coef_ == 0).any()
