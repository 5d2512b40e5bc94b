// The compiled first-order fit loops (full batch and mini-batch): the reference driver's
// first-order loops (gradstep.driver, run on reference.loss_grad), step for step.
//
// Why a literal port: the backends must walk the same path (same weights after the same number of
// steps, same status, same history), so the control flow here mirrors the NumPy specification
// line by line — which runs step, when the gradient is taken, what happens on
// divergence, what is recorded where, when a run stops. Only the data layout differs: the state
// is a set of raw views on the FitState arrays, advanced in place, and all scratch space is
// allocated once per call.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "logistic.hpp"
#include "rules.hpp"
#include "shuffle.hpp"
#include "sparse_kernel.hpp"

namespace gradstep {

// Run status (state.RUNNING, ...). The compiled first-order loop never sets kStalled (the lbfgs
// loop, lbfgs_loop.hpp, does) and no compiled loop sets kStopped (the Python layer does); they
// advance only kRunning runs.
enum Status : std::int64_t {
  kRunning = 0,
  kConverged = 1,
  kMaxIter = 2,
  kDiverged = 3,
  kStalled = 4,
  kStopped = 5,
};

// Rows of the history array (state.H_*). The compiled first-order loop never writes kHPasses
// (one pass per iteration: the Python layer fills it); the lbfgs loop does.
constexpr std::ptrdiff_t kHLoss = 0, kHGradNorm = 1, kHStepNorm = 2, kHLr = 3, kHDistance = 4,
                         kHPasses = 5;
constexpr std::ptrdiff_t kNHistory = 6;

// Epochs without an improvement of the epoch loss by tol before a mini-batch run stops.
constexpr std::int64_t kNIterNoChange = 5;

// Divergence (state.py): a run stops as diverged, keeping its last good weights, when its loss or
// weights stop being finite, when its loss (a mini-batch's, in mini-batch runs) exceeds
// kDivergenceLossFactor * max(its starting loss, log 2), or when the norm of its weights exceeds
// kDivergenceWeightNorm.
constexpr double kDivergenceLossFactor = 1e6;
constexpr double kDivergenceWeightNorm = 1e150;
constexpr double kLog2 = 0.693147180559945309417;

// Everything fixed for the duration of a fit (state.RunSpec); arrays have K rows.
struct RunSpec {
  const std::int64_t* rule_code = nullptr;  // (K,), each one a code of kRules (valid_rule)
  const std::int64_t* sched_code = nullptr;  // (K,)
  const double* hyper = nullptr;             // (K, kNHyper)
  const double* alpha = nullptr;             // (K,) each run's L2 strength
  bool fit_intercept = true;
  double tol = 0.0;
  std::int64_t batch_size = 0;  // 0: full batch
  std::uint64_t seed = 0;
  std::int64_t max_iter = 0;
  std::int64_t total_updates = 0;
  bool record_history = false;
  bool has_reference = false;
  std::int64_t shuffle_blocks = 0;  // 0: the row shuffle; b > 0: blocks of b rows (shuffle.hpp)
  // The L1 term (spec.l1, spec.penalized): each run's strength (K,), nullptr when no run has
  // one, and the parameters it covers (D,: the coefficients, never an intercept).
  const double* l1 = nullptr;
  const std::uint8_t* penalized = nullptr;
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
  const double* reference = nullptr;   // (K, D)
  const double* start_loss = nullptr;  // (K,) the full-batch loss at the starting point
};

namespace detail {

// Sums of squares in four partial sums (then added pairwise): four independent chains of
// additions instead of one, which a CSR fit's per-step vectors of 20,000 parameters waited on
// (one chain is an addition's latency per element). Rounding may differ from a serial sum's;
// the reference computes these norms with NumPy's own order anyway (agreement to rounding).
template <class Term>
GRADSTEP_INLINE double sum_of_squares(std::ptrdiff_t n, Term term) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  std::ptrdiff_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const double a = term(j), b = term(j + 1), c = term(j + 2), e = term(j + 3);
    s0 += a * a;
    s1 += b * b;
    s2 += c * c;
    s3 += e * e;
  }
  for (; j < n; ++j) {
    const double a = term(j);
    s0 += a * a;
  }
  return (s0 + s1) + (s2 + s3);
}

