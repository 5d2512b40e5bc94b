// gradstep._core: bindings only. The computation lives in cpp/include/gradstep/*.hpp.
//
// Arrays are taken as py::array_t<T, c_style> with noconvert(): Python (gradstep._validate) has
// already produced the exact dtype and layout, so an array of another dtype or layout is a bug
// upstream and must raise a TypeError here, never be copied silently. The drivers take the
// RunSpec and FitState objects of gradstep._backends.state themselves and read their named
// attributes with the same strictness (a FitState array must also be writeable: it is advanced in
// place). Shapes are checked (cheaply) so that a wrong call raises instead of reading out of
// bounds. Every pointer and size is read while the GIL is held; the GIL is then released around
// the whole computation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gradstep/fit.hpp"
#include "gradstep/backtrack_loop.hpp"
#include "gradstep/lbfgs_loop.hpp"
#include "gradstep/lbfgs_rows.hpp"
#include "gradstep/logistic.hpp"
#include "gradstep/rules.hpp"
#include "gradstep/softmax_kernel.hpp"
#include "gradstep/sparse_kernel.hpp"
#include "gradstep/thread_pool.hpp"
#include "gradstep/two_loop.hpp"

namespace py = pybind11;
using py::ssize_t;

namespace {

template <class T>
using carray = py::array_t<T, py::array::c_style>;

void require(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}
// A literal message is not made into a std::string unless it is thrown: require is called per
// element in some loops, where building the message each time cost more than the kernel
// (1,797 labels: ~0.2 ms a call). Messages built from numbers go inside an if for the same reason.
void require(bool ok, const char* message) {
  if (!ok) throw py::value_error(message);
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (ssize_t i = 0; i < a.ndim(); ++i) {
    s += std::to_string(a.shape(i));
    s += a.ndim() == 1 ? "," : (i + 1 < a.ndim() ? ", " : "");
  }
  return s + ")";
}

void require_shape(const py::array& a, const std::string& name, std::vector<ssize_t> shape) {
  bool ok = a.ndim() == static_cast<ssize_t>(shape.size());
  for (std::size_t i = 0; ok && i < shape.size(); ++i) {
    ok = a.shape(static_cast<ssize_t>(i)) == shape[i];
  }
  if (!ok) {
    std::string want = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) {
      want += std::to_string(shape[i]);
      want += shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : "");
    }
    throw py::value_error(name + " must have shape " + want + "), got " + shape_of(a));
  }
}

template <class T>
const char* dtype_name();
template <>
const char* dtype_name<double>() { return "float64"; }
template <>
const char* dtype_name<std::int64_t>() { return "int64"; }
template <>
const char* dtype_name<std::uint8_t>() { return "uint8"; }

// obj.name, which must exist.
py::object attribute(const py::handle& obj, const std::string& owner, const char* name) {
  if (!py::hasattr(obj, name)) {
    const char* expected = owner == "spec"   ? "a state.RunSpec"
                           : owner == "loop" ? "a driver.CompiledCurvatureDriver"
                                             : "a state.FitState";
    throw py::type_error(owner + " has no attribute '" + name + "' (expected " + expected + ")");
  }
  return obj.attr(name);
}

// obj.name as a C-contiguous array of T, taken as it is (never converted or copied); writeable
// when it is advanced in place.
template <class T>
carray<T> array_attribute(const py::handle& obj, const std::string& owner, const char* name,
                          bool writeable = false) {
  const py::object value = attribute(obj, owner, name);
  const std::string full = owner + "." + name;
  if (!carray<T>::check_(value)) {
    std::string got = std::string(py::str(py::type::of(value).attr("__name__")));
    if (py::isinstance<py::array>(value)) {
      const auto a = py::reinterpret_borrow<py::array>(value);
      got = "an array of dtype " + std::string(py::str(a.dtype())) +
            ((a.flags() & py::array::c_style) ? "" : " (not C-contiguous)");
    }
    throw py::type_error(full + " must be a C-contiguous " + dtype_name<T>() +
                         " numpy array, got " + got);
  }
  auto a = py::reinterpret_borrow<carray<T>>(value);
  if (writeable && !a.writeable()) throw py::value_error(full + " is read-only");
  return a;
}

// obj.name converted to T (a Python or NumPy scalar).
template <class T>
T scalar_attribute(const py::handle& obj, const std::string& owner, const char* name,
                   const char* what) {
  const py::object value = attribute(obj, owner, name);
  try {
    return value.cast<T>();
  } catch (const py::cast_error&) {
    throw py::type_error(owner + "." + name + " must be " + what + ", got " +
                         std::string(py::repr(value)));
  }
}

// X, Y and SW as the kernels' Dataset, after checking that they fit together.
template <class T>
gradstep::Dataset<T> dataset(const carray<T>& X, const carray<double>* Y, const carray<double>& SW,
                             ssize_t K) {
  require(X.ndim() == 2, "X must be 2-D, got shape " + shape_of(X));
  const ssize_t n = X.shape(0), d = X.shape(1);
  gradstep::Dataset<T> data;
  data.X = X.data();
  data.n = n;
  data.d = d;
  if (Y != nullptr) {
    require(Y->ndim() == 2 && Y->shape(0) == n && (Y->shape(1) == 1 || Y->shape(1) == K),
            "Y must have shape (" + std::to_string(n) + ", 1) or (" + std::to_string(n) + ", " +
                std::to_string(K) + "), got " + shape_of(*Y));
    data.Y = Y->data();
    data.ky = Y->shape(1);
  }
  require(SW.ndim() == 2 && SW.shape(0) == n &&
              (SW.shape(1) == 0 || SW.shape(1) == 1 || SW.shape(1) == K),
          "SW must have shape (" + std::to_string(n) + ", Ks) with Ks in {0, 1, K = " +
              std::to_string(K) + "}, got " + shape_of(SW));
  data.ks = SW.shape(1);
  data.SW = data.ks ? SW.data() : nullptr;
  return data;
}

ssize_t runs_of(const carray<double>& P, const py::array& X, const char* name = "P") {
  require(P.ndim() == 2 && X.ndim() == 2 && P.shape(1) == X.shape(1) + 1,
          std::string(name) + " must have shape (K, d + 1) = (K, " +
              std::to_string(X.ndim() == 2 ? X.shape(1) + 1 : -1) + "), got " + shape_of(P));
  return P.shape(0);
}

void require_threads(int n_threads) {
  require(n_threads >= 1, "n_threads must be >= 1, got " + std::to_string(n_threads));
}

// alpha (K,), active (K,), rows (1-D, each in [0, n)) and denominator ((0,) or (K,)).
void require_run_arrays(const carray<double>& alpha, const carray<std::uint8_t>& active,
                        const carray<std::int64_t>& rows, const carray<double>& denominator,
                        ssize_t K, ssize_t n) {
  require_shape(alpha, "alpha", {K});
  require_shape(active, "active", {K});
  require(rows.ndim() == 1, "rows must be 1-D, got shape " + shape_of(rows));
  require(denominator.ndim() == 1 && (denominator.shape(0) == 0 || denominator.shape(0) == K),
          "denominator must have shape (0,) or (" + std::to_string(K) + ",), got " +
              shape_of(denominator));
  const std::int64_t* rp = rows.data();
  for (ssize_t j = 0; j < rows.shape(0); ++j) {
    if (rp[j] < 0 || rp[j] >= n) {
      require(false, "rows[" + std::to_string(j) + "] = " + std::to_string(rp[j]) +
                         " is out of range [0, " + std::to_string(n) + ")");
    }
  }
}

// Y (n, 1 or K) and SW (n, 0, 1 or K) of a matrix with n rows (CSR and the multinomial kernels).
void require_targets(const carray<double>* Y, const carray<double>& SW, ssize_t n, ssize_t K) {
  if (Y != nullptr) {
    require(Y->ndim() == 2 && Y->shape(0) == n && (Y->shape(1) == 1 || Y->shape(1) == K),
            "Y must have shape (" + std::to_string(n) + ", 1) or (" + std::to_string(n) + ", " +
                std::to_string(K) + "), got " + shape_of(*Y));
  }
  require(SW.ndim() == 2 && SW.shape(0) == n &&
              (SW.shape(1) == 0 || SW.shape(1) == 1 || SW.shape(1) == K),
          "SW must have shape (" + std::to_string(n) + ", Ks) with Ks in {0, 1, K = " +
              std::to_string(K) + "}, got " + shape_of(SW));
}

// labels (n,) in [0, C): the multinomial kernels index the row's scores by them.
void require_labels(const carray<std::int64_t>& labels, ssize_t n, ssize_t C) {
  require_shape(labels, "labels", {n});
  const std::int64_t* lp = labels.data();
  for (ssize_t i = 0; i < n; ++i) {
    if (lp[i] < 0 || lp[i] >= C) {
      require(false, "labels[" + std::to_string(i) + "] = " + std::to_string(lp[i]) +
                         " is out of range [0, " + std::to_string(C) + ")");
    }
  }
}

