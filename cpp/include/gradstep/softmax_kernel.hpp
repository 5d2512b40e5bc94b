// The multinomial (softmax) loss, gradient and Hessian-vector product of K runs over a dense X
// (n, d), float32 or float64: gradstep._backends.softmax_reference states the contract
// (P (K, C (d + 1)): run k's class c has its weights at P[k, c D .. c D + d) and its intercept at
// P[k, c D + d], D = d + 1).
//
// Per run, rows are taken four at a time: the C classes' dot products with the four rows two
// classes at a time (simd::dot_rows, 8 independent chains in registers), then each row's softmax
// link over its C scores (softmax_link.hpp: the reference's pivot and T, full relative accuracy
// on confident rows), then the gradient sums of two classes at a time in one pass over the four
// rows (simd::axpy4). Rows left over from the groups of four go one at a time (simd::dot1 and
// axpy1). The gradient is then two small matrix products per block, Z = X_b W^T and
// G += R^T X_b, with the link between them while the block is in cache: X is read once.
//
// Determinism across threads: rows are cut into blocks of kBlockRows positions (independent of
// the thread count); each block sums into its own slot and the slots are added in block order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "block_kernel.hpp"
#include "block_slots.hpp"
#include "softmax_link.hpp"
#include "thread_pool.hpp"
#include "vector_math.hpp"