inline double norm2(const double* v, std::ptrdiff_t n) {
  return std::sqrt(sum_of_squares(n, [v](std::ptrdiff_t j) { return v[j]; }));
}

inline double distance(const double* a, const double* b, std::ptrdiff_t n) {
  return std::sqrt(sum_of_squares(n, [a, b](std::ptrdiff_t j) { return a[j] - b[j]; }));
}

inline double max_abs(const double* v, std::ptrdiff_t n) {
  double m = 0.0;
  for (std::ptrdiff_t j = 0; j < n; ++j) m = std::max(m, std::fabs(v[j]));
  return m;
}

// Whether no value is NaN or infinite: an OR over the values' exponent bits (all ones for NaN and
// infinity), which the compiler vectorizes, instead of a branch per value.
inline bool all_finite(const double* v, std::ptrdiff_t n) {
  constexpr std::uint64_t kExponent = 0x7FF0000000000000ULL;
  std::uint64_t bad = 0;
  for (std::ptrdiff_t j = 0; j < n; ++j) {
    std::uint64_t bits;
    std::memcpy(&bits, v + j, sizeof bits);
    bad |= static_cast<std::uint64_t>((bits & kExponent) == kExponent);
  }
  return bad == 0;
}

// Run k's loss above which it is diverged (state.divergence_limit): like np.maximum, a NaN
// starting loss gives a NaN limit, which no loss exceeds. Without start_loss (a C++ caller that
// did not set it) the limit is the one of a start at loss 0: 1e6 log 2.
inline double loss_limit(const FitState& st, std::ptrdiff_t k) {
  const double start = st.start_loss != nullptr ? st.start_loss[k] : 0.0;
  return kDivergenceLossFactor * (start < kLog2 ? kLog2 : start);
}

// Weights that are not finite or too far out (the weight half of the divergence rule).
inline bool weights_diverged(const double* p, std::ptrdiff_t D) {
  return !all_finite(p, D) || norm2(p, D) > kDivergenceWeightNorm;
}

inline double lr_at(const RunSpec& spec, std::ptrdiff_t k, std::int64_t t) {
  const double* h = spec.hyper + k * kNHyper;
  return schedule_value(spec.sched_code[k], h[kHyperLr], h[kHyperSched], t, spec.total_updates);
}

// ---- the L1 term (driver.py's conventions: the objective, the minimum-norm subgradient) ------

inline double sign(double v) { return v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0); }  // np.sign

// ||p||_1 over the penalized parameters.
inline double l1_norm(const double* p, const std::uint8_t* penalized, std::ptrdiff_t D) {
  double sum = 0.0;
  for (std::ptrdiff_t j = 0; j < D; ++j) {
    if (penalized[j]) sum += std::fabs(p[j]);
  }
  return sum;
}

// The objective of a run with L1 strength l1 from its smooth loss at p (driver._objective).
inline double objective(double loss, double l1, const double* p, const std::uint8_t* penalized,
                        std::ptrdiff_t D) {
  return l1 > 0.0 ? loss + l1 * l1_norm(p, penalized, D) : loss;
}

// penalty.l1_residual: r (D,) = the minimum-norm subgradient of loss + l1 ||w||_1 at p from the
// smooth gradient g: g + l1 sign(w) where w != 0, sign(g) max(|g| - l1, 0) where w == 0, g on the
// parameters the term does not cover.
inline void l1_residual(const double* p, const double* g, double l1,
                        const std::uint8_t* penalized, std::ptrdiff_t D, double* r) {
  for (std::ptrdiff_t j = 0; j < D; ++j) {
    if (!penalized[j]) {
      r[j] = g[j];
    } else if (p[j] != 0.0) {
      r[j] = g[j] + l1 * sign(p[j]);
    } else {
      r[j] = sign(g[j]) * std::max(std::fabs(g[j]) - l1, 0.0);
    }
  }
}