template <class T>
py::tuple loss_grad(const carray<T>& X, const carray<double>& Y, const carray<double>& SW,
                    const carray<double>& P, const carray<double>& alpha,
                    const carray<std::int64_t>& rows, const carray<std::uint8_t>& active,
                    int n_threads, const carray<double>& denominator) {
  const ssize_t K = runs_of(P, X), D = P.shape(1);
  const gradstep::Dataset<T> data = dataset(X, &Y, SW, K);
  require_run_arrays(alpha, active, rows, denominator, K, data.n);
  require_threads(n_threads);
  const ssize_t n_rows = rows.shape(0);
  const std::int64_t* rp = rows.data();
  carray<double> loss(K);
  carray<double> G({K, D});
  double* lp = loss.mutable_data();
  double* gp = G.mutable_data();
  const double* pp = P.data();
  const double* alp = alpha.data();
  const std::uint8_t* ap = active.data();
  const double* den = denominator.shape(0) ? denominator.data() : nullptr;
  {
    py::gil_scoped_release release;
    gradstep::GradientEngine<T> engine(data, K);
    engine.compute(pp, alp, n_rows ? rp : nullptr, n_rows, ap, n_threads, lp, gp, den);
  }
  return py::make_tuple(loss, G);
}

template <class T>
carray<double> hessp(const carray<T>& X, const carray<double>& SW, const carray<double>& P,
                     const carray<double>& V, const carray<double>& alpha,
                     const carray<std::uint8_t>& active, int n_threads) {
  const ssize_t K = runs_of(P, X), D = P.shape(1);
  const gradstep::Dataset<T> data = dataset<T>(X, nullptr, SW, K);
  require_shape(V, "V", {K, D});
  require_shape(alpha, "alpha", {K});
  require_shape(active, "active", {K});
  require_threads(n_threads);
  carray<double> HV({K, D});
  double* hp = HV.mutable_data();
  const double* pp = P.data();
  const double* vp = V.data();
  const double* alp = alpha.data();
  const std::uint8_t* ap = active.data();
  {
    py::gil_scoped_release release;
    gradstep::GradientEngine<T> engine(data, K);
    engine.hessp(pp, vp, alp, ap, n_threads, hp);
  }
  return HV;
}

// The arrays of a state.FitState that every compiled loop advances, held (a reference each)
// while the loop runs; `reference_required`: state.reference must be (K, D) even without a
// reference (the first-order loops' contract), else only when spec.has_reference.
struct StateArrays {
  carray<double> P, grad, loss, history, reference, start_loss;
  carray<std::int64_t> t, n_iter, status;

  // The views the loops take; the first-order loops' own fields (slots, ...) are the caller's.
  gradstep::FitState view() {
    gradstep::FitState st;
    st.P = P.mutable_data();
    st.grad = grad.mutable_data();
    st.loss = loss.mutable_data();
    st.t = t.mutable_data();
    st.n_iter = n_iter.mutable_data();
    st.status = status.mutable_data();
    st.history = history.mutable_data();
    st.history_len = history.shape(2);
    st.reference = reference.data();
    st.start_loss = start_loss.data();
    return st;
  }
};

StateArrays state_arrays(const py::object& state_obj, const carray<double>& P, ssize_t K,
                         ssize_t D, bool reference_required) {
  const std::string F = "state";
  StateArrays a;
  a.P = P;
  a.grad = array_attribute<double>(state_obj, F, "grad", true);
  a.loss = array_attribute<double>(state_obj, F, "loss", true);
  a.t = array_attribute<std::int64_t>(state_obj, F, "t", true);
  a.n_iter = array_attribute<std::int64_t>(state_obj, F, "n_iter", true);
  a.status = array_attribute<std::int64_t>(state_obj, F, "status", true);
  a.history = array_attribute<double>(state_obj, F, "history", true);
  a.reference = array_attribute<double>(state_obj, F, "reference");
  a.start_loss = array_attribute<double>(state_obj, F, "start_loss");
  require_shape(a.grad, "state.grad", {K, D});
  require_shape(a.loss, "state.loss", {K});
  require_shape(a.t, "state.t", {K});
  require_shape(a.n_iter, "state.n_iter", {K});
  require_shape(a.status, "state.status", {K});
  require(a.history.ndim() == 3 && a.history.shape(0) == gradstep::kNHistory &&
              a.history.shape(1) == K,
          "state.history must have shape (" + std::to_string(gradstep::kNHistory) + ", " +
              std::to_string(K) + ", H), got " + shape_of(a.history));
  if (reference_required) require_shape(a.reference, "state.reference", {K, D});
  require_shape(a.start_loss, "state.start_loss", {K});
  return a;
}

// The first-order loops' spec and state (state.RunSpec, state.FitState) for K runs of D
// parameters, checked; calls loop(spec, st) with the GIL released. Every array is held here (a
// reference each) until the loop returns.
template <class Loop>
void first_order_run(const py::object& spec_obj, const py::object& state_obj,
                     const carray<double>& P, ssize_t K, ssize_t D, Loop&& loop) {
  const std::string S = "spec", F = "state";

  const auto rule_code = array_attribute<std::int64_t>(spec_obj, S, "rule_code");
  const auto sched_code = array_attribute<std::int64_t>(spec_obj, S, "sched_code");
  const auto hyper = array_attribute<double>(spec_obj, S, "hyper");
  const auto alpha = array_attribute<double>(spec_obj, S, "alpha");
  require_shape(rule_code, "spec.rule_code", {K});
  require_shape(sched_code, "spec.sched_code", {K});
  require_shape(hyper, "spec.hyper", {K, gradstep::kNHyper});
  require_shape(alpha, "spec.alpha", {K});

  gradstep::RunSpec spec;
  spec.rule_code = rule_code.data();
  spec.sched_code = sched_code.data();
  spec.hyper = hyper.data();
  spec.alpha = alpha.data();
  spec.fit_intercept = scalar_attribute<bool>(spec_obj, S, "fit_intercept", "a bool");
  spec.tol = scalar_attribute<double>(spec_obj, S, "tol", "a float");
  spec.batch_size = scalar_attribute<std::int64_t>(spec_obj, S, "batch_size", "an int");
  spec.seed = scalar_attribute<std::uint64_t>(spec_obj, S, "seed", "an int in [0, 2**64)");
  spec.max_iter = scalar_attribute<std::int64_t>(spec_obj, S, "max_iter", "an int");
  spec.total_updates = scalar_attribute<std::int64_t>(spec_obj, S, "total_updates", "an int");
  spec.record_history = scalar_attribute<bool>(spec_obj, S, "record_history", "a bool");
  spec.has_reference = scalar_attribute<bool>(spec_obj, S, "has_reference", "a bool");
  spec.shuffle_blocks = scalar_attribute<std::int64_t>(spec_obj, S, "shuffle_blocks", "an int");
  require(spec.batch_size >= 0,
          "spec.batch_size must be >= 0, got " + std::to_string(spec.batch_size));
  require(spec.shuffle_blocks >= 0,
          "spec.shuffle_blocks must be >= 0, got " + std::to_string(spec.shuffle_blocks));
  // the L1 term: spec.l1 (0,) or (K,) finite >= 0; with some l1 > 0, spec.penalized (D,)
  const auto l1 = array_attribute<double>(spec_obj, S, "l1");
  const auto penalized = array_attribute<std::uint8_t>(spec_obj, S, "penalized");
  require(l1.ndim() == 1 && (l1.shape(0) == 0 || l1.shape(0) == K),
          "spec.l1 must have shape (0,) or (" + std::to_string(K) + ",), got " + shape_of(l1));
  bool any_l1 = false;
  for (ssize_t k = 0; k < l1.shape(0); ++k) {
    const double v = l1.data()[k];
    require(std::isfinite(v) && v >= 0.0, "spec.l1 must be finite and >= 0, got " +
                                              std::to_string(v) + " for run " + std::to_string(k));
    any_l1 = any_l1 || v > 0.0;
  }
  if (any_l1) {
    require_shape(penalized, "spec.penalized", {D});
    spec.l1 = l1.data();
    spec.penalized = penalized.data();
  }
  for (ssize_t k = 0; k < K; ++k) {
    require(gradstep::valid_rule(spec.rule_code[k]),
            "spec.rule_code[" + std::to_string(k) + "] = " + std::to_string(spec.rule_code[k]) +
                " is not a compiled rule (see gradstep._core.rule_codes())");
    require(gradstep::valid_schedule(spec.sched_code[k]),
            "spec.sched_code[" + std::to_string(k) + "] = " +
                std::to_string(spec.sched_code[k]) + " is not a known schedule");
  }

  StateArrays arrays = state_arrays(state_obj, P, K, D, true);
  auto slots = array_attribute<double>(state_obj, F, "slots", true);
  auto best_loss = array_attribute<double>(state_obj, F, "best_loss", true);
  auto no_improve = array_attribute<std::int64_t>(state_obj, F, "no_improve", true);
  auto epoch = array_attribute<std::int64_t>(state_obj, F, "epoch", true);
  require_shape(slots, "state.slots", {K, gradstep::kNSlots, D});
  require_shape(best_loss, "state.best_loss", {K});
  require_shape(no_improve, "state.no_improve", {K});
  require_shape(epoch, "state.epoch", {1});

  gradstep::FitState st = arrays.view();
  st.slots = slots.mutable_data();
  st.best_loss = best_loss.mutable_data();
  st.no_improve = no_improve.mutable_data();
  st.epoch = epoch.mutable_data();

  py::gil_scoped_release release;
  loop(spec, st);
}

