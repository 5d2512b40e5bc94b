// gradstep._core: bindings only. The computation lives in cpp/include/gradstep/*.hpp.
//
// Arrays are taken as py::array_t<T, c_style> with noconvert(): Python (gradstep._validate) has
// already produced the exact dtype and layout, so an array of another dtype or layout is a bug
// upstream and must raise a TypeError here, never be copied silently. Shapes are checked (cheaply)
// so that a wrong call raises instead of reading out of bounds. Every pointer and size is read
// while the GIL is held; the GIL is then released around the whole computation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradstep/fit.hpp"
#include "gradstep/logistic.hpp"
#include "gradstep/rules.hpp"
#include "gradstep/shuffle.hpp"
#include "gradstep/thread_pool.hpp"

namespace py = pybind11;
using py::ssize_t;

namespace {

template <class T>
using carray = py::array_t<T, py::array::c_style>;

void require(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}

template <class A>
std::string shape_of(const A& a) {
  std::string s = "(";
  for (ssize_t i = 0; i < a.ndim(); ++i) {
    s += std::to_string(a.shape(i));
    s += a.ndim() == 1 ? "," : (i + 1 < a.ndim() ? ", " : "");
  }
  return s + ")";
}

template <class A>
void require_shape(const A& a, const char* name, std::vector<ssize_t> shape) {
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
    throw py::value_error(std::string(name) + " must have shape " + want + ")" + ", got " +
                          shape_of(a));
  }
}

// X, Y and sw as the kernel's Dataset, after checking that they fit together.
template <class T>
gradstep::Dataset<T> dataset(const carray<T>& X, const carray<double>& Y, const carray<double>& sw,
                             ssize_t K) {
  require(X.ndim() == 2, "X must be 2-D, got shape " + shape_of(X));
  const ssize_t n = X.shape(0), d = X.shape(1);
  require(Y.ndim() == 2 && Y.shape(0) == n && (Y.shape(1) == 1 || Y.shape(1) == K),
          "Y must have shape (" + std::to_string(n) + ", 1) or (" + std::to_string(n) + ", " +
              std::to_string(K) + "), got " + shape_of(Y));
  require(sw.ndim() == 1 && (sw.shape(0) == 0 || sw.shape(0) == n),
          "sw must have shape (0,) or (" + std::to_string(n) + ",), got " + shape_of(sw));
  gradstep::Dataset<T> data;
  data.X = X.data();
  data.n = n;
  data.d = d;
  data.Y = Y.data();
  data.ky = Y.shape(1);
  data.sw = sw.shape(0) ? sw.data() : nullptr;
  return data;
}

template <class T>
py::tuple loss_grad(const carray<T>& X, const carray<double>& Y, const carray<double>& sw,
                    const carray<double>& P, double alpha, const carray<std::int64_t>& rows,
                    const carray<std::uint8_t>& active, int n_threads) {
  require(P.ndim() == 2 && X.ndim() == 2 && P.shape(1) == X.shape(1) + 1,
          "P must have shape (K, d + 1), got " + shape_of(P));
  const ssize_t K = P.shape(0), D = P.shape(1);
  const gradstep::Dataset<T> data = dataset(X, Y, sw, K);
  require_shape(active, "active", {K});
  require(rows.ndim() == 1, "rows must be 1-D, got shape " + shape_of(rows));
  require(n_threads >= 1, "n_threads must be >= 1, got " + std::to_string(n_threads));
  const ssize_t n_rows = rows.shape(0);
  const std::int64_t* rp = rows.data();
  for (ssize_t j = 0; j < n_rows; ++j) {
    require(rp[j] >= 0 && rp[j] < data.n, "rows[" + std::to_string(j) + "] = " +
                                              std::to_string(rp[j]) + " is out of range [0, " +
                                              std::to_string(data.n) + ")");
  }
  carray<double> loss(K);
  carray<double> G({K, D});
  double* lp = loss.mutable_data();
  double* gp = G.mutable_data();
  const double* pp = P.data();
  const std::uint8_t* ap = active.data();
  {
    py::gil_scoped_release release;
    gradstep::GradientEngine<T> engine(data, K);
    engine.compute(pp, alpha, n_rows ? rp : nullptr, n_rows, ap, n_threads, lp, gp);
  }
  return py::make_tuple(loss, G);
}