// What the stop test and the history see of run k's gradient g at p: g itself, or with an L1
// term its residual (written to scratch).
inline const double* residual_of(const RunSpec& spec, std::ptrdiff_t k, const double* p,
                                 const double* g, std::ptrdiff_t D, std::vector<double>& scratch) {
  const double l1 = spec.l1 ? spec.l1[k] : 0.0;
  if (l1 <= 0.0) return g;
  scratch.resize(to_size(D));
  l1_residual(p, g, l1, spec.penalized, D, scratch.data());
  return scratch.data();
}

// A run's update, looked up once per call in the table of rules (rules.hpp): its rule's step and
// step_scale, and the strength of its L1 term (0: none).
struct Update {
  StepFn step = nullptr;
  ScaleFn scale = nullptr;
  double l1 = 0.0;
};

inline std::vector<Update> updates(const RunSpec& spec, std::ptrdiff_t K) {
  std::vector<Update> ups(to_size(K));
  for (std::ptrdiff_t k = 0; k < K; ++k) {
    Update& u = ups[to_size(k)];
    u.step = rule_step(spec.rule_code[k]);
    u.scale = rule_scale(spec.rule_code[k]);
    u.l1 = spec.l1 ? spec.l1[k] : 0.0;
  }
  return ups;
}

// Run k's update in place on its parameters, then with an L1 term its proximal step
// (driver._step): the coefficients soft-thresholded by the rule's step_scale (taken before the
// update) times l1, a coefficient stopping at an exact 0.
inline void take_step(const RunSpec& spec, const Update& u, FitState& st, std::ptrdiff_t k,
                      double lr_t, const double* g, std::ptrdiff_t D,
                      std::vector<double>& scale) {
  if (u.step == nullptr) return;  // unreachable: the bindings reject unknown codes
  double* p = st.P + k * D;
  const StepArgs args{spec.hyper + k * kNHyper, lr_t, st.t[k], g, p,
                      st.slots + k * kNSlots * D, D};
  if (u.l1 <= 0.0) {
    u.step(args);
    return;
  }
  scale.resize(to_size(D));
  u.scale(args, scale.data());
  u.step(args);
  for (std::ptrdiff_t j = 0; j < D; ++j) {
    if (!spec.penalized[j]) continue;
    const double w = p[j], threshold = scale[to_size(j)] * u.l1;
    p[j] = sign(w) * std::max(std::fabs(w) - threshold, 0.0);
  }
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

// Asks for the cache lines of [begin, begin + bytes) ahead of their use (a hint: no effect on
// any result). Contiguous, so the hardware prefetcher streams along.
inline void prefetch_bytes(const void* begin, std::size_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
  const char* p = static_cast<const char*>(begin);
  for (std::size_t at = 0; at < bytes; at += 64) __builtin_prefetch(p + at, 0, 3);
#else
  (void)begin;
  (void)bytes;
#endif
}

// prefetch_bytes of the targets Y (n, ky) and weights SW (n, ks; none when ks == 0) of rows
// [first, first + count): each a consecutive range, whatever X's format.
inline void prefetch_row_tables(const double* Y, std::ptrdiff_t ky, const double* SW,
                                std::ptrdiff_t ks, std::ptrdiff_t first, std::ptrdiff_t count) {
  prefetch_bytes(Y + first * ky, static_cast<std::size_t>(count * ky) * sizeof(double));
  if (ks > 0) {
    prefetch_bytes(SW + first * ks, static_cast<std::size_t>(count * ks) * sizeof(double));
  }
}

inline void copy_run(const double* from, double* to, std::ptrdiff_t k, std::ptrdiff_t D) {
  std::copy(from + k * D, from + (k + 1) * D, to + k * D);
}

}  // namespace detail

// What the fit loops read of the data, dense (DenseFit) or CSR (CsrFit): its size, its sample
// weights (the mini-batch denominators), an engine for its passes (engine(K).compute(...), as
// GradientEngine::compute) and where a range of rows lies in memory (prefetch_rows, for
// shuffle="blocks"). The loops themselves are the same for both.
template <class T>
struct DenseFit {
  const Dataset<T>& data;

  std::ptrdiff_t n() const { return data.n; }
  std::ptrdiff_t d() const { return data.d; }
  const double* SW() const { return data.SW; }
  std::ptrdiff_t ks() const { return data.ks; }
  std::ptrdiff_t weight_column(std::ptrdiff_t k) const { return data.weight_column(k); }