template <class T>
void run(const carray<T>& X, const carray<double>& Y, const carray<double>& SW,
         const py::object& spec_obj, const py::object& state_obj, std::int64_t n_steps,
         int n_threads) {
  carray<double> P = array_attribute<double>(state_obj, "state", "P", true);
  const ssize_t K = runs_of(P, X, "state.P"), D = P.shape(1);
  const gradstep::Dataset<T> data = dataset(X, &Y, SW, K);
  require(data.n > 0, "X has no rows");
  require_threads(n_threads);
  first_order_run(spec_obj, state_obj, P, K, D,
                  [&](const gradstep::RunSpec& spec, gradstep::FitState& st) {
                    gradstep::run(data, K, spec, st, n_steps, n_threads);
                  });
}

// The multinomial kernels of a dense X (softmax_kernel.hpp): P (K, C (d + 1)), labels (n,) in
// [0, C); the other arguments as loss_grad's and hessp's.
ssize_t softmax_runs(const carray<double>& P, const py::array& X, ssize_t C, const char* name) {
  require(C >= 2, "n_classes must be at least 2, got " + std::to_string(C));
  require(X.ndim() == 2, "X must be 2-D, got shape " + shape_of(X));
  require(P.ndim() == 2 && P.shape(1) == C * (X.shape(1) + 1),
          std::string(name) + " must have shape (K, n_classes (d + 1)) = (K, " +
              std::to_string(C * (X.shape(1) + 1)) + "), got " + shape_of(P));
  return P.shape(0);
}

template <class T>
py::tuple softmax_loss_grad(const carray<T>& X, const carray<std::int64_t>& labels,
                            const carray<double>& SW, const carray<double>& P,
                            const carray<double>& alpha, const carray<std::int64_t>& rows,
                            const carray<std::uint8_t>& active, int n_threads,
                            const carray<double>& denominator, ssize_t n_classes) {
  const ssize_t K = softmax_runs(P, X, n_classes, "P");
  const ssize_t n = X.shape(0), d = X.shape(1);
  require_labels(labels, n, n_classes);
  require_targets(nullptr, SW, n, K);
  require_run_arrays(alpha, active, rows, denominator, K, n);
  require_threads(n_threads);
  const ssize_t n_rows = rows.shape(0);
  carray<double> loss(K);
  carray<double> G({K, P.shape(1)});
  {
    py::gil_scoped_release release;
    gradstep::softmax::Engine<T> engine(X.data(), n, d, labels.data(),
                                        SW.shape(1) ? SW.data() : nullptr, SW.shape(1), K,
                                        n_classes);
    engine.loss_grad(P.data(), alpha.data(), n_rows ? rows.data() : nullptr, n_rows,
                     active.data(), n_threads, loss.mutable_data(), G.mutable_data(),
                     denominator.shape(0) ? denominator.data() : nullptr);
  }
  return py::make_tuple(loss, G);
}

template <class T>
carray<double> softmax_hessp(const carray<T>& X, const carray<double>& SW,
                             const carray<double>& P, const carray<double>& V,
                             const carray<double>& alpha, const carray<std::uint8_t>& active,
                             int n_threads, ssize_t n_classes) {
  const ssize_t K = softmax_runs(P, X, n_classes, "P");
  const ssize_t n = X.shape(0), d = X.shape(1);
  require_targets(nullptr, SW, n, K);
  require_shape(V, "V", {K, P.shape(1)});
  require_shape(alpha, "alpha", {K});
  require_shape(active, "active", {K});
  require_threads(n_threads);
  carray<double> HV({K, P.shape(1)});
  {
    py::gil_scoped_release release;
    gradstep::softmax::Engine<T> engine(X.data(), n, d, nullptr,
                                        SW.shape(1) ? SW.data() : nullptr, SW.shape(1), K,
                                        n_classes);
    engine.hessp(P.data(), V.data(), alpha.data(), active.data(), n_threads,
                 HV.mutable_data());
  }
  return HV;
}

// The arrays of a compiled curvature loop (lbfgs_loop.hpp, backtrack_loop.hpp) for a fit of one
// run with D parameters: state.FitState's, spec.RunSpec's scalars, alpha and L1 term (spec.l1,
// spec.penalized), and the loop's own (driver.CompiledCurvatureDriver: its rule and the arrays
// it keeps between calls); each held by a reference here while the loop runs.
struct CurvatureArgs {
  StateArrays state;
  carray<double> alpha, l1_array, passes;
  carray<std::uint8_t> penalized;  // (D,) with an L1 term: the parameters it covers
  double l1 = 0.0;                 // spec.l1's one entry (0 when empty): OWL-QN or ISTA when > 0
  gradstep::RunSpec spec;
  gradstep::FitState st;
  bool lbfgs = true;  // loop.kind "lbfgs"; else "armijo", "bb" or "newton" (backtrack_loop.hpp)
  // lbfgs: the pairs (lbfgs_loop::Memory) and the first trial step of later iterations
  carray<double> memory, rho, gamma, step;
  carray<std::int64_t> ints;
  gradstep::lbfgs_loop::Memory mem;
  double lr = 1.0;
  // armijo, bb, newton: the rule's constants and the run's state between calls
  carray<double> params, reals;
  gradstep::backtrack_loop::Rule rule;
  gradstep::backtrack_loop::Memory bt;
};

// loop.kind's lbfgs arrays: memory (2 (m + 1), D), rho (m + 1,), gamma (1,), ints (3,),
// step (1,).
void lbfgs_loop_args(const py::object& loop_obj, CurvatureArgs& a, ssize_t D) {
  const std::string L = "loop";
  const auto m = scalar_attribute<ssize_t>(loop_obj, L, "m", "an int");
  require(m >= 1, "loop.m must be at least 1, got " + std::to_string(m));
  a.lr = scalar_attribute<double>(loop_obj, L, "lr", "a float");
  a.memory = array_attribute<double>(loop_obj, L, "memory", true);
  a.rho = array_attribute<double>(loop_obj, L, "rho", true);
  a.gamma = array_attribute<double>(loop_obj, L, "gamma", true);
  a.ints = array_attribute<std::int64_t>(loop_obj, L, "ints", true);
  a.step = array_attribute<double>(loop_obj, L, "step", true);
  require_shape(a.memory, "loop.memory", {2 * (m + 1), D});
  require_shape(a.rho, "loop.rho", {m + 1});
  require_shape(a.gamma, "loop.gamma", {1});
  require_shape(a.ints, "loop.ints", {3});
  require_shape(a.step, "loop.step", {1});
  const std::int64_t* ints = a.ints.data();
  require(ints[0] >= 0 && ints[0] <= m && ints[1] >= 0 && ints[1] <= m,
          "loop.ints must hold a slot in [0, m] and a count in [0, m]");
  a.mem.memory = a.memory.mutable_data();
  a.mem.rho = a.rho.mutable_data();
  a.mem.gamma = a.gamma.mutable_data();
  a.mem.ints = a.ints.mutable_data();
  a.mem.step = a.step.mutable_data();
  a.mem.m = m;
}

// loop.kind "armijo", "bb" or "newton": params (backtrack_loop::kParams,), reals
// (kReals + window,), ints (kInts,).
void backtrack_loop_args(const py::object& loop_obj, CurvatureArgs& a, const std::string& kind) {
  namespace bt = gradstep::backtrack_loop;
  const std::string L = "loop";
  a.params = array_attribute<double>(loop_obj, L, "params");
  require_shape(a.params, "loop.params", {bt::kParams});
  const double* q = a.params.data();
  // the counts first, before they are cast (a NaN or huge double has no int64 value)
  require(q[4] >= 0.0 && q[4] <= 2.0 && q[5] >= 1.0 && q[5] <= 1e9 && q[7] >= 1.0 && q[7] <= 1e9,
          "loop.params must hold a variant code in 0..2, a window and a max_cg in [1, 1e9]");
  bt::Rule& r = a.rule;
  const bool bb = kind == "bb";
  r.kind = bb ? bt::Kind::bb : kind == "newton" ? bt::Kind::newton : bt::Kind::armijo;
  r.lr = q[0];
  r.c1 = q[1];
  r.shrink = q[2];
  r.grow = q[3];
  r.variant = static_cast<int>(q[4]);
  r.window = static_cast<std::int64_t>(q[5]);
  r.cg_tol = q[6];
  r.max_cg = static_cast<std::int64_t>(q[7]);
  require((std::isnan(r.lr) ? bb : r.lr > 0.0) && r.c1 > 0.0 && r.c1 < 1.0 && r.shrink > 0.0 &&
              r.shrink < 1.0 && r.grow >= 1.0 && r.cg_tol > 0.0 && r.cg_tol < 1.0,
          "loop.params must hold a rule's lr (NaN: bb's probe), c1, shrink and cg_tol in "
          "(0, 1) and grow >= 1");
  a.reals = array_attribute<double>(loop_obj, L, "reals", true);
  a.ints = array_attribute<std::int64_t>(loop_obj, L, "ints", true);
  require_shape(a.reals, "loop.reals", {bt::kReals + r.window});
  require_shape(a.ints, "loop.ints", {bt::kInts});
  const std::int64_t* ints = a.ints.data();
  require(ints[2] >= 0 && ints[2] <= r.window && ints[3] >= 0 && ints[3] < r.window,
          "loop.ints must hold a count in [0, window] and a slot in [0, window)");
  a.bt.reals = a.reals.mutable_data();
  a.bt.ints = a.ints.mutable_data();
}

