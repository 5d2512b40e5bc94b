// The fit loops: reference._run_full_batch and reference._run_minibatch, step for step.
//
// Why a literal port: the three backends must walk the same path (same weights after the same
// number of steps, same status, same history), so the control flow here mirrors the NumPy
// specification line by line — which runs step, when the gradient is taken, what happens on
// divergence, what is recorded where, when a run stops. Only the data layout differs: the state
// is a set of raw views on the FitState arrays, advanced in place, and all scratch space is
// allocated once per call.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "logistic.hpp"
#include "rules.hpp"
#include "shuffle.hpp"

namespace gradstep {

// Run status (state.RUNNING, ...).
enum Status : std::int64_t { kRunning = 0, kConverged = 1, kMaxIter = 2, kDiverged = 3 };

// Rows of the history array (state.H_*).
constexpr std::ptrdiff_t kHLoss = 0, kHGradNorm = 1, kHStepNorm = 2, kHLr = 3, kHDistance = 4;
constexpr std::ptrdiff_t kNHistory = 5;

// Epochs without an improvement of the epoch loss by tol before a mini-batch run stops.
constexpr std::int64_t kNIterNoChange = 5;

// Everything fixed for the duration of a fit (state.RunSpec); arrays have K rows.
struct RunSpec {
  const std::int64_t* rule_code = nullptr;  // (K,)
  const std::int64_t* sched_code = nullptr;  // (K,)
  const double* hyper = nullptr;             // (K, kNHyper)
  double alpha = 0.0;
  bool fit_intercept = true;
  double tol = 0.0;
  std::int64_t batch_size = 0;  // 0: full batch
  std::uint64_t seed = 0;
  std::int64_t max_iter = 0;
  std::int64_t total_updates = 0;
  bool record_history = false;
  bool has_reference = false;
};

// Views on the arrays of state.FitState, advanced in place. D = d + 1 (intercept last).
struct FitState {
  double* P = nullptr;             // (K, D)
  double* slots = nullptr;         // (K, kNSlots, D)
  double* grad = nullptr;          // (K, D)
  double* loss = nullptr;          // (K,)
  std::int64_t* t = nullptr;       // (K,)
  std::int64_t* n_iter = nullptr;  // (K,)
  std::int64_t* status = nullptr;  // (K,)
  double* best_loss = nullptr;     // (K,)
  std::int64_t* no_improve = nullptr;  // (K,)
  std::int64_t* epoch = nullptr;       // (1,)
  double* history = nullptr;           // (kNHistory, K, history_len)
  std::ptrdiff_t history_len = 0;
  const double* reference = nullptr;  // (K, D)
};

namespace detail {

inline double norm2(const double* v, std::ptrdiff_t n) {
  double sq = 0.0;
  for (std::ptrdiff_t j = 0; j < n; ++j) sq += v[j] * v[j];
  return std::sqrt(sq);
}

inline double distance(const double* a, const double* b, std::ptrdiff_t n) {
  double sq = 0.0;
  for (std::ptrdiff_t j = 0; j < n; ++j) {
    const double diff = a[j] - b[j];
    sq += diff * diff;
  }
  return std::sqrt(sq);
}

inline double max_abs(const double* v, std::ptrdiff_t n) {
  double m = 0.0;
  for (std::ptrdiff_t j = 0; j < n; ++j) m = std::max(m, std::fabs(v[j]));
  return m;
}

inline bool all_finite(const double* v, std::ptrdiff_t n) {
  for (std::ptrdiff_t j = 0; j < n; ++j) {
    if (!std::isfinite(v[j])) return false;
  }
  return true;
}

inline double lr_at(const RunSpec& spec, std::ptrdiff_t k, std::int64_t t) {
  const double* h = spec.hyper + k * kNHyper;
  return schedule_value(spec.sched_code[k], h[kHyperLr], h[kHyperSched], t, spec.total_updates);
}

inline void take_step(const RunSpec& spec, FitState& st, std::ptrdiff_t k, double lr_t,
                      const double* g, std::ptrdiff_t D) {
  apply_step(spec.rule_code[k], spec.hyper + k * kNHyper, lr_t, st.t[k], g, st.P + k * D,
             st.slots + k * kNSlots * D, D);
}

// History entry n_iter[k] of run k (reference._record).
inline void record(const RunSpec& spec, FitState& st, std::ptrdiff_t K, std::ptrdiff_t k,
                   std::ptrdiff_t D, double loss, double grad_norm, double step_norm, double lr) {
  if (!spec.record_history) return;
  const std::int64_t i = st.n_iter[k];
  if (i < 0 || i >= st.history_len) return;  // unreachable from the Python layer (H = max_iter+1)
  auto at = [&](std::ptrdiff_t row) -> double& {
    return st.history[(row * K + k) * st.history_len + i];
  };
  at(kHLoss) = loss;
  at(kHGradNorm) = grad_norm;
  at(kHStepNorm) = step_norm;
  at(kHLr) = lr;
  if (spec.has_reference) at(kHDistance) = distance(st.P + k * D, st.reference + k * D, D);
}

inline void copy_run(const double* from, double* to, std::ptrdiff_t k, std::ptrdiff_t D) {
  std::copy(from + k * D, from + (k + 1) * D, to + k * D);
}

}  // namespace detail

// Full batch: every iteration steps each running run with its gradient, then computes the loss
// and gradient of all of them at the new weights in one pass over X.
template <class T>
void run_full_batch(const Dataset<T>& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
                    std::int64_t n_steps, int n_threads) {
  const std::ptrdiff_t d = data.d, D = d + 1;
  GradientEngine<T> engine(data, K);
  std::vector<double> P_old(static_cast<std::size_t>(K * D)), lr_used(static_cast<std::size_t>(K));
  std::vector<double> loss(static_cast<std::size_t>(K)), grad(static_cast<std::size_t>(K * D));
  std::vector<std::uint8_t> active(static_cast<std::size_t>(K));
  std::vector<std::ptrdiff_t> running;
  running.reserve(static_cast<std::size_t>(K));

  for (std::int64_t it = 0; it < n_steps; ++it) {
    running.clear();
    for (std::ptrdiff_t k = 0; k < K; ++k) {
      if (st.status[k] == kRunning) running.push_back(k);
    }
    if (running.empty()) return;
    std::copy(st.P, st.P + K * D, P_old.begin());
    std::fill(lr_used.begin(), lr_used.end(), 0.0);
    for (const std::ptrdiff_t k : running) {
      st.t[k] += 1;
      lr_used[k] = detail::lr_at(spec, k, st.t[k]);
      detail::take_step(spec, st, k, lr_used[k], st.grad + k * D, D);
    }
    for (std::ptrdiff_t k = 0; k < K; ++k) active[k] = st.status[k] == kRunning ? 1 : 0;
    engine.compute(st.P, spec.alpha, nullptr, 0, active.data(), n_threads, loss.data(),
                   grad.data());
    if (!spec.fit_intercept) {
      for (std::ptrdiff_t k = 0; k < K; ++k) grad[k * D + d] = 0.0;
    }
    for (const std::ptrdiff_t k : running) {
      const double* g = grad.data() + k * D;
      if (!detail::all_finite(st.P + k * D, D) || !std::isfinite(loss[k]) ||
          !detail::all_finite(g, D)) {
        detail::copy_run(P_old.data(), st.P, k, D);  // keep the last finite weights
        st.status[k] = kDiverged;
        continue;
      }
      st.loss[k] = loss[k];
      std::copy(g, g + D, st.grad + k * D);
      st.n_iter[k] += 1;
      const double step_norm = detail::distance(st.P + k * D, P_old.data() + k * D, D);
      detail::record(spec, st, K, k, D, loss[k], detail::norm2(g, D), step_norm, lr_used[k]);
      if (detail::max_abs(g, D) <= spec.tol) {
        st.status[k] = kConverged;
      } else if (st.n_iter[k] >= spec.max_iter) {
        st.status[k] = kMaxIter;
      }
    }
  }
}

// Mini-batch: each epoch walks the rows in the seeded shuffled order, one step per batch; the
// epoch loss and gradient norm are the batch-size-weighted means over the epoch, and a run stops
// on scikit-learn's n_iter_no_change rule or at max_iter epochs.
template <class T>
void run_minibatch(const Dataset<T>& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
                   std::int64_t n_steps, int n_threads) {
  const std::ptrdiff_t n = data.n, d = data.d, D = d + 1;
  const std::ptrdiff_t bs = static_cast<std::ptrdiff_t>(spec.batch_size);
  GradientEngine<T> engine(data, K);
  const auto uK = static_cast<std::size_t>(K);
  // The weights before each run's latest step: restored when that step turns out non-finite.
  std::vector<double> P_prev(st.P, st.P + K * D);
  std::vector<double> P_start(static_cast<std::size_t>(K * D));
  std::vector<double> loss_sum(uK), grad_norm_sum(uK), lr_used(uK), loss(uK);
  std::vector<double> grad(static_cast<std::size_t>(K * D));
  std::vector<std::uint8_t> in_epoch(uK);
  std::vector<std::uint64_t> keys;
  std::vector<std::int64_t> order;
  // With sample weights a batch's sums are divided by its expected weight, count * (sum s) / n,
  // not by its own weight: the batch gradient is then an unbiased estimate of the full one, and
  // a batch of light rows takes a light step (reference._run_minibatch).
  double mean_weight = 0.0;
  if (data.sw) {
    for (std::ptrdiff_t i = 0; i < n; ++i) mean_weight += data.sw[i];
    mean_weight /= static_cast<double>(n);
  }

  for (std::int64_t it = 0; it < n_steps; ++it) {
    bool any = false;
    for (std::ptrdiff_t k = 0; k < K; ++k) any = any || st.status[k] == kRunning;
    if (!any) return;
    shuffle_order(n, spec.seed, static_cast<std::uint64_t>(st.epoch[0]), keys, order);
    st.epoch[0] += 1;
    for (std::ptrdiff_t k = 0; k < K; ++k) in_epoch[k] = st.status[k] == kRunning ? 1 : 0;
    std::copy(st.P, st.P + K * D, P_start.begin());
    std::fill(loss_sum.begin(), loss_sum.end(), 0.0);
    std::fill(grad_norm_sum.begin(), grad_norm_sum.end(), 0.0);
    std::fill(lr_used.begin(), lr_used.end(), 0.0);
    for (std::ptrdiff_t start = 0; start < n; start += bs) {
      const std::ptrdiff_t count = std::min(bs, n - start);
      engine.compute(st.P, spec.alpha, order.data() + start, count, in_epoch.data(), n_threads,
                     loss.data(), grad.data(), static_cast<double>(count) * mean_weight);
      if (!spec.fit_intercept) {
        for (std::ptrdiff_t k = 0; k < K; ++k) grad[k * D + d] = 0.0;
      }
      for (std::ptrdiff_t k = 0; k < K; ++k) {
        if (!in_epoch[k]) continue;
        const double* g = grad.data() + k * D;
        if (!std::isfinite(loss[k]) || !detail::all_finite(g, D)) {
          detail::copy_run(P_prev.data(), st.P, k, D);
          st.status[k] = kDiverged;
          in_epoch[k] = 0;
          continue;
        }
        loss_sum[k] += static_cast<double>(count) * loss[k];
        grad_norm_sum[k] += static_cast<double>(count) * detail::norm2(g, D);
        st.t[k] += 1;
        lr_used[k] = detail::lr_at(spec, k, st.t[k]);
        detail::copy_run(st.P, P_prev.data(), k, D);
        detail::take_step(spec, st, k, lr_used[k], g, D);
        if (!detail::all_finite(st.P + k * D, D)) {
          detail::copy_run(P_prev.data(), st.P, k, D);
          st.status[k] = kDiverged;
          in_epoch[k] = 0;
        }
      }
    }
    for (std::ptrdiff_t k = 0; k < K; ++k) {
      if (!in_epoch[k]) continue;
      const double epoch_loss = loss_sum[k] / static_cast<double>(n);
      st.loss[k] = epoch_loss;
      st.n_iter[k] += 1;
      const double step_norm = detail::distance(st.P + k * D, P_start.data() + k * D, D);
      detail::record(spec, st, K, k, D, epoch_loss, grad_norm_sum[k] / static_cast<double>(n),
                     step_norm, lr_used[k]);
      // scikit-learn's n_iter_no_change rule on the epoch loss
      if (epoch_loss > st.best_loss[k] - spec.tol) {
        st.no_improve[k] += 1;
      } else {
        st.no_improve[k] = 0;
      }
      st.best_loss[k] = std::min(st.best_loss[k], epoch_loss);
      if (st.no_improve[k] >= kNIterNoChange) {
        st.status[k] = kConverged;
      } else if (st.n_iter[k] >= spec.max_iter) {
        st.status[k] = kMaxIter;
      }
    }
  }
}

// Advances every running run by up to n_steps iterations (epochs when batch_size > 0).
template <class T>
void run(const Dataset<T>& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
         std::int64_t n_steps, int n_threads) {
  if (spec.batch_size > 0) {
    run_minibatch(data, K, spec, st, n_steps, n_threads);
  } else {
    run_full_batch(data, K, spec, st, n_steps, n_threads);
  }
}

}  // namespace gradstep