template <class T>
void run(const carray<T>& X, const carray<double>& Y, const carray<double>& sw,
         const carray<std::int64_t>& rule_code, const carray<std::int64_t>& sched_code,
         const carray<double>& hyper, double alpha, bool fit_intercept, double tol,
         std::int64_t batch_size, std::uint64_t seed, std::int64_t max_iter,
         std::int64_t total_updates, bool record_history, bool has_reference, carray<double>& P,
         carray<double>& slots, carray<double>& grad, carray<double>& loss,
         carray<std::int64_t>& t, carray<std::int64_t>& n_iter, carray<std::int64_t>& status,
         carray<double>& best_loss, carray<std::int64_t>& no_improve,
         carray<std::int64_t>& epoch, carray<double>& history, const carray<double>& reference,
         std::int64_t n_steps, int n_threads) {
  require(P.ndim() == 2 && X.ndim() == 2 && P.shape(1) == X.shape(1) + 1,
          "P must have shape (K, d + 1), got " + shape_of(P));
  const ssize_t K = P.shape(0), D = P.shape(1);
  const gradstep::Dataset<T> data = dataset(X, Y, sw, K);
  require(data.n > 0, "X has no rows");
  require_shape(rule_code, "rule_code", {K});
  require_shape(sched_code, "sched_code", {K});
  require_shape(hyper, "hyper", {K, gradstep::kNHyper});
  require_shape(slots, "slots", {K, gradstep::kNSlots, D});
  require_shape(grad, "grad", {K, D});
  require_shape(loss, "loss", {K});
  require_shape(t, "t", {K});
  require_shape(n_iter, "n_iter", {K});
  require_shape(status, "status", {K});
  require_shape(best_loss, "best_loss", {K});
  require_shape(no_improve, "no_improve", {K});
  require_shape(epoch, "epoch", {1});
  require(history.ndim() == 3 && history.shape(0) == gradstep::kNHistory && history.shape(1) == K,
          "history must have shape (5, K, H), got " + shape_of(history));
  require_shape(reference, "reference", {K, D});
  require(batch_size >= 0, "batch_size must be >= 0, got " + std::to_string(batch_size));
  require(n_threads >= 1, "n_threads must be >= 1, got " + std::to_string(n_threads));
  const std::int64_t* rc = rule_code.data();
  const std::int64_t* sc = sched_code.data();
  for (ssize_t k = 0; k < K; ++k) {
    require(gradstep::valid_rule(rc[k]), "unknown rule code " + std::to_string(rc[k]));
    require(gradstep::valid_schedule(sc[k]), "unknown schedule code " + std::to_string(sc[k]));
  }

  gradstep::RunSpec spec;
  spec.rule_code = rc;
  spec.sched_code = sc;
  spec.hyper = hyper.data();
  spec.alpha = alpha;
  spec.fit_intercept = fit_intercept;
  spec.tol = tol;
  spec.batch_size = batch_size;
  spec.seed = seed;
  spec.max_iter = max_iter;
  spec.total_updates = total_updates;
  spec.record_history = record_history;
  spec.has_reference = has_reference;

  gradstep::FitState st;  // mutable_data() raises on a read-only array
  st.P = P.mutable_data();
  st.slots = slots.mutable_data();
  st.grad = grad.mutable_data();
  st.loss = loss.mutable_data();
  st.t = t.mutable_data();
  st.n_iter = n_iter.mutable_data();
  st.status = status.mutable_data();
  st.best_loss = best_loss.mutable_data();
  st.no_improve = no_improve.mutable_data();
  st.epoch = epoch.mutable_data();
  st.history = history.mutable_data();
  st.history_len = history.shape(2);
  st.reference = reference.data();

  py::gil_scoped_release release;
  gradstep::run(data, K, spec, st, n_steps, n_threads);
}