CurvatureArgs curvature_args(const py::object& spec_obj, const py::object& state_obj,
                             const py::object& loop_obj, ssize_t D) {
  const std::string S = "spec";
  CurvatureArgs a;
  const auto kind = scalar_attribute<std::string>(loop_obj, "loop", "kind", "a str");
  require(kind == "lbfgs" || kind == "armijo" || kind == "bb" || kind == "newton",
          "loop.kind must be 'lbfgs', 'armijo', 'bb' or 'newton', got '" + kind + "'");
  a.lbfgs = kind == "lbfgs";
  a.l1_array = array_attribute<double>(spec_obj, S, "l1");
  require(a.l1_array.ndim() == 1 && a.l1_array.shape(0) <= 1,
          "spec.l1 must have shape (0,) or (1,), got " + shape_of(a.l1_array));
  a.l1 = a.l1_array.shape(0) ? a.l1_array.data()[0] : 0.0;
  require(std::isfinite(a.l1) && a.l1 >= 0.0,
          "spec.l1 must be finite and >= 0, got " + std::to_string(a.l1));
  require(a.l1 == 0.0 || kind == "lbfgs" || kind == "armijo",
          kind + " takes no L1 term (spec.l1 must be 0)");
  a.penalized = array_attribute<std::uint8_t>(spec_obj, S, "penalized");
  if (a.l1 > 0.0) require_shape(a.penalized, "spec.penalized", {D});
  const bool has_reference =
      scalar_attribute<bool>(spec_obj, S, "has_reference", "a bool");
  const auto P = array_attribute<double>(state_obj, "state", "P", true);
  require_shape(P, "state.P", {1, D});
  a.state = state_arrays(state_obj, P, 1, D, has_reference);
  a.alpha = array_attribute<double>(spec_obj, S, "alpha");
  require_shape(a.alpha, "spec.alpha", {1});
  a.passes = array_attribute<double>(loop_obj, "loop", "passes", true);
  require_shape(a.passes, "loop.passes", {1});
  if (a.lbfgs) {
    lbfgs_loop_args(loop_obj, a, D);
  } else {
    backtrack_loop_args(loop_obj, a, kind);
  }

  a.spec.alpha = a.alpha.data();
  a.spec.fit_intercept = scalar_attribute<bool>(spec_obj, S, "fit_intercept", "a bool");
  a.spec.tol = scalar_attribute<double>(spec_obj, S, "tol", "a float");
  a.spec.max_iter = scalar_attribute<std::int64_t>(spec_obj, S, "max_iter", "an int");
  a.spec.record_history = scalar_attribute<bool>(spec_obj, S, "record_history", "a bool");
  a.spec.has_reference = has_reference;
  a.st = a.state.view();
  return a;
}

// Without intercepts (MultinomialOracle._no_intercept): each class's intercept entry of a
// multinomial gradient or Hessian-vector product (class c's d + 1 entries, the intercept last)
// is 0, so that the loop never moves the intercepts (CG's vectors then keep them 0 as well).
inline void zero_intercepts(double* g, ssize_t n_classes, ssize_t d) {
  for (ssize_t c = 0; c < n_classes; ++c) g[c * (d + 1) + d] = 0.0;
}

// Up to n_steps iterations of the compiled loop of loop.kind for one run over oracle
// (p, g) -> loss and hessp (p, v, hv) (newton's).
template <class Oracle, class Hessp>
void iterate_curvature(CurvatureArgs& a, Oracle& oracle, Hessp& hessp, ssize_t D,
                       std::int64_t n_steps) {
  const std::uint8_t* penalized = a.l1 > 0.0 ? a.penalized.data() : nullptr;
  if (a.lbfgs) {
    gradstep::lbfgs_loop::Run<Oracle> run(oracle, a.spec, a.st, a.mem, a.lr,
                                          a.passes.mutable_data(), D, a.l1, penalized);
    run.iterate(n_steps);
  } else {
    gradstep::backtrack_loop::Run<Oracle, Hessp> run(oracle, hessp, a.spec, a.st, a.rule, a.bt,
                                                     a.passes.mutable_data(), D, a.l1,
                                                     penalized);
    run.iterate(n_steps);
  }
}

// The same for the binary loss of one run over engine (GradientEngine or csr::Engine: the same
// compute), the intercept's gradient zeroed when the fit has none (driver._zero_intercept).
template <class Engine>
void iterate_binary_curvature(CurvatureArgs& a, Engine& engine, ssize_t D, std::int64_t n_steps,
                              int n_threads) {
  const bool fit_intercept = a.spec.fit_intercept;
  const double* alpha = a.spec.alpha;
  auto oracle = [&](const double* p, double* g) {
    const std::uint8_t active = 1;
    double loss = 0.0;
    engine.compute(p, alpha, nullptr, 0, &active, n_threads, &loss, g);
    if (!fit_intercept) g[D - 1] = 0.0;
    return loss;
  };
  auto hessp = [&](const double* p, const double* v, double* hv) {
    const std::uint8_t active = 1;
    engine.hessp(p, v, alpha, &active, n_threads, hv);
    if (!fit_intercept) hv[D - 1] = 0.0;
  };
  iterate_curvature(a, oracle, hessp, D, n_steps);
}

// Binary logistic loss, one run: X (n, d), Y (n, 1), SW (n, 0 or 1).
template <class T>
void curvature_run(const carray<T>& X, const carray<double>& Y, const carray<double>& SW,
                   const py::object& spec_obj, const py::object& state_obj,
                   const py::object& loop_obj, std::int64_t n_steps, int n_threads) {
  require(X.ndim() == 2, "X must be 2-D, got shape " + shape_of(X));
  const ssize_t D = X.shape(1) + 1;
  CurvatureArgs a = curvature_args(spec_obj, state_obj, loop_obj, D);
  const gradstep::Dataset<T> data = dataset(X, &Y, SW, 1);
  require(data.n > 0, "X has no rows");
  require_threads(n_threads);
  py::gil_scoped_release release;
  gradstep::GradientEngine<T> engine(data, 1);
  engine.set_back_to_back(true);  // the loop's passes follow each other within microseconds
  iterate_binary_curvature(a, engine, D, n_steps, n_threads);
}

// Multinomial loss, one run: X (n, d), labels (n,) in [0, C), SW (n, 0 or 1); P (1, C (d + 1)).
template <class T>
void softmax_curvature_run(const carray<T>& X, const carray<std::int64_t>& labels,
                           const carray<double>& SW, const py::object& spec_obj,
                           const py::object& state_obj, const py::object& loop_obj,
                           std::int64_t n_steps, int n_threads, ssize_t n_classes) {
  require(X.ndim() == 2, "X must be 2-D, got shape " + shape_of(X));
  require(n_classes >= 2, "n_classes must be at least 2, got " + std::to_string(n_classes));
  const ssize_t n = X.shape(0), d = X.shape(1), D = n_classes * (d + 1);
  CurvatureArgs a = curvature_args(spec_obj, state_obj, loop_obj, D);
  require(n > 0, "X has no rows");
  require_labels(labels, n, n_classes);
  require_targets(nullptr, SW, n, 1);
  require_threads(n_threads);
  py::gil_scoped_release release;
  gradstep::softmax::Engine<T> engine(X.data(), n, d, labels.data(),
                                      SW.shape(1) ? SW.data() : nullptr, SW.shape(1), 1,
                                      n_classes);
  const bool fit_intercept = a.spec.fit_intercept;
  const double* alpha = a.spec.alpha;
  auto oracle = [&](const double* p, double* g) {
    const std::uint8_t active = 1;
    double loss = 0.0;
    engine.loss_grad(p, alpha, nullptr, 0, &active, n_threads, &loss, g, nullptr);
    if (!fit_intercept) zero_intercepts(g, n_classes, d);
    return loss;
  };
  auto hessp = [&](const double* p, const double* v, double* hv) {
    const std::uint8_t active = 1;
    engine.hessp(p, v, alpha, &active, n_threads, hv);
    if (!fit_intercept) zero_intercepts(hv, n_classes, d);
  };
  iterate_curvature(a, oracle, hessp, D, n_steps);
}