  // The loops' calls follow each other within microseconds: small ones are cut into blocks and
  // shared among the still-spinning workers (logistic.hpp).
  GradientEngine<T> engine(std::ptrdiff_t K) const {
    GradientEngine<T> e(data, K);
    e.set_back_to_back(true);
    e.set_small_blocks(true);
    return e;
  }

  void prefetch_rows(std::ptrdiff_t first, std::ptrdiff_t count) const {
    detail::prefetch_bytes(data.X + first * data.d,
                           static_cast<std::size_t>(count * data.d) * sizeof(T));
    detail::prefetch_row_tables(data.Y, data.ky, data.SW, data.ks, first, count);
  }
};

// A CSR matrix whose structure is proven (gradstep.sparse.check_csr): its rows' indices are read
// without a check. Y (n, ky) and SW (n, ks) as Dataset's.
template <class T, class I>
struct CsrFit {
  csr::Matrix<T, I> X;
  const double* Y = nullptr;
  std::ptrdiff_t ky = 1;
  const double* SW_ = nullptr;
  std::ptrdiff_t ks_ = 0;

  std::ptrdiff_t n() const { return X.n; }
  std::ptrdiff_t d() const { return X.d; }
  const double* SW() const { return SW_; }
  std::ptrdiff_t ks() const { return ks_; }
  std::ptrdiff_t weight_column(std::ptrdiff_t k) const { return ks_ == 1 ? 0 : k; }

  csr::Engine<T, I> engine(std::ptrdiff_t K) const {
    return csr::Engine<T, I>(X, Y, ky, SW_, ks_, K);
  }

  // The rows' nonzeros are one range of data and of indices.
  void prefetch_rows(std::ptrdiff_t first, std::ptrdiff_t count) const {
    const std::ptrdiff_t begin = X.at(first), end = X.at(first + count);
    const auto nnz = static_cast<std::size_t>(end - begin);
    detail::prefetch_bytes(X.data + begin, nnz * sizeof(T));
    detail::prefetch_bytes(X.indices + begin, nnz * sizeof(I));
    detail::prefetch_row_tables(Y, ky, SW_, ks_, first, count);
  }
};

