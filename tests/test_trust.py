"""Trustworthy: fork() while the engine is in use (the C++ thread pool, Numba's OpenMP layer),
divergence in every driver, the loss and residual without cancellation, Ctrl-C on small
problems.

The fork and Ctrl-C tests run their scenario in a fresh interpreter (subprocess): a hang or a
killed child then fails the test instead of the test session, and no thread of the session is
forked.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gradstep as gs
from conftest import ALL_BACKENDS, make_data
from gradstep import _backends

try:
    from gradstep import _core
    CPP_KERNELS = _core.kernels()
except ImportError:  # pragma: no cover - the core is not built
    _core, CPP_KERNELS = None, []

HAS_FORK = hasattr(os, "fork")
needs_fork = pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _require(name: str) -> None:
    avail = gs.backends()
    if not avail[name]:
        pytest.skip(f"backend {name!r} is not available: {avail['why'].get(name, '?')}")


def _python(script: str, timeout: float, *args: str) -> subprocess.CompletedProcess:
    """Runs script in a fresh interpreter; its last stdout line is a JSON report."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _report(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- 1. fork() while other threads use the C++ thread pool ---------------------------------

# One pass of the core's gradient through the thread pool, shared by the parent's load threads and
# the children: 12000 x 20, just above the work below which a pass stays on the calling thread
# (logistic.hpp kMinParallelWork = 2e5 rows x parameters x runs), so that the load threads enter
# ThreadPool::instance() as often as they can (a fork catching one inside it hung the child). The
# core (sys.argv[1]) is loaded alone, without the gradstep package and what it imports (SciPy,
# scikit-learn): fork() copies the address space's page tables, and a small one forks faster.
_POOL_PASS = """
import importlib.util, json, os, signal, sys, threading, time
import numpy as np
spec = importlib.util.spec_from_file_location("gradstep._core", sys.argv[1])
_core = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_core)
rng = np.random.default_rng(0)
X = rng.standard_normal((12000, 20))
Y = (rng.random((12000, 1)) < 0.5).astype(np.float64)
SW, P, ALPHA = np.empty((12000, 0)), np.zeros((1, 21)), np.zeros(1)
ROWS, ACTIVE, DEN = np.empty(0, np.int64), np.ones(1, np.uint8), np.empty(0)

def pool_pass():
    _core.loss_grad_float64(X, Y, SW, P, ALPHA, ROWS, ACTIVE, 2, DEN)

def child(timeout):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            pool_pass()  # ThreadPool::instance(), then a fresh pool of the child's own
            code = 0
        finally:
            os._exit(code)
    return pid, time.monotonic() + timeout
"""

_FORK_STRESS = _POOL_PASS + """
N_FORKS, IN_FLIGHT, TIMEOUT = {n_forks}, 4, 10.0
stop = threading.Event()

def load():
    while not stop.is_set():
        pool_pass()

threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
for t in threads:
    t.start()
hangs = failures = 0
children = {{}}

def reap():
    global hangs, failures
    for pid, deadline in list(children.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            failures += status != 0
            del children[pid]
        elif time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            hangs += 1
            del children[pid]

began = time.perf_counter()
for _ in range(N_FORKS):
    while len(children) >= IN_FLIGHT:
        reap()
        time.sleep(0.0002)
    pid, deadline = child(TIMEOUT)
    children[pid] = deadline
while children:
    reap()
    time.sleep(0.0002)
stop.set()
for t in threads:
    t.join()
print(json.dumps({{"hangs": hangs, "failures": failures,
                   "seconds": time.perf_counter() - began}}))
"""


@needs_fork
def test_fork_while_threads_use_the_pool():
    """Three threads run passes through the pool in a loop while the main thread forks 2000
    times; each child runs a pass of its own. A thread inside ThreadPool::instance() at fork
    time left its lock held in the child, which blocked for ever: 1 to 4 children in 1000
    here before the fix (test_fork_while_the_pool_lock_is_held makes it certain)."""
    _require("cpp")
    proc = _python(_FORK_STRESS.format(n_forks=2000), 300, _core.__file__)
    report = _report(proc)
    assert report["hangs"] == 0 and report["failures"] == 0, report