template <class T>
void bind_dtype(py::module_& m, const char* suffix) {
  const std::string dt = suffix;
  m.def(("loss_grad_" + dt).c_str(), &loss_grad<T>, py::arg("X").noconvert(),
        py::arg("Y").noconvert(), py::arg("SW").noconvert(), py::arg("P").noconvert(),
        py::arg("alpha").noconvert(), py::arg("rows").noconvert(), py::arg("active").noconvert(),
        py::arg("n_threads"), py::arg("denominator").noconvert(),
        ("Loss (K,) and gradient (K, d + 1) of the active runs at P, X of dtype " + dt +
         " (see gradstep._backends.state for the contract).")
            .c_str());
  m.def(("hessp_" + dt).c_str(), &hessp<T>, py::arg("X").noconvert(), py::arg("SW").noconvert(),
        py::arg("P").noconvert(), py::arg("V").noconvert(), py::arg("alpha").noconvert(),
        py::arg("active").noconvert(), py::arg("n_threads"),
        ("Hessian-vector products HV (K, d + 1) of the active runs' losses at P times V, X of "
         "dtype " +
         dt + " (see gradstep._backends.state for the contract).")
            .c_str());
  m.def(("softmax_loss_grad_" + dt).c_str(), &softmax_loss_grad<T>, py::arg("X").noconvert(),
        py::arg("labels").noconvert(), py::arg("SW").noconvert(), py::arg("P").noconvert(),
        py::arg("alpha").noconvert(), py::arg("rows").noconvert(), py::arg("active").noconvert(),
        py::arg("n_threads"), py::arg("denominator").noconvert(), py::arg("n_classes"),
        ("The multinomial loss (K,) and gradient (K, n_classes (d + 1)) of the active runs for "
         "labels in [0, n_classes), X of dtype " +
         dt + " (see gradstep._backends.softmax_reference for the contract).")
            .c_str());
  m.def(("curvature_run_" + dt).c_str(), &curvature_run<T>, py::arg("X").noconvert(),
        py::arg("Y").noconvert(), py::arg("SW").noconvert(), py::arg("spec"), py::arg("state"),
        py::arg("loop"), py::arg("n_steps"), py::arg("n_threads"),
        ("Up to n_steps iterations of the single lbfgs, armijo, bb or newton run (loop.kind) "
         "of state on the logistic loss (with spec.l1 > 0: OWL-QN, or armijo's proximal "
         "steps), X of dtype " +
         dt + " (lbfgs_loop.hpp, backtrack_loop.hpp; driver.CompiledCurvatureDriver).")
            .c_str());
  m.def(("softmax_curvature_run_" + dt).c_str(), &softmax_curvature_run<T>,
        py::arg("X").noconvert(), py::arg("labels").noconvert(), py::arg("SW").noconvert(),
        py::arg("spec"), py::arg("state"), py::arg("loop"), py::arg("n_steps"),
        py::arg("n_threads"), py::arg("n_classes"),
        ("As curvature_run_" + dt + " on the multinomial loss (labels in [0, n_classes)).")
            .c_str());
  m.def(("softmax_hessp_" + dt).c_str(), &softmax_hessp<T>, py::arg("X").noconvert(),
        py::arg("SW").noconvert(), py::arg("P").noconvert(), py::arg("V").noconvert(),
        py::arg("alpha").noconvert(), py::arg("active").noconvert(), py::arg("n_threads"),
        py::arg("n_classes"),
        ("The multinomial Hessian-vector products (K, n_classes (d + 1)) of the active runs, X "
         "of dtype " +
         dt + " (see gradstep._backends.softmax_reference for the contract).")
            .c_str());
  m.def(("run_" + dt).c_str(), &run<T>, py::arg("X").noconvert(), py::arg("Y").noconvert(),
        py::arg("SW").noconvert(), py::arg("spec"), py::arg("state"), py::arg("n_steps"),
        py::arg("n_threads"),
        ("Advances the running runs of a state.FitState in place by up to n_steps iterations "
         "under a state.RunSpec, X of dtype " +
         dt + " (see gradstep._backends.state for the contract).")
            .c_str());
}


// ---- CSR matrices (sparse_kernel.hpp) -----------------------------------------------------------
//
// data, indices and indptr come as they are in the SciPy matrix (gradstep.sparse.check_csr has
// accepted it: float32/float64 data, int32/int64 indices and indptr, each C-contiguous, indices in
// [0, n_cols) and sorted within rows, indptr non-decreasing): never copied. The cheap structural
// facts are checked again here (sizes, indptr[0] == 0, indptr[n] <= len(indices)), and the
// kernel's partition checks each used row's range, so no row is read outside the arrays; the
// O(nnz) index checks are check_csr's (or csr_structure_error's), or the kernel's own with
// check_rows (each used row's indices just before its walks).

template <class T>
bool is_carray(const py::array& a) {
  return carray<T>::check_(a);
}

template <class T>
carray<T> as_carray(const py::array& a) {
  return py::reinterpret_borrow<carray<T>>(a);
}

// The indptr array as a Matrix's indptr32 / indptr64 (held by the caller's reference).
template <class T, class I>
gradstep::csr::Matrix<T, I> csr_matrix(const carray<T>& data, const carray<I>& indices,
                                       const py::array& indptr, ssize_t n_cols) {
  require(data.ndim() == 1 && indices.ndim() == 1 && indptr.ndim() == 1,
          "data, indices and indptr must be 1-D");
  require(data.shape(0) == indices.shape(0),
          "data and indices must have the same length, got " + std::to_string(data.shape(0)) +
              " and " + std::to_string(indices.shape(0)));
  require(indptr.shape(0) >= 1, "indptr must have n_rows + 1 >= 1 entries");
  require(n_cols >= 0, "n_cols must be >= 0");
  gradstep::csr::Matrix<T, I> X;
  X.data = data.data();
  X.indices = indices.data();
  if (is_carray<std::int64_t>(indptr)) {
    X.indptr64 = as_carray<std::int64_t>(indptr).data();
  } else if (is_carray<std::int32_t>(indptr)) {
    X.indptr32 = as_carray<std::int32_t>(indptr).data();
  } else {
    throw py::type_error("indptr must be a C-contiguous int32 or int64 numpy array, got dtype " +
                         std::string(py::str(indptr.dtype())));
  }
  X.n = indptr.shape(0) - 1;
  X.d = n_cols;
  const std::ptrdiff_t first = X.at(0), end = X.at(X.n);
  require(first == 0 && end >= 0 && end <= indices.shape(0),
          "indptr must start at 0 and end at most at len(indices) = " +
              std::to_string(indices.shape(0)) + ", got " + std::to_string(first) + " ... " +
              std::to_string(end));
  return X;
}

// Calls fn(matrix) with the Matrix of the data's and indices' dtypes.
template <class F>
auto with_csr(const py::array& data, const py::array& indices, const py::array& indptr,
              ssize_t n_cols, F&& fn) {
  const bool f64 = is_carray<double>(data), f32 = is_carray<float>(data);
  const bool i64 = is_carray<std::int64_t>(indices), i32 = is_carray<std::int32_t>(indices);
  if (!f64 && !f32) {
    throw py::type_error("data must be a C-contiguous float32 or float64 numpy array, got dtype " +
                         std::string(py::str(data.dtype())));
  }
  if (!i64 && !i32) {
    throw py::type_error("indices must be a C-contiguous int32 or int64 numpy array, got dtype " +
                         std::string(py::str(indices.dtype())));
  }
  if (f64 && i32) {
    return fn(
        csr_matrix(as_carray<double>(data), as_carray<std::int32_t>(indices), indptr, n_cols));
  }
  if (f64) {
    return fn(
        csr_matrix(as_carray<double>(data), as_carray<std::int64_t>(indices), indptr, n_cols));
  }
  if (i32) {
    return fn(csr_matrix(as_carray<float>(data), as_carray<std::int32_t>(indices), indptr, n_cols));
  }
  return fn(csr_matrix(as_carray<float>(data), as_carray<std::int64_t>(indices), indptr, n_cols));
}


ssize_t csr_runs(const carray<double>& P, ssize_t d, const char* name = "P") {
  require(P.ndim() == 2 && P.shape(1) == d + 1,
          std::string(name) + " must have shape (K, d + 1) = (K, " + std::to_string(d + 1) +
              "), got " + shape_of(P));
  return P.shape(0);
}

py::tuple csr_loss_grad(const py::array& data, const py::array& indices, const py::array& indptr,
                        ssize_t n_cols, const carray<double>& Y, const carray<double>& SW,
                        const carray<double>& P, const carray<double>& alpha,
                        const carray<std::int64_t>& rows, const carray<std::uint8_t>& active,
                        int n_threads, const carray<double>& denominator, bool check_rows) {
  return with_csr(data, indices, indptr, n_cols, [&](const auto& X) {
    using Matrix = std::decay_t<decltype(X)>;
    const ssize_t K = csr_runs(P, X.d), D = P.shape(1);
    require_targets(&Y, SW, X.n, K);
    require_run_arrays(alpha, active, rows, denominator, K, X.n);
    require_threads(n_threads);
    const ssize_t n_rows = rows.shape(0);
    const std::int64_t* rp = rows.data();
    carray<double> loss(K);
    carray<double> G({K, D});
    double* lp = loss.mutable_data();
    double* gp = G.mutable_data();
    const double* pp = P.data();
    const double* alp = alpha.data();
    const std::uint8_t* ap = active.data();
    const double* den = denominator.shape(0) ? denominator.data() : nullptr;
    const double* sw = SW.shape(1) ? SW.data() : nullptr;
    {
      py::gil_scoped_release release;
      gradstep::csr::Engine<typename Matrix::value_type, typename Matrix::index_type> engine(
          X, Y.data(), Y.shape(1), sw, SW.shape(1), K);
      engine.loss_grad(pp, alp, n_rows ? rp : nullptr, n_rows, ap, n_threads, lp, gp, den,
                       check_rows);
    }
    return py::make_tuple(loss, G);
  });
}

py::array csr_hessp(const py::array& data, const py::array& indices, const py::array& indptr,
                    ssize_t n_cols, const carray<double>& SW, const carray<double>& P,
                    const carray<double>& V, const carray<double>& alpha,
                    const carray<std::uint8_t>& active, int n_threads, bool check_rows) {
  return with_csr(data, indices, indptr, n_cols, [&](const auto& X) -> py::array {
    const ssize_t K = csr_runs(P, X.d), D = P.shape(1);
    require_targets(nullptr, SW, X.n, K);
    require_shape(V, "V", {K, D});
    require_shape(alpha, "alpha", {K});
    require_shape(active, "active", {K});
    require_threads(n_threads);
    carray<double> HV({K, D});
    double* hp = HV.mutable_data();
    const double* pp = P.data();
    const double* vp = V.data();
    const double* alp = alpha.data();
    const std::uint8_t* ap = active.data();
    const double* sw = SW.shape(1) ? SW.data() : nullptr;
    {
      py::gil_scoped_release release;
      using Matrix = std::decay_t<decltype(X)>;
      gradstep::csr::Engine<typename Matrix::value_type, typename Matrix::index_type> engine(
          X, nullptr, 1, sw, SW.shape(1), K);
      engine.hessp(pp, vp, alp, ap, n_threads, hp, check_rows);
    }
    return std::move(HV);
  });
}

