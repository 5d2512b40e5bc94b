// The multinomial (softmax) loss, gradient and Hessian-vector product of K runs over a dense X
// (n, d), float32 or float64: gradstep._backends.softmax_reference states the contract
// (P (K, C (d + 1)): run k's class c has its weights at P[k, c D .. c D + d) and its intercept at
// P[k, c D + d], D = d + 1).
//
// Per run, a block's rows are taken a chunk at a time (tiles::chunk_rows: 16 KB of rows): the
// scores of all C classes as one register-tiled product Z = X_c W^T (gemm_tiles.hpp), each row's
// softmax link (softmax_link.hpp: the reference's pivot and T, full relative accuracy on confident
// rows) four rows at a time in place on Z, then the gradient sums G += R^T X_c as a second tiled
// product while the chunk is in L1: X is read from memory once.
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
#include "gemm_tiles.hpp"
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

// One parameter row A (C classes of D = d + 1) as the tiles take it: Wt (d, Cp) with Wt[j, c] =
// A[c D + j] and bias (Cp,) the intercepts, the padding columns C .. Cp zero.
GRADSTEP_INLINE void pack(const double* A, std::ptrdiff_t C, std::ptrdiff_t d, std::ptrdiff_t Cp,
                          double* Wt, double* bias) {
  const std::ptrdiff_t D = d + 1;
  std::fill(Wt, Wt + d * Cp, 0.0);
  std::fill(bias, bias + Cp, 0.0);
  for (std::ptrdiff_t c = 0; c < C; ++c) {
    for (std::ptrdiff_t j = 0; j < d; ++j) Wt[j * Cp + c] = A[c * D + j];
    bias[c] = A[c * D + d];
  }
}

// The links of run a (parameter row k) over the chunk's grouped scores Z (tiles::grouped): Z
// becomes the weighted residuals (hessp: the rows' terms, with U the vector's scores), the loss
// sums added in row order. Each group of four rows in place in vectors (softmax_link.hpp), the
// rows of a last incomplete group one by one (t: 2 C scratch).
template <bool Hess, class T>
GRADSTEP_INLINE void links(const Job<T>& job, std::ptrdiff_t a, std::ptrdiff_t k,
                           const std::ptrdiff_t* idx, std::ptrdiff_t count, double* Z,
                           const double* U, std::ptrdiff_t Cp, double* t) {
  const std::ptrdiff_t C = job.C;
  double* loss = job.out + job.m * C * (job.d + 1) + a;
  std::ptrdiff_t p = 0;
#if defined(GRADSTEP_VECTOR_EXT)
  for (; p + 4 <= count; p += 4) {
    const std::ptrdiff_t* i = idx + p;
    const simd::v4d s = {weight(job, i[0], k), weight(job, i[1], k), weight(job, i[2], k),
                         weight(job, i[3], k)};
    double* Zg = Z + tiles::grouped(p, 0, Cp);
    if constexpr (Hess) {
      hess4_rows(Zg, U + tiles::grouped(p, 0, Cp), C, s);
    } else {
      const std::int64_t y[4] = {job.labels[i[0]], job.labels[i[1]], job.labels[i[2]],
                                 job.labels[i[3]]};
      const simd::v4d l = link4_rows(Zg, C, y, s);
      *loss = (((*loss + l[0]) + l[1]) + l[2]) + l[3];  // row order
    }
  }
#endif
  for (; p < count; ++p) {
    const double s = weight(job, idx[p], k);
    for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = Z[tiles::grouped(p, c, Cp)];
    if constexpr (Hess) {
      double* u = t + C;
      for (std::ptrdiff_t c = 0; c < C; ++c) u[c] = U[tiles::grouped(p, c, Cp)];
      hess_row(t, u, C, s);
    } else {
      *loss += s * link_row(t, C, job.labels[idx[p]]);  // row order
      for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = s * t[c];
    }
    for (std::ptrdiff_t c = 0; c < C; ++c) Z[tiles::grouped(p, c, Cp)] = t[c];  // the residuals
  }
}

// Per active run and chunk of the block's rows: the chunk's scores as one tiled product
// Z = X_c W^T (+ U = X_c V^T for hessp), the links, then G += R^T X_c as another
// (gemm_tiles.hpp); the chunk's rows stay in L1 between the two. Avx: compiled into the AVX2
// entry point (simd::splat_load's single-load broadcast may be used).
template <bool Hess, bool Avx, class T>
GRADSTEP_INLINE void block(const Job<T>& job) {
  const std::ptrdiff_t d = job.d, C = job.C, CD = C * (d + 1), count = job.count;
  const std::ptrdiff_t Cp = tiles::padded_columns(C);
  std::fill(job.out, job.out + slot_size(job.m, C, d), 0.0);
  const std::ptrdiff_t packed = (d + 1) * Cp;  // Wt and then bias
  const std::ptrdiff_t zsize = (std::min(count, tiles::chunk_rows(d, sizeof(T))) + 3) / 4 * 4 * Cp;
  std::vector<double> scratch(static_cast<std::size_t>((Hess ? 2 : 1) * (packed + zsize) + 2 * C));
  double* Wt = scratch.data();
  double* Vt = Wt + packed;                  // hessp only
  double* Z = Wt + (Hess ? 2 : 1) * packed;  // grouped (chunk, Cp): scores, then residuals
  double* U = Z + zsize;                     // hessp only: the vector's scores
  double* t = Z + (Hess ? 2 : 1) * zsize;    // (2 C)
  std::vector<const T*> x(static_cast<std::size_t>(count));
  std::vector<std::ptrdiff_t> idx(static_cast<std::size_t>(count));
  for (std::ptrdiff_t p = 0; p < count; ++p) {
    const std::ptrdiff_t pos = job.start + p;
    idx[static_cast<std::size_t>(p)] = job.rows ? static_cast<std::ptrdiff_t>(job.rows[pos]) : pos;
    x[static_cast<std::size_t>(p)] = job.X + idx[static_cast<std::size_t>(p)] * d;
  }
  std::vector<double*> G(static_cast<std::size_t>(C));
  const std::ptrdiff_t chunk = tiles::chunk_rows(d, sizeof(T));
  for (std::ptrdiff_t a = 0; a < job.m; ++a) {
    const std::ptrdiff_t k = job.runs[a];
    pack(job.P + k * CD, C, d, Cp, Wt, Wt + d * Cp);
    if constexpr (Hess) pack(job.V + k * CD, C, d, Cp, Vt, Vt + d * Cp);
    for (std::ptrdiff_t c = 0; c < C; ++c) G[static_cast<std::size_t>(c)] = job.out + a * CD + c * (d + 1);
    for (std::ptrdiff_t p0 = 0; p0 < count; p0 += chunk) {
      const std::ptrdiff_t rows = std::min(chunk, count - p0);
      const T* const* xs = x.data() + p0;
      tiles::scores<Avx>(xs, rows, Wt, Wt + d * Cp, Cp, d, Z);
      if constexpr (Hess) tiles::scores<Avx>(xs, rows, Vt, Vt + d * Cp, Cp, d, U);
      links<Hess>(job, a, k, idx.data() + p0, rows, Z, U, Cp, t);
      tiles::accumulate<Avx>(xs, rows, Z, Cp, C, G.data(), d);
    }
  }
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

// The compiled block for the current kernel choice (the AVX-512 choice runs the AVX2 block: its
// tiles are written for 256-bit vectors).
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