namespace gradstep {
namespace softmax {

constexpr std::ptrdiff_t kBlockRows = 256;      // rows per block (and per slot)
constexpr double kMinParallelWork = 2.0e5;      // multiply-adds below which one thread does it

// One block of rows for the m active runs runs[0 .. m): positions start .. start + count of rows
// (rows of X when rows is nullptr) into out (slot_size doubles): per active run a and class c the
// sums out[(a C + c) D + j] (j < d: weights, j = d: intercept), then the m loss sums. V: hessp's
// vectors (then no loss sums are written).
template <class T>
struct Job {
  const T* X;
  std::ptrdiff_t d;
  const std::int64_t* labels;
  const double* SW;  // (n, ks); nullptr when ks == 0
  std::ptrdiff_t ks;
  const double* P;  // (K, C D)
  const double* V;  // (K, C D) or nullptr
  const std::ptrdiff_t* runs;
  std::ptrdiff_t m, C;
  const std::int64_t* rows;
  std::ptrdiff_t start, count;
  double* out;
};

inline std::ptrdiff_t slot_size(std::ptrdiff_t m, std::ptrdiff_t C, std::ptrdiff_t d) {
  return m * C * (d + 1) + m;
}

namespace kernel {

template <class T>
GRADSTEP_INLINE double weight(const Job<T>& job, std::ptrdiff_t i, std::ptrdiff_t k) {
  if (job.ks == 0) return 1.0;
  return job.SW[i * job.ks + (job.ks == 1 ? 0 : k)];
}

// Z[c][r] = x_r . w_c + b_c for NR (4 or 1) rows and the C classes of one parameter row A.
template <std::size_t NR, bool Avx, class T>
GRADSTEP_INLINE void scores(const T* const x[NR], const double* A, std::ptrdiff_t C,
                            std::ptrdiff_t d, double* Z) {
  const std::ptrdiff_t D = d + 1;
  std::ptrdiff_t c = 0;
  for (; c + 2 <= C; c += 2) {
    const double* const w[2] = {A + c * D, A + (c + 1) * D};
    double z[2][NR];
    simd::dot_rows<NR, 2, T, Avx>(x, w, d, z);
    for (std::size_t r = 0; r < NR; ++r) {
      Z[c * 4 + static_cast<std::ptrdiff_t>(r)] = z[0][r] + w[0][d];
      Z[(c + 1) * 4 + static_cast<std::ptrdiff_t>(r)] = z[1][r] + w[1][d];
    }
  }
  if (c < C) {
    const double* const w[1] = {A + c * D};
    double z[1][NR];
    simd::dot_rows<NR, 1>(x, w, d, z);
    for (std::size_t r = 0; r < NR; ++r) {
      Z[c * 4 + static_cast<std::ptrdiff_t>(r)] = z[0][r] + w[0][d];
    }
  }
}

// G_c += sum_r R[c][r] (x_r, 1) for the C classes, NR (4 or 1) rows, two classes per pass.
template <std::size_t NR, bool Avx, class T>
GRADSTEP_INLINE void update(const T* const x[NR], const double* R, std::ptrdiff_t C,
                            std::ptrdiff_t d, double* G) {
  const std::ptrdiff_t D = d + 1;
  for (std::ptrdiff_t c = 0; c < C; ++c) {  // the intercepts, in row order
    double s = G[c * D + d];
    for (std::size_t r = 0; r < NR; ++r) s += R[c * 4 + static_cast<std::ptrdiff_t>(r)];
    G[c * D + d] = s;
  }
  if constexpr (NR == 1) {
    for (std::ptrdiff_t c = 0; c < C; ++c) simd::axpy1(G + c * D, R[c * 4], x[0], d);
  } else {
    std::ptrdiff_t c = 0;
    for (; c + 2 <= C; c += 2) {
      double res[2][4];
      for (std::size_t r = 0; r < 4; ++r) {
        res[0][r] = R[c * 4 + static_cast<std::ptrdiff_t>(r)];
        res[1][r] = R[(c + 1) * 4 + static_cast<std::ptrdiff_t>(r)];
      }
      simd::axpy4<2, T, Avx>(G + c * D, G + (c + 1) * D, res, x, d);
    }
    if (c < C) {
      double res[1][4];
      for (std::size_t r = 0; r < 4; ++r) res[0][r] = R[c * 4 + static_cast<std::ptrdiff_t>(r)];
      simd::axpy4<1>(G + c * D, nullptr, res, x, d);
    }
  }
}


// NR (4 or 1) rows at positions p .. p + NR of the block, for every active run.
template <bool Hess, bool Avx, std::size_t NR, class T>
GRADSTEP_INLINE void rows_of(const Job<T>& job, std::ptrdiff_t p, double* Z, double* U,
                             double* t) {
  const std::ptrdiff_t d = job.d, D = d + 1, C = job.C, CD = C * D;
  const T* x[NR];
  std::ptrdiff_t i[NR];
  for (std::size_t r = 0; r < NR; ++r) {
    const std::ptrdiff_t pos = job.start + p + static_cast<std::ptrdiff_t>(r);
    i[r] = job.rows ? static_cast<std::ptrdiff_t>(job.rows[pos]) : pos;
    x[r] = job.X + i[r] * d;
  }
  for (std::ptrdiff_t a = 0; a < job.m; ++a) {
    const std::ptrdiff_t k = job.runs[a];
    double* G = job.out + a * CD;
    scores<NR, Avx>(x, job.P + k * CD, C, d, Z);
    if constexpr (Hess) scores<NR, Avx>(x, job.V + k * CD, C, d, U);
#if defined(GRADSTEP_VECTOR_EXT)
    if constexpr (NR == 4) {  // the four rows' links in vectors
      const simd::v4d s = {weight(job, i[0], k), weight(job, i[1], k), weight(job, i[2], k),
                           weight(job, i[3], k)};
      if constexpr (Hess) {
        hess4_rows(Z, U, C, s);
      } else {
        const std::int64_t y[4] = {job.labels[i[0]], job.labels[i[1]], job.labels[i[2]],
                                   job.labels[i[3]]};
        const simd::v4d l = link4_rows(Z, C, y, s);
        double* loss = job.out + job.m * CD + a;
        *loss = (((*loss + l[0]) + l[1]) + l[2]) + l[3];  // row order
      }
      update<NR, Avx>(x, Z, C, d, G);
      continue;
    }
#endif
    for (std::size_t r = 0; r < NR; ++r) {
      const auto rr = static_cast<std::ptrdiff_t>(r);
      const double s = weight(job, i[r], k);
      for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = Z[c * 4 + rr];
      if constexpr (Hess) {
        double* u = t + C;
        for (std::ptrdiff_t c = 0; c < C; ++c) u[c] = U[c * 4 + rr];
        hess_row(t, u, C, s);
      } else {
        double* loss = job.out + job.m * CD + a;
        *loss += s * link_row(t, C, job.labels[i[r]]);  // row order
        for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = s * t[c];
      }
      for (std::ptrdiff_t c = 0; c < C; ++c) Z[c * 4 + rr] = t[c];  // the residuals
    }
    update<NR, Avx>(x, Z, C, d, G);
  }
}

// Avx: compiled into the AVX2 entry point (simd::keep_in_register may be used).
template <bool Hess, bool Avx, class T>
GRADSTEP_INLINE void block(const Job<T>& job) {
  std::fill(job.out, job.out + slot_size(job.m, job.C, job.d), 0.0);
  std::vector<double> scratch(static_cast<std::size_t>(10 * job.C));
  double* Z = scratch.data();        // (C, 4): scores, then residuals
  double* U = Z + 4 * job.C;         // (C, 4): hessp's vector scores
  double* t = U + 4 * job.C;         // (2 C): one row's scores (and vector scores)
  std::ptrdiff_t p = 0;
  for (; p + 4 <= job.count; p += 4) rows_of<Hess, Avx, 4>(job, p, Z, U, t);
  for (; p < job.count; ++p) rows_of<Hess, Avx, 1>(job, p, Z, U, t);
}

}  // namespace kernel

template <bool Hess, class T>
GRADSTEP_NOINLINE void block_baseline(const Job<T>& job) {
  kernel::block<Hess, false>(job);
}

#if defined(GRADSTEP_HAS_AVX2_KERNEL)
template <bool Hess, class T>
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE void block_avx2(const Job<T>& job) {
  kernel::block<Hess, true>(job);
}
#endif

// The compiled block for the current kernel choice (the AVX-512 choice runs the AVX2 block: the
// classes' pairs fill 256-bit vectors).
template <bool Hess, class T>
inline void run_block(const Job<T>& job) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() != Kernel::baseline) {
    block_avx2<Hess>(job);
    return;
  }
#endif
  block_baseline<Hess>(job);
}