py::array_t<std::int64_t> shuffle_order(ssize_t n, std::uint64_t seed, std::uint64_t epoch) {
  require(n >= 0, "n must be >= 0");
  std::vector<std::uint64_t> keys;
  std::vector<std::int64_t> order;
  {
    py::gil_scoped_release release;
    gradstep::shuffle_order(n, seed, epoch, keys, order);
  }
  py::array_t<std::int64_t> out(n);
  std::copy(order.begin(), order.end(), out.mutable_data());
  return out;
}

template <class T>
void bind_dtype(py::module_& m, const char* suffix) {
  const std::string lg = std::string("loss_grad_") + suffix;
  m.def(lg.c_str(), &loss_grad<T>, py::arg("X").noconvert(), py::arg("Y").noconvert(),
        py::arg("sw").noconvert(), py::arg("P").noconvert(), py::arg("alpha"),
        py::arg("rows").noconvert(), py::arg("active").noconvert(), py::arg("n_threads"),
        ("Loss (K,) and gradient (K, d + 1) of the active runs at P, X of dtype " +
         std::string(suffix) + " (see gradstep._backends.state for the contract).")
            .c_str());
  const std::string rn = std::string("run_") + suffix;
  m.def(rn.c_str(), &run<T>, py::arg("X").noconvert(), py::arg("Y").noconvert(),
        py::arg("sw").noconvert(), py::arg("rule_code").noconvert(),
        py::arg("sched_code").noconvert(), py::arg("hyper").noconvert(), py::arg("alpha"),
        py::arg("fit_intercept"), py::arg("tol"), py::arg("batch_size"), py::arg("seed"),
        py::arg("max_iter"), py::arg("total_updates"), py::arg("record_history"),
        py::arg("has_reference"), py::arg("P").noconvert(), py::arg("slots").noconvert(),
        py::arg("grad").noconvert(), py::arg("loss").noconvert(), py::arg("t").noconvert(),
        py::arg("n_iter").noconvert(), py::arg("status").noconvert(),
        py::arg("best_loss").noconvert(), py::arg("no_improve").noconvert(),
        py::arg("epoch").noconvert(), py::arg("history").noconvert(),
        py::arg("reference").noconvert(), py::arg("n_steps"), py::arg("n_threads"),
        ("Advances the running runs of a FitState in place by up to n_steps iterations, X of "
         "dtype " +
         std::string(suffix) + " (see gradstep._backends.state for the contract).")
            .c_str());
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "gradstep's compiled core: fused logistic loss + gradient for K runs, and the fit loops";
  bind_dtype<float>(m, "float32");
  bind_dtype<double>(m, "float64");
  m.def("shuffle_order", &shuffle_order, py::arg("n"), py::arg("seed"), py::arg("epoch"),
        "The mini-batch row order of epoch `epoch` (state.shuffle_order).");
  m.def("hardware_threads", &gradstep::ThreadPool::hardware_threads,
        "Threads of the persistent pool (the calling thread included).");
  m.def("block_rows", &gradstep::block_rows, py::arg("d"),
        "Rows per block of the gradient for d features: fixed, whatever the number of threads.");
  m.def("kernel", [] { return std::string(gradstep::kernel_name(gradstep::current_kernel())); },
        "The instruction set of the gradient kernel in use: 'avx2' or 'baseline'.");
  m.def("kernels", [] {
          py::list names;
          names.append("baseline");
          if (gradstep::cpu_has_avx2_fma()) names.append("avx2");
          return names;
        },
        "The kernels this CPU and build can run.");
  m.def("link", [](const carray<double>& z) {
          carray<double> l(z.size()), s(z.size());
          gradstep::run_link(z.data(), z.size(), l.mutable_data(), s.mutable_data());
          return py::make_tuple(l, s);
        },
        py::arg("z").noconvert(),
        "log(1 + exp(z)) and sigmoid(z) for a 1-D float64 z, by the gradient kernel's own link "
        "(vectorized exp and log1p); for accuracy tests.");
  m.def("set_kernel", [](const std::string& name) {
          const std::string before = gradstep::kernel_name(gradstep::current_kernel());
          try {
            gradstep::select_kernel(name);
          } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
          }
          return before;
        },
        py::arg("name"),
        "Selects the gradient kernel ('baseline' or 'avx2') for tests and benchmarks; returns the "
        "previous one. Not thread-safe: call it while no fit is running.");
}