// Full batch: every iteration steps each running run with its gradient, then computes the loss
// and gradient of all of them at the new weights in one pass over X.
template <class Data>
void run_full_batch(const Data& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
                    std::int64_t n_steps, int n_threads) {
  using detail::to_size;
  const std::ptrdiff_t d = data.d(), D = d + 1;
  auto engine = data.engine(K);
  const std::vector<detail::Update> ups = detail::updates(spec, K);
  std::vector<double> P_old(to_size(K * D)), lr_used(to_size(K)), scratch;
  std::vector<double> loss(to_size(K)), grad(to_size(K * D));
  std::vector<std::uint8_t> active(to_size(K));
  std::vector<std::ptrdiff_t> running;
  running.reserve(to_size(K));

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
      const double lr = detail::lr_at(spec, k, st.t[k]);
      lr_used[to_size(k)] = lr;
      detail::take_step(spec, ups[to_size(k)], st, k, lr, st.grad + k * D, D, scratch);
    }
    for (std::ptrdiff_t k = 0; k < K; ++k) active[to_size(k)] = st.status[k] == kRunning ? 1 : 0;
    engine.compute(st.P, spec.alpha, nullptr, 0, active.data(), n_threads, loss.data(),
                   grad.data());
    if (!spec.fit_intercept) {
      for (std::ptrdiff_t k = 0; k < K; ++k) grad[to_size(k * D + d)] = 0.0;
    }
    for (const std::ptrdiff_t k : running) {
      const double* g = grad.data() + k * D;
      const double* p = st.P + k * D;
      const double lk = detail::objective(loss[to_size(k)], ups[to_size(k)].l1, p,
                                          spec.penalized, D);
      if (detail::weights_diverged(p, D) || !std::isfinite(lk) || !detail::all_finite(g, D) ||
          lk > detail::loss_limit(st, k)) {
        detail::copy_run(P_old.data(), st.P, k, D);  // keep the last good weights
        st.status[k] = kDiverged;
        continue;
      }
      st.loss[k] = lk;
      std::copy(g, g + D, st.grad + k * D);
      st.n_iter[k] += 1;
      const double step_norm = detail::distance(p, P_old.data() + k * D, D);
      const double* r = detail::residual_of(spec, k, p, g, D, scratch);
      detail::record(spec, st, K, k, D, lk, detail::norm2(r, D), step_norm, lr_used[to_size(k)]);
      if (detail::max_abs(r, D) <= spec.tol) {
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
template <class Data>
void run_minibatch(const Data& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
                   std::int64_t n_steps, int n_threads) {
  using detail::to_size;
  const std::ptrdiff_t n = data.n(), d = data.d(), D = d + 1;
  const std::ptrdiff_t bs = static_cast<std::ptrdiff_t>(spec.batch_size);
  auto engine = data.engine(K);
  const std::vector<detail::Update> ups = detail::updates(spec, K);
  std::vector<double> scratch, scale;
  const auto uK = to_size(K);
  // The weights before each run's latest step: restored when that step turns out non-finite.
  std::vector<double> P_prev(st.P, st.P + K * D);
  std::vector<double> P_start(to_size(K * D));
  std::vector<double> loss_sum(uK), grad_norm_sum(uK), lr_used(uK), loss(uK);
  std::vector<double> grad(to_size(K * D));
  std::vector<std::uint8_t> in_epoch(uK);
  std::vector<std::uint64_t> keys;
  std::vector<std::int64_t> order;
  const std::ptrdiff_t block = static_cast<std::ptrdiff_t>(spec.shuffle_blocks);
  BlockShuffle block_shuffle;
  // shuffle="blocks": the rows of the coming windows, block by block in the block order (which is
  // the order of the windows), are prefetched up to a window and a batch ahead of the batch being
  // computed: each block is one long run of memory, so the window's rows are in cache before
  // they are gathered in their shuffled order. pf_pos rows of the epoch are prefetched so far,
  // pf_row of them in the block s.blocks[pf_block].
  std::ptrdiff_t pf_pos = 0, pf_block = 0, pf_row = 0;
  auto prefetch_until = [&](std::ptrdiff_t target) {
    while (pf_pos < target) {
      const std::ptrdiff_t b = block_shuffle.blocks[to_size(pf_block)];
      const std::ptrdiff_t first = b * block + pf_row, last = std::min(b * block + block, n);
      const std::ptrdiff_t take = std::min(last - first, target - pf_pos);
      data.prefetch_rows(first, take);
      pf_pos += take;
      pf_row += take;
      if (first + take == last) {
        ++pf_block;
        pf_row = 0;
      }
    }
  };
  // With sample weights a batch's sums for run k are divided by its expected weight,
  // count * (sum of run k's weights) / n, not by its own weight: the batch gradient is then an
  // unbiased estimate of the full one, and a batch of light rows takes a light step
  // (state.py). Unit weights: the batch's own weight, count, is the same.
  std::vector<double> mean_weight(uK), denominator(uK);
  const std::ptrdiff_t ks = data.ks();
  const bool weighted = ks > 0;
  if (weighted) {
    std::vector<double> column_mean(to_size(ks), 0.0);
    for (std::ptrdiff_t c = 0; c < ks; ++c) {
      double sum = 0.0;
      for (std::ptrdiff_t i = 0; i < n; ++i) sum += data.SW()[i * ks + c];
      column_mean[to_size(c)] = sum / static_cast<double>(n);
    }
    for (std::ptrdiff_t k = 0; k < K; ++k) {
      mean_weight[to_size(k)] = column_mean[to_size(data.weight_column(k))];
    }
  }

  for (std::int64_t it = 0; it < n_steps; ++it) {
    bool any = false;
    for (std::ptrdiff_t k = 0; k < K; ++k) any = any || st.status[k] == kRunning;
    if (!any) return;
    if (block > 0) {
      shuffle_order_blocks(n, spec.seed, static_cast<std::uint64_t>(st.epoch[0]), block,
                           block_shuffle, order);
      pf_pos = pf_block = pf_row = 0;
    } else {
      shuffle_order(n, spec.seed, static_cast<std::uint64_t>(st.epoch[0]), keys, order);
    }
    st.epoch[0] += 1;
    for (std::ptrdiff_t k = 0; k < K; ++k) in_epoch[to_size(k)] = st.status[k] == kRunning ? 1 : 0;
    std::copy(st.P, st.P + K * D, P_start.begin());
    std::fill(loss_sum.begin(), loss_sum.end(), 0.0);
    std::fill(grad_norm_sum.begin(), grad_norm_sum.end(), 0.0);
    std::fill(lr_used.begin(), lr_used.end(), 0.0);
    for (std::ptrdiff_t start = 0; start < n; start += bs) {
      const std::ptrdiff_t count = std::min(bs, n - start);
      const double rows_used = static_cast<double>(count);
      if (block > 0) prefetch_until(std::min(n, start + count + kShuffleWindow + bs));
      if (weighted) {
        for (std::size_t k = 0; k < uK; ++k) denominator[k] = rows_used * mean_weight[k];
      }
      engine.compute(st.P, spec.alpha, order.data() + start, count, in_epoch.data(), n_threads,
                     loss.data(), grad.data(), weighted ? denominator.data() : nullptr);
      if (!spec.fit_intercept) {
        for (std::ptrdiff_t k = 0; k < K; ++k) grad[to_size(k * D + d)] = 0.0;
      }
      for (std::ptrdiff_t k = 0; k < K; ++k) {
        const std::size_t uk = to_size(k);
        if (!in_epoch[uk]) continue;
        const double* g = grad.data() + k * D;
        if (!std::isfinite(loss[uk]) || !detail::all_finite(g, D) ||
            loss[uk] > detail::loss_limit(st, k)) {
          detail::copy_run(P_prev.data(), st.P, k, D);
          st.status[k] = kDiverged;
          in_epoch[uk] = 0;
          continue;
        }
        const double* p = st.P + k * D;
        loss_sum[uk] += rows_used * detail::objective(loss[uk], ups[uk].l1, p, spec.penalized, D);
        grad_norm_sum[uk] += rows_used * detail::norm2(detail::residual_of(spec, k, p, g, D,
                                                                           scratch), D);
        st.t[k] += 1;
        lr_used[uk] = detail::lr_at(spec, k, st.t[k]);
        detail::copy_run(st.P, P_prev.data(), k, D);
        detail::take_step(spec, ups[uk], st, k, lr_used[uk], g, D, scale);
        if (detail::weights_diverged(st.P + k * D, D)) {
          detail::copy_run(P_prev.data(), st.P, k, D);
          st.status[k] = kDiverged;
          in_epoch[uk] = 0;
        }
      }
    }
    for (std::ptrdiff_t k = 0; k < K; ++k) {
      const std::size_t uk = to_size(k);
      if (!in_epoch[uk]) continue;
      const double epoch_loss = loss_sum[uk] / static_cast<double>(n);
      st.loss[k] = epoch_loss;
      st.n_iter[k] += 1;
      const double step_norm = detail::distance(st.P + k * D, P_start.data() + k * D, D);
      detail::record(spec, st, K, k, D, epoch_loss, grad_norm_sum[uk] / static_cast<double>(n),
                     step_norm, lr_used[uk]);
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

// Advances every running run by up to n_steps iterations (epochs when batch_size > 0); data is a
// DenseFit or a CsrFit.
template <class Data>
void run_loop(const Data& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
              std::int64_t n_steps, int n_threads) {
  if (spec.batch_size > 0) {
    run_minibatch(data, K, spec, st, n_steps, n_threads);
  } else {
    run_full_batch(data, K, spec, st, n_steps, n_threads);
  }
}

template <class T>
void run(const Dataset<T>& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
         std::int64_t n_steps, int n_threads) {
  run_loop(DenseFit<T>{data}, K, spec, st, n_steps, n_threads);
}

template <class T, class I>
void run(const CsrFit<T, I>& data, std::ptrdiff_t K, const RunSpec& spec, FitState& st,
         std::int64_t n_steps, int n_threads) {
  run_loop(data, K, spec, st, n_steps, n_threads);
}

}  // namespace gradstep