template <class T>
class Engine {
 public:
  Engine(const T* X, std::ptrdiff_t n, std::ptrdiff_t d, const std::int64_t* labels,
         const double* SW, std::ptrdiff_t ks, std::ptrdiff_t n_runs, std::ptrdiff_t n_classes)
      : X_(X), n_(n), d_(d), labels_(labels), SW_(SW), ks_(ks), K_(n_runs), C_(n_classes) {}

  // loss (K,), G (K, C D) at P over rows[0 .. n_rows) (rows == nullptr: all rows), active runs
  // only, divided by each run's weight of the rows used or by denominator[k]; a run whose divisor
  // is 0 comes back as zeros; (alpha/2) ||W||^2 and alpha W added (never the intercepts).
  void loss_grad(const double* P, const double* alpha, const std::int64_t* rows,
                 std::ptrdiff_t n_rows, const std::uint8_t* active, int n_threads, double* loss,
                 double* G, const double* denominator) {
    const std::ptrdiff_t CD = C_ * (d_ + 1);
    std::fill(loss, loss + K_, 0.0);
    std::fill(G, G + K_ * CD, 0.0);
    const std::ptrdiff_t used = rows ? n_rows : n_;
    if (used == 0) return;
    detail::run_divisors(totals_, K_, denominator, SW_, ks_, rows, used);
    if (!detail::select_runs(runs_, active, totals_, K_)) return;
    sweep(false, P, nullptr, rows, used, n_threads);
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    for (std::ptrdiff_t a = 0; a < m; ++a) {
      const std::ptrdiff_t k = runs_[idx(a)];
      const double total = totals_[idx(k)];
      const double* sums = out_.data() + a * CD;
      double* g = G + k * CD;
      for (std::ptrdiff_t j = 0; j < CD; ++j) g[j] = sums[j] / total;
      loss[k] = out_[idx(m * CD + a)] / total;
      penalty(P + k * CD, alpha[k], &loss[k], g);
    }
  }