// The first-order fit loops (fit.hpp) over a CSR matrix whose structure is proven
// (gradstep.sparse.check_csr); the other arguments as run's.
void csr_run(const py::array& data, const py::array& indices, const py::array& indptr,
             ssize_t n_cols, const carray<double>& Y, const carray<double>& SW,
             const py::object& spec_obj, const py::object& state_obj, std::int64_t n_steps,
             int n_threads) {
  with_csr(data, indices, indptr, n_cols, [&](const auto& X) {
    using Matrix = std::decay_t<decltype(X)>;
    using Fit = gradstep::CsrFit<typename Matrix::value_type, typename Matrix::index_type>;
    carray<double> P = array_attribute<double>(state_obj, "state", "P", true);
    const ssize_t K = csr_runs(P, X.d, "state.P"), D = P.shape(1);
    require_targets(&Y, SW, X.n, K);
    require(X.n > 0, "X has no rows");
    require_threads(n_threads);
    const Fit fit{X, Y.data(), Y.shape(1), SW.shape(1) ? SW.data() : nullptr, SW.shape(1)};
    first_order_run(spec_obj, state_obj, P, K, D,
                    [&](const gradstep::RunSpec& spec, gradstep::FitState& st) {
                      gradstep::run(fit, K, spec, st, n_steps, n_threads);
                    });
  });
}

// The multinomial CSR kernels: the binary engine over each run's C classes as C consecutive
// runs (sparse_kernel.hpp): P (K, C (d + 1)) is read as (K C, d + 1), the K runs' alpha, active
// and denominator are repeated over their classes, and a run's loss is its classes' sum.
struct SoftmaxRuns {
  ssize_t K, C;
  std::vector<double> alpha, denominator;
  std::vector<std::uint8_t> active;

  SoftmaxRuns(const carray<double>& P, ssize_t d, ssize_t n_classes, const char* name,
              const carray<double>& alpha_k, const carray<std::uint8_t>& active_k)
      : C(n_classes) {
    require(C >= 2, "n_classes must be at least 2, got " + std::to_string(C));
    require(P.ndim() == 2 && P.shape(1) == C * (d + 1),
            std::string(name) + " must have shape (K, n_classes (d + 1)) = (K, " +
                std::to_string(C * (d + 1)) + "), got " + shape_of(P));
    K = P.shape(0);
    require_shape(alpha_k, "alpha", {K});
    require_shape(active_k, "active", {K});
    for (ssize_t k = 0; k < K; ++k) {
      alpha.insert(alpha.end(), static_cast<std::size_t>(C), alpha_k.data()[k]);
      active.insert(active.end(), static_cast<std::size_t>(C), active_k.data()[k]);
    }
  }

  // denominator_k: (0,) or (K,), checked by the caller
  void repeat_denominator(const carray<double>& denominator_k) {
    for (ssize_t k = 0; k < denominator_k.shape(0); ++k) {
      denominator.insert(denominator.end(), static_cast<std::size_t>(C), denominator_k.data()[k]);
    }
  }
};

py::tuple csr_softmax_loss_grad(const py::array& data, const py::array& indices,
                                const py::array& indptr, ssize_t n_cols,
                                const carray<std::int64_t>& labels, const carray<double>& SW,
                                const carray<double>& P, const carray<double>& alpha,
                                const carray<std::int64_t>& rows,
                                const carray<std::uint8_t>& active, int n_threads,
                                const carray<double>& denominator, ssize_t n_classes,
                                bool check_rows) {
  return with_csr(data, indices, indptr, n_cols, [&](const auto& X) {
    using Matrix = std::decay_t<decltype(X)>;
    SoftmaxRuns runs(P, X.d, n_classes, "P", alpha, active);
    const ssize_t K = runs.K, C = runs.C;
    require_run_arrays(alpha, active, rows, denominator, K, X.n);
    runs.repeat_denominator(denominator);
    require_labels(labels, X.n, C);
    require_targets(nullptr, SW, X.n, K);
    require_threads(n_threads);
    const ssize_t n_rows = rows.shape(0);
    std::vector<double> class_loss(static_cast<std::size_t>(K * C));
    carray<double> G({K, P.shape(1)});
    {
      py::gil_scoped_release release;
      gradstep::csr::Engine<typename Matrix::value_type, typename Matrix::index_type> engine(
          X, nullptr, 1, SW.shape(1) ? SW.data() : nullptr, SW.shape(1), K * C, labels.data(),
          C);
      engine.loss_grad(P.data(), runs.alpha.data(), n_rows ? rows.data() : nullptr, n_rows,
                       runs.active.data(), n_threads, class_loss.data(), G.mutable_data(),
                       runs.denominator.empty() ? nullptr : runs.denominator.data(), check_rows);
    }
    carray<double> loss(K);
    double* lp = loss.mutable_data();
    for (ssize_t k = 0; k < K; ++k) {  // the first class holds the loss, the others a penalty
      double sum = 0.0;
      for (ssize_t c = 0; c < C; ++c) sum += class_loss[static_cast<std::size_t>(k * C + c)];
      lp[k] = sum;
    }
    return py::make_tuple(loss, G);
  });
}

py::array csr_softmax_hessp(const py::array& data, const py::array& indices,
                            const py::array& indptr, ssize_t n_cols, const carray<double>& SW,
                            const carray<double>& P, const carray<double>& V,
                            const carray<double>& alpha, const carray<std::uint8_t>& active,
                            int n_threads, ssize_t n_classes, bool check_rows) {
  return with_csr(data, indices, indptr, n_cols, [&](const auto& X) -> py::array {
    using Matrix = std::decay_t<decltype(X)>;
    SoftmaxRuns runs(P, X.d, n_classes, "P", alpha, active);
    const ssize_t K = runs.K, C = runs.C;
    require_shape(V, "V", {K, P.shape(1)});
    require_targets(nullptr, SW, X.n, K);
    require_threads(n_threads);
    carray<double> HV({K, P.shape(1)});
    {
      py::gil_scoped_release release;
      gradstep::csr::Engine<typename Matrix::value_type, typename Matrix::index_type> engine(
          X, nullptr, 1, SW.shape(1) ? SW.data() : nullptr, SW.shape(1), K * C, nullptr, C);
      engine.hessp(P.data(), V.data(), runs.alpha.data(), runs.active.data(), n_threads,
                   HV.mutable_data(), check_rows);
    }
    return std::move(HV);
  });
}

// The compiled curvature loops (lbfgs_loop.hpp, backtrack_loop.hpp) of one run over a CSR matrix
// whose structure is proven (its rows' indices are not checked): as curvature_run_float64
// otherwise. On CSR data the Python driver's round (~1 ms at d = 20,000: NumPy on d-vectors, the
// generator, the line search) was ~10 % of an lbfgs iteration.
void csr_curvature_run(const py::array& data, const py::array& indices, const py::array& indptr,
                       ssize_t n_cols, const carray<double>& Y, const carray<double>& SW,
                       const py::object& spec_obj, const py::object& state_obj,
                       const py::object& loop_obj, std::int64_t n_steps, int n_threads) {
  with_csr(data, indices, indptr, n_cols, [&](const auto& X) {
    using Matrix = std::decay_t<decltype(X)>;
    const ssize_t D = X.d + 1;
    CurvatureArgs a = curvature_args(spec_obj, state_obj, loop_obj, D);
    require_targets(&Y, SW, X.n, 1);
    require(X.n > 0, "X has no rows");
    require_threads(n_threads);
    py::gil_scoped_release release;
    gradstep::csr::Engine<typename Matrix::value_type, typename Matrix::index_type> engine(
        X, Y.data(), Y.shape(1), SW.shape(1) ? SW.data() : nullptr, SW.shape(1), 1);
    iterate_binary_curvature(a, engine, D, n_steps, n_threads);
  });
}

// The same for the multinomial loss: labels (n,) in [0, n_classes), P (1, C (d + 1)); the CSR
// engine's C classes as C runs (csr_softmax_loss_grad).
void csr_softmax_curvature_run(const py::array& data, const py::array& indices,
                               const py::array& indptr, ssize_t n_cols,
                               const carray<std::int64_t>& labels, const carray<double>& SW,
                               const py::object& spec_obj, const py::object& state_obj,
                               const py::object& loop_obj, std::int64_t n_steps, int n_threads,
                               ssize_t n_classes) {
  with_csr(data, indices, indptr, n_cols, [&](const auto& X) {
    using Matrix = std::decay_t<decltype(X)>;
    require(n_classes >= 2, "n_classes must be at least 2, got " + std::to_string(n_classes));
    const ssize_t d = X.d, C = n_classes, D = C * (d + 1);
    CurvatureArgs a = curvature_args(spec_obj, state_obj, loop_obj, D);
    require(X.n > 0, "X has no rows");
    require_labels(labels, X.n, C);
    require_targets(nullptr, SW, X.n, 1);
    require_threads(n_threads);
    py::gil_scoped_release release;
    gradstep::csr::Engine<typename Matrix::value_type, typename Matrix::index_type> engine(
        X, nullptr, 1, SW.shape(1) ? SW.data() : nullptr, SW.shape(1), C, labels.data(), C);
    const std::vector<std::uint8_t> active(static_cast<std::size_t>(C), 1);
    const std::vector<double> alpha(static_cast<std::size_t>(C), a.spec.alpha[0]);
    std::vector<double> class_loss(static_cast<std::size_t>(C));
    const bool fit_intercept = a.spec.fit_intercept;
    auto oracle = [&](const double* p, double* g) {
      engine.compute(p, alpha.data(), nullptr, 0, active.data(), n_threads, class_loss.data(), g);
      if (!fit_intercept) zero_intercepts(g, C, d);
      double loss = 0.0;  // the first class holds the loss, the others a penalty
      for (const double l : class_loss) loss += l;
      return loss;
    };
    auto hessp = [&](const double* p, const double* v, double* hv) {
      engine.hessp(p, v, alpha.data(), active.data(), n_threads, hv);
      if (!fit_intercept) zero_intercepts(hv, C, d);
    };
    iterate_curvature(a, oracle, hessp, D, n_steps);
  });
}