_HANDOFF_STRESS = """
import json, sys, threading
import numpy as np
import gradstep as gs
rng = np.random.default_rng(3)
X = rng.standard_normal((3000, 60))
y = (X[:, 0] + rng.standard_normal(3000) > 0).astype(float)
A = rng.standard_normal((12000, 20))
b = (rng.random(12000) < 0.5).astype(float)
w = rng.standard_normal(20)

def fit(n_threads):
    return gs.fit(X, y, "adam", lr=0.01, batch_size=256, max_iter=2, tol=None, random_state=0,
                  history=False, n_threads=n_threads, backend="cpp").coef

fit_ref = fit(1)
pass_ref = gs.loss_and_grad(A, b, w, 0.0, n_threads=1, backend="cpp")[1]
wrong = []

def load(seed):
    for k in range(60):
        if not np.array_equal(fit(2 + (seed + k) % 2), fit_ref):
            wrong.append("fit")
        for _ in range(20):
            g = gs.loss_and_grad(A, b, w, 0.0, n_threads=2, backend="cpp")[1]
            if not np.array_equal(g, pass_ref):
                wrong.append("pass")

threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"wrong": wrong}))
"""


def test_pool_hand_off_under_concurrent_callers():
    """Three Python threads run mini-batch fits (hundreds of back-to-back 256-row jobs each) and
    full passes through the C++ pool at once: a job is handed to the spinning workers with
    atomics only (thread_pool.hpp), so a lost wake-up would hang here (the subprocess's timeout)
    and a worker pairing one job's ticket with another's tasks would change the bits."""
    _require("cpp")
    report = _report(_python(_HANDOFF_STRESS, 300))
    assert report["wrong"] == [], report


@needs_fork
def test_fork_while_the_pool_lock_is_held():
    """The same race made certain: a thread holds instance()'s lock across the fork; the fork
    waits for it, and the child gets a lock that is free."""
    _require("cpp")
    script = _POOL_PASS + """
holder = threading.Thread(target=_core._hold_pool_lock, args=(0.5,))
holder.start()
time.sleep(0.1)
pid, deadline = child(10.0)
status = None
while time.monotonic() < deadline:
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
        break
    time.sleep(0.001)
if status is None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
holder.join()
print(json.dumps({"status": status}))
"""
    assert _report(_python(script, 60, _core.__file__))["status"] == 0


# ---- 2. fork() after Numba's threading layer is launched --------------------------------------

_NUMBA_FORK = """
import json, multiprocessing
import numpy as np
import gradstep as gs

rng = np.random.default_rng(0)
X = rng.standard_normal((20000, 20))
y = (X[:, 0] + rng.standard_normal(20000) > 0).astype(np.int64)

def fit(_):
    res = gs.fit(X, y, "adam", lr=0.01, max_iter=5, n_threads=2, backend="numba",
                 history=False)
    return res.coef.tolist(), float(res.intercept)

if __name__ == "__main__":
    import numba
    parent = fit(0)  # a parallel pass: numba's threading layer is launched in this process
    layer = numba.threading_layer()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map_async(fit, range(2)).get(timeout=120)
    print(json.dumps({"layer": layer, "same": all(tuple(c) == parent for c in children)}))
"""


@needs_fork
def test_numba_fit_in_a_forked_child():
    """A numba fit in a multiprocessing.Pool (fork) worker after a numba fit in the parent: with
    GNU OpenMP as numba's threading layer the worker used to die ("Terminating: fork() called
    from a process already using GNU OpenMP") and the pool to wait for ever. The children run
    serially and give the parent's bits."""
    _require("numba")
    report = _report(_python(_NUMBA_FORK, 600))
    assert report["same"], report


