"""Plain NumPy: the specification of the multinomial (softmax) kernels.

The contract (K runs, C classes, d features, D = C * (d + 1) parameters per run: class c's
weights at P[k, c*(d+1) : c*(d+1)+d] and its intercept at P[k, c*(d+1)+d]):

``loss_grad(X, labels, SW, P, alpha, rows, active, n_threads, denominator)``
    X (n, d) float32/float64; labels (n,) int64 in [0, C); SW (n, Ks), alpha (K,), rows,
    active and denominator as in state.py. Per row and run: z_c = x . w_c + b_c,
    loss += s (logsumexp(z) - z_y), and the gradient += s (softmax(z)_c - [c == y]) (x, 1) for
    every class, divided by the run's weight sum; + (alpha/2) ||W||^2 and alpha W. Both terms
    come from ``softmax_link``, without cancellation.
``hessp(X, SW, P, V, alpha, active, n_threads)``
    With u_c = x . v_c + v_cb and p = softmax(z): += s p_c (u_c - sum_c' p_c' u_c') (x, 1),
    divided by the weight sum; + alpha V_w.
"""

from __future__ import annotations

import numpy as np

from .reference import _weights


def _split(P: np.ndarray, k: int, n_classes: int):
    """(W (C, d), b (C,)) of run k."""
    A = P[k].reshape(n_classes, -1)
    return A[:, :-1], A[:, -1]


def pivots(Z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Per row the class every score is measured from: the leader (the first largest score, the
    first NaN if any, as argmax), or the label when it ties for the lead."""
    rows = np.arange(Z.shape[0])
    lead = Z.argmax(axis=1)
    if labels is None:
        return lead
    return np.where(Z[rows, labels] >= Z[rows, lead], labels, lead)


def softmax_from(Z: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(softmax(Z) (m, C), T (m,)) with T = sum_{c != j} exp(z_c - z_j) for the pivot j of each
    row (a leader: every exponent <= 0, no overflow): p_c = exp(z_c - z_j) / (1 + T) and
    p_j = 1 / (1 + T). T is kept apart from the 1 so that log1p(T) and T / (1 + T) keep its
    relative accuracy however small it is."""
    rows = np.arange(Z.shape[0])
    E = np.exp(Z - Z[rows, j][:, None])
    E[rows, j] = 0.0  # T sums the other classes only (adding this 0 is exact)
    T = E.sum(axis=1)
    S = 1.0 + T
    prob = E / S[:, None]
    prob[rows, j] = 1.0 / S
    return prob, T


def softmax_link(Z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """(loss (m,), residual (m, C), softmax (m, C)) per row, for integer labels y:

        loss     = logsumexp(z) - z_y = (z_j - z_y) + log1p(T)
        residual = softmax(z) - onehot(y), the label's entry -T / (1 + T) when j = y

    with j the pivot (the label when it leads: z_j - z_y = 0 exactly) and T of ``softmax_from``.
    Written as logsumexp(z) - z_y, a confident row's loss is a difference of two large numbers
    (at z_y - max_{c != y} z_c = 40 it came out 0 instead of (C - 1) exp(-40)), and p_y - 1 is 0
    from a lead of 37 on; -T / (1 + T) is -sum_{c != y} p_c, without the subtraction. When the
    label does not lead, p_y <= 1/2 and p_y - 1 loses nothing, and (z_j - z_y) + log1p(T) adds
    two non-negative terms. Every kernel computes these operations in this order."""
    rows = np.arange(Z.shape[0])
    j = pivots(Z, labels)
    prob, T = softmax_from(Z, j)
    loss = (Z[rows, j] - Z[rows, labels]) + np.log1p(T)
    residual = prob.copy()
    py = prob[rows, labels]
    residual[rows, labels] = np.where(j == labels, -T / (1.0 + T), py - 1.0)
    return loss, residual, prob


def loss_grad(X, labels, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              n_classes):
    n_runs, n_params = P.shape
    loss = np.zeros(n_runs)
    grad = np.zeros((n_runs, n_params))
    if rows.size:
        X, labels, SW = X[rows], labels[rows], SW[rows]
    m = X.shape[0]
    Xf = X.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in np.flatnonzero(active):
            s = _weights(SW, k, m)
            total = s.sum()
            if denominator is not None and np.size(denominator):
                total = float(denominator[k])
            if m == 0 or total == 0.0:
                continue
            W, b = _split(P, k, n_classes)
            Z = Xf @ W.T + b
            loss_rows, residual, _ = softmax_link(Z, labels)
            loss[k] = (s * loss_rows).sum() / total
            R = s[:, None] * residual / total  # (m, C)
            G = np.column_stack([R.T @ Xf, R.sum(axis=0)])  # (C, d + 1)
            if alpha[k] != 0.0:
                loss[k] += 0.5 * alpha[k] * (W * W).sum()
                G[:, :-1] += alpha[k] * W
            grad[k] = G.reshape(-1)
    return loss, grad


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes):
    n_runs, n_params = P.shape
    out = np.zeros((n_runs, n_params))
    m = X.shape[0]
    Xf = X.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in np.flatnonzero(active):
            s = _weights(SW, k, m)
            total = s.sum()
            if m == 0 or total == 0.0:
                continue
            W, b = _split(P, k, n_classes)
            Vw, vb = _split(V, k, n_classes)
            Z = Xf @ W.T + b
            prob, _ = softmax_from(Z, pivots(Z))
            U = Xf @ Vw.T + vb  # (m, C)
            T = s[:, None] * prob * (U - (prob * U).sum(axis=1, keepdims=True)) / total
            H = np.column_stack([T.T @ Xf + alpha[k] * Vw, T.sum(axis=0)])
            out[k] = H.reshape(-1)
    return out