template <class I>
py::tuple structure_error_of(const carray<I>& indices, const py::array& indptr, ssize_t n_cols,
                             int n_threads) {
  const ssize_t n_rows = indptr.shape(0) - 1;
  std::pair<int, std::ptrdiff_t> result;
  if (is_carray<std::int64_t>(indptr)) {
    const std::int64_t* ip = as_carray<std::int64_t>(indptr).data();
    py::gil_scoped_release release;
    result = gradstep::csr::structure_error(ip, n_rows, indices.data(), n_cols, n_threads);
  } else {
    const std::int32_t* ip = as_carray<std::int32_t>(indptr).data();
    py::gil_scoped_release release;
    result = gradstep::csr::structure_error(ip, n_rows, indices.data(), n_cols, n_threads);
  }
  return py::make_tuple(result.first, result.second);
}

py::tuple csr_structure_error(const py::array& indptr, const py::array& indices, ssize_t n_cols,
                              int n_threads) {
  require(indptr.ndim() == 1 && indptr.shape(0) >= 1 && indices.ndim() == 1,
          "indptr and indices must be 1-D, indptr with n_rows + 1 >= 1 entries");
  if (!is_carray<std::int64_t>(indptr) && !is_carray<std::int32_t>(indptr)) {
    throw py::type_error("indptr must be a C-contiguous int32 or int64 numpy array, got dtype " +
                         std::string(py::str(indptr.dtype())));
  }
  auto first_last = [&](ssize_t i) -> std::int64_t {
    return is_carray<std::int64_t>(indptr) ? as_carray<std::int64_t>(indptr).data()[i]
                                           : as_carray<std::int32_t>(indptr).data()[i];
  };
  require(first_last(0) == 0 && first_last(indptr.shape(0) - 1) <= indices.shape(0),
          "indptr must start at 0 and end at most at len(indices)");
  if (is_carray<std::int64_t>(indices)) {
    return structure_error_of(as_carray<std::int64_t>(indices), indptr, n_cols, n_threads);
  }
  if (is_carray<std::int32_t>(indices)) {
    return structure_error_of(as_carray<std::int32_t>(indices), indptr, n_cols, n_threads);
  }
  throw py::type_error("indices must be a C-contiguous int32 or int64 numpy array, got dtype " +
                       std::string(py::str(indices.dtype())));
}

void bind_csr(py::module_& m) {
  m.def("csr_loss_grad", &csr_loss_grad, py::arg("data"), py::arg("indices"), py::arg("indptr"),
        py::arg("n_cols"), py::arg("Y").noconvert(), py::arg("SW").noconvert(),
        py::arg("P").noconvert(), py::arg("alpha").noconvert(), py::arg("rows").noconvert(),
        py::arg("active").noconvert(), py::arg("n_threads"), py::arg("denominator").noconvert(),
        py::arg("check_rows") = false,
        "Loss (K,) and gradient (K, d + 1) of the active runs at P for the CSR matrix (data, "
        "indices, indptr) with n_cols columns (see gradstep._backends.sparse_reference). "
        "check_rows: check each used row's column indices first (ValueError on a bad row).");
  m.def("csr_softmax_loss_grad", &csr_softmax_loss_grad, py::arg("data"), py::arg("indices"),
        py::arg("indptr"), py::arg("n_cols"), py::arg("labels").noconvert(),
        py::arg("SW").noconvert(), py::arg("P").noconvert(), py::arg("alpha").noconvert(),
        py::arg("rows").noconvert(), py::arg("active").noconvert(), py::arg("n_threads"),
        py::arg("denominator").noconvert(), py::arg("n_classes"), py::arg("check_rows") = false,
        "The multinomial loss (K,) and gradient (K, n_classes (d + 1)) of the active runs for "
        "integer labels in [0, n_classes) (see gradstep._backends.softmax_reference), in one pass "
        "over the CSR matrix's nonzeros; the other arguments as csr_loss_grad's.");
  m.def("csr_softmax_hessp", &csr_softmax_hessp, py::arg("data"), py::arg("indices"),
        py::arg("indptr"), py::arg("n_cols"), py::arg("SW").noconvert(),
        py::arg("P").noconvert(), py::arg("V").noconvert(), py::arg("alpha").noconvert(),
        py::arg("active").noconvert(), py::arg("n_threads"), py::arg("n_classes"),
        py::arg("check_rows") = false,
        "The multinomial Hessian-vector products (K, n_classes (d + 1)) of the active runs "
        "(see gradstep._backends.softmax_reference), one pass; as csr_hessp otherwise.");
  m.def("csr_hessp", &csr_hessp, py::arg("data"), py::arg("indices"), py::arg("indptr"),
        py::arg("n_cols"), py::arg("SW").noconvert(), py::arg("P").noconvert(),
        py::arg("V").noconvert(), py::arg("alpha").noconvert(), py::arg("active").noconvert(),
        py::arg("n_threads"), py::arg("check_rows") = false,
        "Hessian-vector products HV (K, d + 1) of the active runs at P times V for the CSR "
        "matrix (data, indices, indptr) (see gradstep._backends.sparse_reference); check_rows "
        "as csr_loss_grad's.");
  m.def("csr_run", &csr_run, py::arg("data"), py::arg("indices"), py::arg("indptr"),
        py::arg("n_cols"), py::arg("Y").noconvert(), py::arg("SW").noconvert(),
        py::arg("spec"), py::arg("state"), py::arg("n_steps"), py::arg("n_threads"),
        "The first-order fit loops over a CSR matrix whose structure is proven (its rows' "
        "indices are not checked): as run_float64 otherwise.");
  m.def("csr_curvature_run", &csr_curvature_run, py::arg("data"), py::arg("indices"),
        py::arg("indptr"), py::arg("n_cols"), py::arg("Y").noconvert(), py::arg("SW").noconvert(),
        py::arg("spec"), py::arg("state"), py::arg("loop"), py::arg("n_steps"),
        py::arg("n_threads"),
        "The compiled curvature loops over a CSR matrix whose structure is proven (its rows' "
        "indices are not checked): as curvature_run_float64 otherwise.");
  m.def("csr_softmax_curvature_run", &csr_softmax_curvature_run, py::arg("data"),
        py::arg("indices"), py::arg("indptr"), py::arg("n_cols"), py::arg("labels").noconvert(),
        py::arg("SW").noconvert(), py::arg("spec"), py::arg("state"), py::arg("loop"),
        py::arg("n_steps"), py::arg("n_threads"), py::arg("n_classes"),
        "The compiled curvature loops of the multinomial loss over a CSR matrix whose structure "
        "is proven: as softmax_curvature_run_float64 otherwise.");
  m.def("csr_structure_error", &csr_structure_error, py::arg("indptr"), py::arg("indices"),
        py::arg("n_cols"), py::arg("n_threads") = 1,
        "(code, row): sparse_reference.structure_error without temporaries; its screen on up "
        "to n_threads threads.");
}

