"""The first-order step rules, compiled for the Numba backend's fit loops: one function per rule,
named after it (``_step_<name>``), next to each other, and ``RULE_CODES``, the rules this backend
compiles with their codes (the same as each rule class's ``code`` in ``gradstep.rules``).

Each function is the rule's ``update`` (gradstep/rules/first_order.py) element by element, with
the same operations in the same order, so a fit gives the same bits as the NumPy driver's step.
Each takes (hyper row, lr_t, t, g, p, slots) and updates p (D,) and slots (N_SLOTS, D) in place;
t is the update counter, already incremented.

Adding a first-order rule on the numba side: its ``_step_<name>`` here, its code in RULE_CODES and
one branch in ``_step``. Nothing else: numba.py notices that this file changed and drops the fit
loops it cached from the old one (numba's cache only watches the file a function is defined in).
"""

from __future__ import annotations

import math

import numba

from ..rules.base import HYPER_A, HYPER_B, HYPER_EPS

JIT = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": False}  # numba.py too

# The rules this backend compiles: {name: code}; _step dispatches on the code.
RULE_CODES = {
    "sgd": 0,
    "momentum": 1,
    "nesterov": 2,
    "normalized": 3,
    "adagrad": 4,
    "rmsprop": 5,
    "adadelta": 6,
    "adam": 7,
}


@numba.njit(**JIT)
def _norm(v):
    """The Euclidean norm of v, summed in index order."""
    sq = 0.0
    for j in range(v.size):
        sq += v[j] * v[j]
    return math.sqrt(sq)


@numba.njit(**JIT)
def _step_sgd(h, lr, t, g, p, slots):
    """p -= lr g."""
    for j in range(p.size):
        p[j] -= lr * g[j]


@numba.njit(**JIT)
def _step_momentum(h, lr, t, g, p, slots):
    """v = mu v + g; p -= lr v."""
    a, v = h[HYPER_A], slots[0]
    for j in range(p.size):
        v[j] = a * v[j] + g[j]
        p[j] -= lr * v[j]


@numba.njit(**JIT)
def _step_nesterov(h, lr, t, g, p, slots):
    """v = mu v + g; p -= lr (g + mu v)."""
    a, v = h[HYPER_A], slots[0]
    for j in range(p.size):
        v[j] = a * v[j] + g[j]
        p[j] -= lr * (g[j] + a * v[j])


@numba.njit(**JIT)
def _step_normalized(h, lr, t, g, p, slots):
    """p -= lr g / max(||g||, eps); no step when g == 0."""
    norm = _norm(g)
    if norm > 0.0:
        den = max(norm, h[HYPER_EPS])
        for j in range(p.size):
            p[j] -= lr * g[j] / den


@numba.njit(**JIT)
def _step_adagrad(h, lr, t, g, p, slots):
    """G += g^2; p -= lr g / (sqrt(G) + eps)."""
    eps, G = h[HYPER_EPS], slots[0]
    for j in range(p.size):
        G[j] += g[j] * g[j]
        p[j] -= lr * g[j] / (math.sqrt(G[j]) + eps)


@numba.njit(**JIT)
def _step_rmsprop(h, lr, t, g, p, slots):
    """v = rho v + (1 - rho) g^2; p -= lr g / (sqrt(v) + eps)."""
    a, eps, v = h[HYPER_A], h[HYPER_EPS], slots[0]
    for j in range(p.size):
        v[j] = a * v[j] + (1.0 - a) * g[j] * g[j]
        p[j] -= lr * g[j] / (math.sqrt(v[j]) + eps)


@numba.njit(**JIT)
def _step_adadelta(h, lr, t, g, p, slots):
    """E = rho E + (1-rho) g^2; d = sqrt(D+eps) / sqrt(E+eps) g; D = rho D + (1-rho) d^2;
    p -= lr d."""
    a, eps, E, D = h[HYPER_A], h[HYPER_EPS], slots[0], slots[1]
    for j in range(p.size):
        E[j] = a * E[j] + (1.0 - a) * g[j] * g[j]
        delta = math.sqrt(D[j] + eps) / math.sqrt(E[j] + eps) * g[j]
        D[j] = a * D[j] + (1.0 - a) * delta * delta
        p[j] -= lr * delta


@numba.njit(**JIT)
def _step_adam(h, lr, t, g, p, slots):
    """m, v moments; p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""
    a, b, eps, m, v = h[HYPER_A], h[HYPER_B], h[HYPER_EPS], slots[0], slots[1]
    bias_a = 1.0 - a ** float(t)
    bias_b = 1.0 - b ** float(t)
    for j in range(p.size):
        m[j] = a * m[j] + (1.0 - a) * g[j]
        v[j] = b * v[j] + (1.0 - b) * g[j] * g[j]
        p[j] -= lr * (m[j] / bias_a) / (math.sqrt(v[j] / bias_b) + eps)


@numba.njit(**JIT)
def _step(rule, h, lr, t, g, p, slots):
    """The step of rule code ``rule`` (RULE_CODES)."""
    if rule == 0:
        _step_sgd(h, lr, t, g, p, slots)
    elif rule == 1:
        _step_momentum(h, lr, t, g, p, slots)
    elif rule == 2:
        _step_nesterov(h, lr, t, g, p, slots)
    elif rule == 3:
        _step_normalized(h, lr, t, g, p, slots)
    elif rule == 4:
        _step_adagrad(h, lr, t, g, p, slots)
    elif rule == 5:
        _step_rmsprop(h, lr, t, g, p, slots)
    elif rule == 6:
        _step_adadelta(h, lr, t, g, p, slots)
    elif rule == 7:
        _step_adam(h, lr, t, g, p, slots)
    else:
        raise ValueError("unknown rule code")