# ---- 3. divergence -----------------------------------------------------------------------------


def _fit_diverging(backend, X, y, **kw):
    with pytest.warns(gs.DivergenceWarning):
        return gs.fit(X, y, "sgd", backend=backend, **kw)


@pytest.mark.parametrize("batch_size", [None, 16])
def test_huge_rate_diverges(backend, batch_size):
    """lr = 1e300: the first step takes the weights to ~1e300 (finite, loss ~1e297); it used to
    end "max_iter" (full batch) or "converged" (mini-batch) with those weights."""
    X, y = make_data(n=300, d=5, seed=0)
    res = _fit_diverging(backend, X, y, lr=1e300, batch_size=batch_size, random_state=0)
    assert res.status == "diverged"
    np.testing.assert_array_equal(res.coef, 0.0)  # the last good weights: the start
    assert res.intercept == 0.0
    assert res.loss == pytest.approx(np.log(2.0), rel=1e-12)


@pytest.mark.parametrize("batch_size", [None, 16])
def test_huge_rate_on_separable_data_diverges(backend, batch_size):
    """Separable data: the loss at weights of 1e300 is 0, so only the weight norm tells; it used
    to end "converged" with loss 0 and weights of 1e300."""
    X, _ = make_data(n=300, d=5, seed=1)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    res = _fit_diverging(backend, X, y, lr=1e300, batch_size=batch_size, random_state=0)
    assert res.status == "diverged"
    assert np.all(np.abs(res.coef) <= 1e150) and abs(res.intercept) <= 1e150


@pytest.mark.parametrize("batch_size", [None, 16])
def test_loss_rising_a_million_fold_diverges(backend, batch_size):
    """lr = 1e8: weights of ~1e7, finite and far below the norm limit, but a loss of ~1e7, more
    than 1e6 x max(start loss, log 2)."""
    X, y = make_data(n=300, d=5, seed=0)
    res = _fit_diverging(backend, X, y, lr=1e8, batch_size=batch_size, max_iter=20,
                         random_state=0)
    assert res.status == "diverged"
    np.testing.assert_array_equal(res.coef, 0.0)


@pytest.mark.parametrize("batch_size", [None, 16])
def test_divergence_rule_leaves_ordinary_runs_alone(backend, batch_size):
    """A sound run is not touched, and each run of a batched fit stops on its own."""
    X, y = make_data(n=300, d=5, seed=0)
    with pytest.warns(gs.DivergenceWarning):
        res = gs.fit(X, y, ["sgd", "sgd"], lr=[0.5, 1e300], batch_size=batch_size,
                     max_iter=30, backend=backend, random_state=0)
    assert res.status[0] != "diverged" and res.status[1] == "diverged"
    alone = gs.fit(X, y, "sgd", lr=0.5, batch_size=batch_size, max_iter=30, backend=backend,
                   random_state=0)
    np.testing.assert_allclose(res.coef[0], alone.coef, rtol=1e-12)


class _Unbounded:
    """An oracle whose loss -||p||_1 has no minimum: armijo accepts every trial step, which it
    doubles each iteration, so the weights double too; the loss stays finite up to 1e308."""

    n_samples, n_features = 10, 2

    def loss_grad(self, P, active, rows=None, denominator=None):
        return -np.abs(P).sum(axis=1), -np.sign(P)

    def hessp(self, P, V, active):
        return np.zeros_like(V)


def test_curvature_run_diverges_on_its_weights():
    """A curvature run's Step events pass the same test: it used to run on to weights of
    ~1e308 and stall there."""
    with pytest.warns(gs.DivergenceWarning):
        res = gs.fit(_Unbounded(), None, "armijo", coef_init=[1.0, 1.0], max_iter=5000)
    assert res.status == "diverged"
    assert 1e100 < np.linalg.norm(np.append(res.coef, res.intercept)) <= 1e150


# ---- 4. the loss and the residual without cancellation ---------------------------------------

try:
    import mpmath