  // HV (K, C D) of the active runs, over all rows (+ alpha V on the weights).
  void hessp(const double* P, const double* V, const double* alpha, const std::uint8_t* active,
             int n_threads, double* HV) {
    const std::ptrdiff_t CD = C_ * (d_ + 1);
    std::fill(HV, HV + K_ * CD, 0.0);
    if (n_ == 0) return;
    detail::run_divisors(totals_, K_, nullptr, SW_, ks_, nullptr, n_);
    if (!detail::select_runs(runs_, active, totals_, K_)) return;
    sweep(true, P, V, nullptr, n_, n_threads);
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    for (std::ptrdiff_t a = 0; a < m; ++a) {
      const std::ptrdiff_t k = runs_[idx(a)];
      const double total = totals_[idx(k)];
      const double* sums = out_.data() + a * CD;
      double* h = HV + k * CD;
      for (std::ptrdiff_t j = 0; j < CD; ++j) h[j] = sums[j] / total;
      penalty(V + k * CD, alpha[k], nullptr, h);
    }
  }

 private:
  static std::size_t idx(std::ptrdiff_t i) { return static_cast<std::size_t>(i); }

  // loss += (alpha/2) ||W||^2 (when loss is given) and g += alpha W over the classes' weights.
  void penalty(const double* A, double alpha, double* loss, double* g) const {
    if (alpha == 0.0) return;  // with alpha == 0 the penalty is not computed at all
    const std::ptrdiff_t D = d_ + 1;
    double sq = 0.0;
    for (std::ptrdiff_t c = 0; c < C_; ++c) {
      for (std::ptrdiff_t j = 0; j < d_; ++j) {
        sq += A[c * D + j] * A[c * D + j];
        g[c * D + j] += alpha * A[c * D + j];
      }
    }
    if (loss) *loss += 0.5 * alpha * sq;
  }

  // out_ = the sum of the blocks' slots, added in block order (waves of at most 2 blocks per
  // thread, one slot each: any wave size gives the same bits).
  void sweep(bool hess, const double* P, const double* V, const std::int64_t* rows,
             std::ptrdiff_t used, int n_threads) {
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    const std::ptrdiff_t slot = detail::whole_lines(slot_size(m, C_, d_));
    const std::ptrdiff_t n_blocks = (used + kBlockRows - 1) / kBlockRows;
    const double work = static_cast<double>(used) * static_cast<double>(m * C_ * (d_ + 1)) *
                        (hess ? 4.0 : 2.0);
    const int participants =
        (n_blocks > 1 && work >= kMinParallelWork) ? std::max(1, n_threads) : 1;
    const std::ptrdiff_t wave = detail::wave_blocks(n_blocks, participants);
    out_.assign(idx(slot), 0.0);
    slots_.resize(idx(wave * slot + detail::kLineDoubles));
    double* const slots = detail::align_to_line(slots_.data());
    ThreadPool* pool = participants > 1 ? &ThreadPool::instance() : nullptr;
    for (std::ptrdiff_t b0 = 0; b0 < n_blocks; b0 += wave) {
      const std::ptrdiff_t nw = std::min(wave, n_blocks - b0);
      auto task = [&](std::ptrdiff_t t) {
        const std::ptrdiff_t start = (b0 + t) * kBlockRows;
        const Job<T> job{X_, d_, labels_, SW_, ks_, P, V, runs_.data(), m, C_, rows, start,
                         std::min(kBlockRows, used - start), slots + t * slot};
        if (hess) {
          run_block<true>(job);
        } else {
          run_block<false>(job);
        }
      };
      run_tasks(pool, nw, participants, task);
      for (std::ptrdiff_t t = 0; t < nw; ++t) {  // block order: the same sums for any threads
        const double* GRADSTEP_RESTRICT part = slots + t * slot;
        double* GRADSTEP_RESTRICT acc = out_.data();
        for (std::ptrdiff_t j = 0; j < slot; ++j) acc[j] += part[j];
      }
    }
  }

  const T* X_;
  std::ptrdiff_t n_, d_;
  const std::int64_t* labels_;
  const double* SW_;
  std::ptrdiff_t ks_, K_, C_;
  std::vector<std::ptrdiff_t> runs_;
  std::vector<double> totals_, out_, slots_;
};

}  // namespace softmax
}  // namespace gradstep