// The set_kernel / set_row_order bindings: select(name) (a ValueError naming the choices for a
// bad one), returning the name in use before.
template <class Current, class Select>
std::string select_by_name(const std::string& name, Current current, Select select) {
  const std::string before = current();
  try {
    select(name);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return before;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "gradstep's compiled core: fused logistic loss + gradient and Hessian-vector products for "
      "K runs, and the first-order fit loops";
  // Before any thread can use the core: the thread pool's fork handlers (a child forked while
  // another thread is inside ThreadPool::instance() must not inherit its lock held), and the
  // kernel choice (a function-local static, whose first initialization takes a lock too).
  gradstep::ThreadPool::install_fork_handlers();
  (void)gradstep::current_kernel();
  bind_dtype<float>(m, "float32");
  bind_dtype<double>(m, "float64");
  bind_csr(m);
  m.def("rule_codes", [] {
          py::dict codes;
          for (const gradstep::Rule& r : gradstep::kRules) codes[py::str(r.name)] = r.code;
          return codes;
        },
        "The compiled step rules, {name: code}: the codes spec.rule_code may hold.");
  m.def("kernel", [] { return std::string(gradstep::kernel_name(gradstep::current_kernel())); },
        "The instruction set of the kernels in use: 'avx512', 'avx2' or 'baseline'.");
  m.def("kernels", [] {
          py::list names;
          for (gradstep::Kernel k : gradstep::available_kernels()) {
            names.append(gradstep::kernel_name(k));
          }
          return names;
        },
        "The kernels this CPU and build can run.");
  m.def("link", [](const carray<double>& z) {
          carray<double> l(z.size()), s(z.size());
          gradstep::run_link(z.data(), z.size(), l.mutable_data(), s.mutable_data());
          return py::make_tuple(l, s);
        },
        py::arg("z").noconvert(),
        "log(1 + exp(z)) and sigmoid(z) for a 1-D float64 z, by the vectorized exp and log1p of "
        "the gradient kernel's link; for accuracy tests (link_terms gives the kernel's own "
        "per-row terms).");
  m.def("link_terms", [](const carray<double>& z, const carray<double>& y) {
          require(z.ndim() == 1 && y.ndim() == 1 && y.shape(0) == z.shape(0),
                  "z and y must be 1-D arrays of the same length");
          const ssize_t n = z.shape(0);
          carray<double> l(n), r(n), h(n);
          gradstep::run_terms(z.data(), y.data(), n, l.mutable_data(), r.mutable_data(),
                              h.mutable_data());
          return py::make_tuple(l, r, h);
        },
        py::arg("z").noconvert(), py::arg("y").noconvert(),
        "The gradient kernel's per-row terms for 1-D float64 z and 0/1 targets y: the loss "
        "log(1 + exp(z)) - y z, the residual sigmoid(z) - y and the Hessian weight "
        "sigmoid(z)(1 - sigmoid(z)), four at a time by the vector link and the last n % 4 by the "
        "scalar one, as in the kernel; for accuracy tests.");
  m.def("all_zero_one", [](const carray<double>& a, int n_threads) {
          const double* p = a.data();
          const std::ptrdiff_t n = a.size();
          py::gil_scoped_release release;
          return gradstep::all_zero_one(p, n, n_threads);
        },
        py::arg("a").noconvert(), py::arg("n_threads"),
        "Whether every value of a C-contiguous float64 array is 0.0 or 1.0 (so none is NaN or "
        "infinite): the 0/1 target check of gs.loss_and_grad and gs.fit, one pass on up to "
        "n_threads threads.");
  m.def("two_loop_rows",
        [](const carray<double>& g, const carray<double>& memory, const carray<std::int64_t>& order,
           const carray<double>& rho, const carray<double>& gamma, ssize_t oldest) {
          require(g.ndim() == 2, "g must be 2-D (runs, D), got shape " + shape_of(g));
          const ssize_t r = g.shape(0), D = g.shape(1);
          require(memory.ndim() == 3 && memory.shape(0) == r && memory.shape(1) % 2 == 0 &&
                      memory.shape(2) == D,
                  "memory must have shape (runs, 2m, D) with g's runs and D, got " +
                      shape_of(memory));
          const ssize_t m = memory.shape(1) / 2;
          require_shape(order, "order", {r, m});
          require_shape(rho, "rho", {r, m});
          require_shape(gamma, "gamma", {r});
          require(oldest >= 0 && oldest <= m, "oldest must be in [0, m]");
          const std::int64_t* o = order.data();
          for (ssize_t e = 0; e < r * m; ++e) {
            require(o[e] >= 0 && o[e] < m, "order's slots must be in [0, m)");
          }
          carray<double> q({r, D});
          std::vector<double> alphas(static_cast<std::size_t>(m));
          {
            py::gil_scoped_release release;
            gradstep::two_loop_rows(g.data(), r, D, memory.data(), m, o, rho.data(),
                                    gamma.data(), oldest, alphas.data(), q.mutable_data());
          }
          return q;
        },
        py::arg("g").noconvert(), py::arg("memory").noconvert(), py::arg("order").noconvert(),
        py::arg("rho").noconvert(), py::arg("gamma").noconvert(), py::arg("oldest"),
        "The L-BFGS two-loop recursion of each row of g (runs, D) with its own pairs: "
        "gradstep.rules.curvature._two_loop_rows compiled (C-contiguous float64 arrays, order "
        "int64; slots before `oldest` skipped).");
  m.def("accept_rows",
        [](const carray<double>& f, const carray<double>& G, const carray<double>& d,
           const carray<double>& f0, const carray<double>& t0, const carray<double>& slope0,
           double c1, double c2) {
          require(G.ndim() == 2, "G must be 2-D (runs, D), got shape " + shape_of(G));
          const ssize_t r = G.shape(0), D = G.shape(1);
          require_shape(d, "d", {r, D});
          require_shape(f, "f", {r});
          require_shape(f0, "f0", {r});
          require_shape(t0, "t0", {r});
          require_shape(slope0, "slope0", {r});
          py::array_t<bool> accept(r);
          auto* out = reinterpret_cast<std::uint8_t*>(accept.mutable_data());
          gradstep::accept_rows(f.data(), G.data(), d.data(), f0.data(), t0.data(), slope0.data(),
                                r, D, c1, c2, out);
          return accept;
        },
        py::arg("f").noconvert(), py::arg("G").noconvert(), py::arg("d").noconvert(),
        py::arg("f0").noconvert(), py::arg("t0").noconvert(), py::arg("slope0").noconvert(),
        py::arg("c1"), py::arg("c2"),
        "strong_wolfe's first test of each run's first trial, row by row (LBFGSRuns.receive; "
        "gradstep.rules.curvature._accept_rows_numpy compiled): a bool array (runs,).");
  m.def("push_pairs_rows",
        [](const carray<std::int64_t>& rows, const carray<double>& Q, const carray<double>& G,
           const carray<double>& P, const carray<double>& Gold, carray<double> memory,
           carray<std::int64_t> head, carray<double> rho, carray<double> gamma,
           carray<std::int64_t> n_pairs, double eps) {  // by value: views, written in place
          require(P.ndim() == 2, "P must be 2-D (runs, D), got shape " + shape_of(P));
          const ssize_t runs = P.shape(0), D = P.shape(1);
          require(rows.ndim() == 1, "rows must be 1-D");
          const ssize_t n = rows.shape(0);
          require_shape(Q, "Q", {n, D});
          require_shape(G, "G", {n, D});
          require_shape(Gold, "Gold", {runs, D});
          require(memory.ndim() == 3 && memory.shape(0) == runs && memory.shape(1) % 2 == 0 &&
                      memory.shape(1) > 0 && memory.shape(2) == D,
                  "memory must have shape (runs, 2m, D) with P's runs and D, got " +
                      shape_of(memory));
          const ssize_t m = memory.shape(1) / 2;
          require_shape(rho, "rho", {runs, m});
          require_shape(head, "head", {runs});
          require_shape(gamma, "gamma", {runs});
          require_shape(n_pairs, "n_pairs", {runs});
          const std::int64_t* rw = rows.data();
          const std::int64_t* hd = head.data();
          std::vector<bool> seen(static_cast<std::size_t>(runs), false);
          for (ssize_t i = 0; i < n; ++i) {
            require(rw[i] >= 0 && rw[i] < runs, "rows must be in [0, runs)");
            require(!seen[static_cast<std::size_t>(rw[i])], "rows must be distinct");
            seen[static_cast<std::size_t>(rw[i])] = true;
            require(hd[rw[i]] >= 0 && hd[rw[i]] < m, "head's slots must be in [0, m)");
          }
          gradstep::push_pairs_rows(rw, n, Q.data(), G.data(), P.data(), Gold.data(), D,
                                    memory.mutable_data(), m, head.mutable_data(),
                                    rho.mutable_data(), gamma.mutable_data(),
                                    n_pairs.mutable_data(), eps);
        },
        py::arg("rows").noconvert(), py::arg("Q").noconvert(), py::arg("G").noconvert(),
        py::arg("P").noconvert(), py::arg("Gold").noconvert(), py::arg("memory").noconvert(),
        py::arg("head").noconvert(), py::arg("rho").noconvert(), py::arg("gamma").noconvert(),
        py::arg("n_pairs").noconvert(), py::arg("eps"),
        "The new (s, y) pairs of the runs in rows pushed into their rings in place, where s'y > "
        "eps y'y (LBFGSRuns._finish's pair step compiled; int64 rows, head and n_pairs).");
  m.def("_hold_pool_lock", [](double seconds) {
          py::gil_scoped_release release;
          gradstep::ThreadPool::hold_instance_lock_for(seconds);
        },
        py::arg("seconds"),
        "For tests: holds the thread pool's instance lock for `seconds` (GIL released), as a "
        "thread inside ThreadPool::instance() does for a moment.");
  m.def("row_order", [] { return std::string(gradstep::row_order_name(gradstep::current_row_order())); },
        "The order in which the dense gradient and Hessian product read each group of four rows: "
        "'auto', 'rowwise' or 'interleaved' (block_kernel.hpp, RowOrder).");
  m.def("set_row_order", [](const std::string& name) {
          return select_by_name(name, [] { return gradstep::row_order_name(gradstep::current_row_order()); },
                                gradstep::select_row_order);
        },
        py::arg("name"),
        "Selects the dense kernels' row order ('auto', 'rowwise' or 'interleaved') for tests and "
        "benchmarks; returns the previous one. Either order gives the same bits.");
  m.def("set_kernel", [](const std::string& name) {
          return select_by_name(name, [] { return gradstep::kernel_name(gradstep::current_kernel()); },
                                gradstep::select_kernel);
        },
        py::arg("name"),
        "Selects the kernels ('baseline', 'avx2' or 'avx512') for tests and benchmarks; returns "
        "the previous one. Not thread-safe: call it while no fit is running.");
}