except ImportError:  # pragma: no cover - in the test extra
    mpmath = None
needs_mpmath = pytest.mark.skipif(mpmath is None, reason="needs mpmath")


def _grid() -> np.ndarray:
    """-800 .. 800, denser where the terms fall through the subnormal range (|z| ~ 708 .. 745)
    and near 0."""
    rng = np.random.default_rng(0)
    tail = np.linspace(700.0, 750.0, 501)
    small = np.geomspace(1e-300, 40.0, 300)
    z = np.concatenate([np.linspace(-800.0, 800.0, 1601), tail, -tail, small, -small,
                        rng.uniform(-60.0, 60.0, 400), [0.0, 20.0, 37.0, -37.0]])
    return np.unique(z)


@functools.cache
def _truth(label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log(1 + exp(z)) - y z, sigmoid(z) - y and sigmoid(z)(1 - sigmoid(z)) at 60 digits, each
    from a form that is exact in mpmath's arithmetic, rounded once to float64."""
    mp = mpmath.mp
    loss, res, hw = [], [], []
    with mpmath.workdps(60):
        for z in _grid():
            zm = mp.mpf(float(z))
            s = -zm if label else zm  # loss = log1p(exp(s)), residual = +-1 / (1 + exp(-s))
            loss.append(float(mpmath.log1p(mpmath.exp(s))))
            res.append(float((-1 if label else 1) / (1 + mpmath.exp(-s))))
            e = mpmath.exp(-abs(zm))
            hw.append(float(e / (1 + e) ** 2))
    return np.array(loss), np.array(res), np.array(hw)


def ulps(a, b) -> np.ndarray:
    """Units in the last place between float64 arrays (any signs; -0.0 == 0.0)."""
    def ordered(x):
        i = np.ascontiguousarray(x, dtype=np.float64).view(np.int64)
        return np.where(i < 0, np.int64(-(2**63)) - i, i)
    return np.abs(ordered(a) - ordered(b))


MAX_ULPS = 4
# sample weights that put the one row that counts in the kernels' groups of four (the vector
# link of the C++ kernel) or after them (its scalar link)
ROW_WEIGHTS = {"group": [1.0, 0.0, 0.0, 0.0, 0.0], "tail": [0.0, 0.0, 0.0, 0.0, 1.0]}


@pytest.fixture(params=["numpy", "numba"] + [f"cpp-{k}" for k in CPP_KERNELS] or ["cpp"])
def engine(request):
    """Every kernel: NumPy, Numba, and each C++ kernel this CPU runs (baseline, avx2)."""
    name, _, kernel = request.param.partition("-")
    _require(name)
    if not kernel:
        yield name
        return
    before = _core.set_kernel(kernel)
    yield name
    _core.set_kernel(before)


@needs_mpmath
@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", list(ROW_WEIGHTS))
def test_loss_and_residual_within_a_few_ulp(engine, label, dtype, rows):
    """One row x = 1 and one run per z (coef = z): the loss is the row's loss and both
    gradients its residual. At z = 20, y = 1 the loss was 2.0611530e-9 (true 2.0611536e-9);
    from z = 37 on it was 0 (true 8.5e-17 at 37)."""
    backend = engine
    z = _grid()
    want_loss, want_res, _ = _truth(label)
    X = np.ones((5, 1), dtype=dtype)
    loss, g_coef, g_b = gs.loss_and_grad(X, np.full(5, label), z[:, None],
                                         sample_weight=ROW_WEIGHTS[rows], backend=backend)
    bad = ulps(loss, want_loss) > MAX_ULPS
    assert not bad.any(), (z[bad][:5], loss[bad][:5], want_loss[bad][:5])
    for got in (g_coef[:, 0], g_b):
        bad = ulps(got, want_res) > MAX_ULPS
        assert not bad.any(), (z[bad][:5], got[bad][:5], want_res[bad][:5])


@needs_mpmath
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hessian_weight_within_a_few_ulp(engine, dtype):
    """sigmoid(z)(1 - sigmoid(z)) as e / (1 + e)^2: it was 0 from z = 37 on."""
    _, module = _backends.get(engine)
    z = _grid()
    _, _, want = _truth(0)
    K = z.size
    X = np.ones((5, 1), dtype=dtype)
    P = np.column_stack([z, np.zeros(K)])
    V = np.tile([0.0, 1.0], (K, 1))  # u = x . 0 + 1
    for weights in ROW_WEIGHTS.values():
        SW = np.array(weights)[:, None]
        HV = module.hessp(X, SW, P, V, np.zeros(K), np.ones(K, np.uint8), 1)
        for got in (HV[:, 0], HV[:, 1]):
            bad = ulps(got, want) > MAX_ULPS
            assert not bad.any(), (z[bad][:5], got[bad][:5], want[bad][:5])


@needs_mpmath
@pytest.mark.parametrize("kernel", CPP_KERNELS or ["baseline"])
def test_core_link_terms_within_a_few_ulp(kernel):
    """The C++ link itself, every lane of the vector version and the scalar tail."""
    _require("cpp")
    before = _core.set_kernel(kernel)
    try:
        _check_link_terms()
    finally:
        _core.set_kernel(before)


def _check_link_terms():
    z = _grid()
    for label in (0, 1):
        want_loss, want_res, want_hw = _truth(label)
        for start in range(4):  # shifts every z through every lane and the tail
            loss, res, hw = _core.link_terms(np.ascontiguousarray(z[start:]),
                                             np.full(z.size - start, float(label)))
            for got, want in ((loss, want_loss), (res, want_res), (hw, want_hw)):
                assert ulps(got, want[start:]).max() <= MAX_ULPS


def test_backends_agree_on_the_extreme_rows():
    """The three kernels give the same loss and gradient on rows far out on both sides."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((203, 7)) * 30.0
    y = rng.integers(0, 2, 203)
    coef = rng.standard_normal((3, 7))
    results = {b: gs.loss_and_grad(X, y, coef, backend=b) for b in ALL_BACKENDS
               if gs.backends()[b]}
    ref = results.pop("numpy")
    for got in results.values():
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


# ---- 6. Ctrl-C on a small problem --------------------------------------------------------------

_CTRL_C = """
import signal
import sys
import numpy as np
# Python raises KeyboardInterrupt only if SIGINT was not ignored when it started, and a
# background job (`cmd &` in a non-interactive shell, as CI may run) inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
import gradstep as gs
backend = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.standard_normal((2000, 5))
y = (X[:, 0] + rng.standard_normal(2000) > 0).astype(np.int64)
kw = dict(lr=0.01, batch_size=1, backend=backend, history=False, tol=None)
gs.fit(X, y, "sgd", max_iter=1, **kw)  # compiled (or loaded from numba's cache) before the clock
print("ready", flush=True)
try:
    gs.fit(X, y, "sgd", max_iter=10**9, **kw)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
"""


def _line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().strip() if ready else ""


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="needs POSIX signals")
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_ctrl_c_stops_a_small_fit_promptly(name):
    """SIGINT about 1 s into a fit with n = 2000, d = 5, batch_size = 1: the compiled loop runs
    in chunks of ~0.1 s, so KeyboardInterrupt is raised within 0.5 s and the process exits with
    it. (The exit itself is not timed: the interpreter's shutdown after numba was imported
    takes 1 to 2.5 s on a small VM, 0.2 s without it; gradstep has no part in it.)"""
    _require(name)
    with subprocess.Popen([sys.executable, "-c", _CTRL_C, name], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        try:
            assert _line(proc.stdout, 300) == "ready", "the fit did not start"  # numba compiles
            time.sleep(1.0)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            line = _line(proc.stdout, 30)
            took = time.monotonic() - sent
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
    assert line == "interrupted", err
    assert took < 0.5, f"{took:.3f} s from SIGINT to KeyboardInterrupt"
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
