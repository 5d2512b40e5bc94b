// The logistic loss and its gradient for K runs in one pass over the rows of X.
//
// Per row i and active run k (weights w_k, intercept b_k, target y, weight s):
//     z = x_i . w_k + b_k
//     loss_k += s * (log(1 + exp(z)) - y z)
//     g_k    += s * (sigmoid(z) - y) * (x_i, 1)
// then loss and gradient are divided by the sum of the weights of the rows used, and the L2 term
// (alpha != 0 only) is added to the loss and to the weight part of the gradient (reference.loss_grad).
//
// Layout of the work, and why:
// - Rows are cut into fixed blocks whose size depends on d only (block_rows). Each block writes its
//   partial loss, gradient and weight sum into its own slot, and the slots are then added up in
//   block order. The arithmetic is therefore the same whatever the number of threads, and so are
//   the bits of the result.
// - Inside a block, runs are taken a tile at a time (runs_per_tile): the tile's weights and gradient
//   accumulators stay in L1 while the block's rows stream through it; the block itself is sized
//   to stay in L2 for the next tile.
// - Rows are taken four at a time: one load of w_k serves four dot products, and the gradient
//   accumulator is read and written once per four rows instead of once per row.
// - Every dot product keeps kLanes independent partial sums (element j goes to lane j % kLanes),
//   added in a fixed order at the end: vector code without -ffast-math (no reassociation is
//   needed), and the same result from every build (see Quad).
// - float32 X is read as float32 and widened per element; weights, sums and the loss are double.
// - Mini-batches pass row indices: the kernel reads X[rows[j]] where it lies; nothing is copied.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "thread_pool.hpp"

#if defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define GRADSTEP_RESTRICT __restrict
#else
#define GRADSTEP_RESTRICT
#endif

namespace gradstep {

// What the kernel reads. Y is (n, ky) with ky in {1, K}: run k uses column (ky == 1 ? 0 : k).
// sw == nullptr means unit weights.
template <class T>
struct Dataset {
  const T* X = nullptr;
  std::ptrdiff_t n = 0;
  std::ptrdiff_t d = 0;
  const double* Y = nullptr;
  std::ptrdiff_t ky = 1;
  const double* sw = nullptr;
};

// log(1 + exp(z)) and 1 / (1 + exp(-z)) from one e = exp(-|z|): neither overflows for any z
// (reference.log1pexp_and_sigmoid).
inline void log1pexp_sigmoid(double z, double& log1pexp, double& sigmoid) {
  const double e = std::exp(-std::fabs(z));
  log1pexp = std::max(z, 0.0) + std::log1p(e);  // like np.maximum, a NaN z stays NaN
  sigmoid = z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

constexpr int kLanes = 4;  // independent partial sums per dot product
constexpr std::ptrdiff_t kPrefetchRows = 8;  // how far ahead rows are prefetched

// Rows x features x runs below which a gradient stays on the calling thread: about 0.15 ms of
// single-thread work, while waking a sleeping worker was measured at 5 to 70 us (more in a VM).
// Mini-batches of the usual sizes stay below it. The result is the same either way.
constexpr double kMinParallelWork = 2.0e5;

// Rows per block: about 256 KiB of float64 data, so a block stays in L2 while each run tile reads
// it; at least 64 rows so the per-block bookkeeping (zeroing and adding a slot) stays negligible.
// A multiple of 4, the row group. Depends on d only, never on the number of threads.
inline std::ptrdiff_t block_rows(std::ptrdiff_t d) {
  const std::ptrdiff_t rows = std::clamp<std::ptrdiff_t>(32768 / std::max<std::ptrdiff_t>(d, 1),
                                                         64, 4096);
  return rows / 4 * 4;
}

// Runs per tile: their weights and gradient accumulators take about 24 KiB, inside L1.
inline std::ptrdiff_t runs_per_tile(std::ptrdiff_t D) {
  return std::max<std::ptrdiff_t>(1, 24576 / (16 * std::max<std::ptrdiff_t>(D, 1)));
}

namespace detail {

constexpr std::ptrdiff_t kLineDoubles = 8;  // a 64-byte cache line

// Doubles per run in a block's slot: the gradient (D), then the loss, rounded up to whole cache
// lines so that threads working on neighbouring run tiles never write the same line.
inline std::ptrdiff_t run_stride(std::ptrdiff_t D) {
  return (D + 1 + kLineDoubles - 1) / kLineDoubles * kLineDoubles;
}

inline double* align_to_line(double* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t line = kLineDoubles * sizeof(double);
  return reinterpret_cast<double*>((address + line - 1) / line * line);
}

// Quad: the kLanes = 4 partial sums of one dot product, lane l holding the terms j with
// j % 4 == l, added as (l0 + l1) + (l2 + l3) at the end. GCC and Clang get it as explicit vectors
// (two 16-byte halves: SSE2 on any x86-64, NEON on arm64; one 32-byte vector when the build
// targets AVX), because their auto-vectorizer turns a plain multi-accumulator loop into an
// in-order reduction with scalar adds. Other compilers get four scalars. Every variant performs
// the same additions in the same order, so they give the same bits (absent FMA contraction, which
// only a -march=native build enables). Defining GRADSTEP_SCALAR forces the plain variant (tests).
#if defined(GRADSTEP_SCALAR)
#define GRADSTEP_QUAD_SCALAR 1
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__AVX__)
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
struct Quad {
  v4d v;
};
inline void load(Quad& q, const double* p) { std::memcpy(&q.v, p, sizeof q.v); }
inline void load(Quad& q, const float* p) {
  v4f f;
  std::memcpy(&f, p, sizeof f);
  q.v = __builtin_convertvector(f, v4d);
}
inline void madd(Quad& acc, const Quad& x, const Quad& w) { acc.v += x.v * w.v; }
inline void add_lane(Quad& acc, int lane, double value) { acc.v[lane] += value; }
inline double hsum(const Quad& q) { return (q.v[0] + q.v[1]) + (q.v[2] + q.v[3]); }
#elif defined(__GNUC__) || defined(__clang__)
typedef double v2d __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));  // only a temporary of the float widening
typedef float v4f __attribute__((vector_size(16)));
struct Quad {
  v2d lo, hi;  // lanes 0, 1 and 2, 3
};
inline void load(Quad& q, const double* p) {
  std::memcpy(&q.lo, p, sizeof q.lo);
  std::memcpy(&q.hi, p + 2, sizeof q.hi);
}
inline void load(Quad& q, const float* p) {
  v4f f;
  std::memcpy(&f, p, sizeof f);
  const v4d wide = __builtin_convertvector(f, v4d);
  q.lo = v2d{wide[0], wide[1]};
  q.hi = v2d{wide[2], wide[3]};
}
inline void madd(Quad& acc, const Quad& x, const Quad& w) {
  acc.lo += x.lo * w.lo;
  acc.hi += x.hi * w.hi;
}
inline void add_lane(Quad& acc, int lane, double value) {
  if (lane < 2) {
    acc.lo[lane] += value;
  } else {
    acc.hi[lane - 2] += value;
  }
}
inline double hsum(const Quad& q) { return (q.lo[0] + q.lo[1]) + (q.hi[0] + q.hi[1]); }
#else
#define GRADSTEP_QUAD_SCALAR 1
#endif
#if defined(GRADSTEP_QUAD_SCALAR)
struct Quad {
  double a[kLanes];
};
template <class T>
inline void load(Quad& q, const T* p) {
  for (int l = 0; l < kLanes; ++l) q.a[l] = static_cast<double>(p[l]);
}
inline void madd(Quad& acc, const Quad& x, const Quad& w) {
  for (int l = 0; l < kLanes; ++l) acc.a[l] += x.a[l] * w.a[l];
}
inline void add_lane(Quad& acc, int lane, double value) { acc.a[lane] += value; }
inline double hsum(const Quad& q) { return (q.a[0] + q.a[1]) + (q.a[2] + q.a[3]); }
#endif

// Asks for the cache lines of a row ahead of its use. Within a block the rows of a group are
// read once from memory and then reused from L1; without this the load of the next group only
// starts when its dot products stall on it, and a single thread reaches about half the memory
// bandwidth. Also covers mini-batches, whose rows are scattered.
template <class T>
inline void prefetch_row(const T* x, std::ptrdiff_t d) {
#if defined(__GNUC__) || defined(__clang__)
  const char* p = reinterpret_cast<const char*>(x);
  const std::ptrdiff_t bytes = d * static_cast<std::ptrdiff_t>(sizeof(T));
  for (std::ptrdiff_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
#else
  (void)x;
  (void)d;
#endif
}

// z[r] = x_r . w for four rows: one load of w serves the four rows, and the four rows' Quads are
// eight independent addition chains (with 16-byte vectors), enough to hide the adder's latency.
template <class T>
inline void dot4(const T* GRADSTEP_RESTRICT x0, const T* GRADSTEP_RESTRICT x1,
                 const T* GRADSTEP_RESTRICT x2, const T* GRADSTEP_RESTRICT x3,
                 const double* GRADSTEP_RESTRICT w, std::ptrdiff_t d, double z[4]) {
  Quad a0 = {}, a1 = {}, a2 = {}, a3 = {};
  std::ptrdiff_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    Quad wv, xv;
    load(wv, w + j);
    load(xv, x0 + j);
    madd(a0, xv, wv);
    load(xv, x1 + j);
    madd(a1, xv, wv);
    load(xv, x2 + j);
    madd(a2, xv, wv);
    load(xv, x3 + j);
    madd(a3, xv, wv);
  }
  for (int l = 0; j < d; ++j, ++l) {  // the last d % 4 terms, each in its lane
    const double wl = w[j];
    add_lane(a0, l, static_cast<double>(x0[j]) * wl);
    add_lane(a1, l, static_cast<double>(x1[j]) * wl);
    add_lane(a2, l, static_cast<double>(x2[j]) * wl);
    add_lane(a3, l, static_cast<double>(x3[j]) * wl);
  }
  z[0] = hsum(a0);
  z[1] = hsum(a1);
  z[2] = hsum(a2);
  z[3] = hsum(a3);
}

// x . w for one row (the rows left over after the groups of four), same lanes, same bits as dot4.
template <class T>
inline double dot1(const T* GRADSTEP_RESTRICT x, const double* GRADSTEP_RESTRICT w,
                   std::ptrdiff_t d) {
  Quad a = {};
  std::ptrdiff_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    Quad wv, xv;
    load(wv, w + j);
    load(xv, x + j);
    madd(a, xv, wv);
  }
  for (int l = 0; j < d; ++j, ++l) add_lane(a, l, static_cast<double>(x[j]) * w[j]);
  return hsum(a);
}

// g += r0 x0 + r1 x1 + r2 x2 + r3 x3: one pass over g for four rows.
template <class T>
inline void axpy4(double* GRADSTEP_RESTRICT g, const double r[4], const T* GRADSTEP_RESTRICT x0,
                  const T* GRADSTEP_RESTRICT x1, const T* GRADSTEP_RESTRICT x2,
                  const T* GRADSTEP_RESTRICT x3, std::ptrdiff_t d) {
  const double r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
  for (std::ptrdiff_t j = 0; j < d; ++j) {
    g[j] += (r0 * static_cast<double>(x0[j]) + r1 * static_cast<double>(x1[j])) +
            (r2 * static_cast<double>(x2[j]) + r3 * static_cast<double>(x3[j]));
  }
}

template <class T>
inline void axpy1(double* GRADSTEP_RESTRICT g, double r, const T* GRADSTEP_RESTRICT x,
                  std::ptrdiff_t d) {
  for (std::ptrdiff_t j = 0; j < d; ++j) g[j] += r * static_cast<double>(x[j]);
}

}  // namespace detail

// The loss and gradient of K runs over all rows or a list of rows, with its scratch space.
// One engine serves every gradient of a fit, so the scratch is allocated once.
template <class T>
class GradientEngine {
 public:
  GradientEngine(const Dataset<T>& data, std::ptrdiff_t n_runs) : data_(data), K_(n_runs) {}

  // loss (K,) and G (K, D = d + 1, intercept last) at the weights P (K, D) over the rows
  // rows[0 .. n_rows) (rows == nullptr: all n rows), for the runs with active[k] != 0; the
  // others come back as zeros, as does everything when the weights of the rows used sum to 0.
  // The sums are divided by the weight of the rows used, or by `denominator` when it is > 0
  // (mini-batches with sample weights: see run_minibatch).
  void compute(const double* P, double alpha, const std::int64_t* rows, std::ptrdiff_t n_rows,
               const std::uint8_t* active, int n_threads, double* loss, double* G,
               double denominator = 0.0) {
    const std::ptrdiff_t d = data_.d, D = d + 1, S = detail::run_stride(D);
    std::fill(loss, loss + K_, 0.0);
    std::fill(G, G + K_ * D, 0.0);
    runs_.clear();
    for (std::ptrdiff_t k = 0; k < K_; ++k) {
      if (active[k]) runs_.push_back(k);
    }
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    const std::ptrdiff_t used = rows ? n_rows : data_.n;
    if (m == 0 || used == 0) return;

    const std::ptrdiff_t B = block_rows(d);
    const std::ptrdiff_t n_blocks = (used + B - 1) / B;
    const std::ptrdiff_t tile = runs_per_tile(D);
    const std::ptrdiff_t n_tiles = (m + tile - 1) / tile;
    const std::ptrdiff_t slot = m * S;
    // Blocks are processed in waves whose slots take at most ~32 MiB; the fold below adds the
    // slots in block order whatever the wave size, so the wave size never changes the result.
    const std::ptrdiff_t wave = std::clamp<std::ptrdiff_t>(
        (std::ptrdiff_t{32} << 20) / static_cast<std::ptrdiff_t>(sizeof(double) * slot), 1,
        n_blocks);
    partial_.resize(static_cast<std::size_t>(wave * slot + detail::kLineDoubles));
    // slots start on a cache line, so two threads never write the same line
    double* const partial = detail::align_to_line(partial_.data());
    wsum_.resize(static_cast<std::size_t>(wave));
    acc_.assign(static_cast<std::size_t>(slot), 0.0);
    double total = 0.0;

    const double work = static_cast<double>(used) * static_cast<double>(D) * static_cast<double>(m);
    const int participants = work >= kMinParallelWork ? std::max(1, n_threads) : 1;
    ThreadPool* pool = participants > 1 ? &ThreadPool::instance() : nullptr;

    for (std::ptrdiff_t b0 = 0; b0 < n_blocks; b0 += wave) {
      const std::ptrdiff_t nw = std::min(wave, n_blocks - b0);
      auto task = [&](std::ptrdiff_t id) {
        const std::ptrdiff_t bi = id / n_tiles, ti = id % n_tiles;
        const std::ptrdiff_t start = (b0 + bi) * B;
        const std::ptrdiff_t count = std::min(B, used - start);
        const std::ptrdiff_t c0 = ti * tile, c1 = std::min(m, c0 + tile);
        double* out = partial + bi * slot;
        block_tile(P, rows ? rows + start : nullptr, start, count, c0, c1, out);
        if (ti == 0) wsum_[static_cast<std::size_t>(bi)] = weight_sum(rows, start, count);
      };
      if (pool) {
        pool->parallel_for(nw * n_tiles, participants, task);
      } else {
        for (std::ptrdiff_t id = 0; id < nw * n_tiles; ++id) task(id);
      }
      for (std::ptrdiff_t bi = 0; bi < nw; ++bi) {  // block order: the same sum for any threads
        total += wsum_[static_cast<std::size_t>(bi)];
        const double* GRADSTEP_RESTRICT part = partial + bi * slot;
        double* GRADSTEP_RESTRICT acc = acc_.data();
        for (std::ptrdiff_t c = 0; c < slot; ++c) acc[c] += part[c];
      }
    }
    if (total == 0.0) return;
    if (denominator > 0.0) total = denominator;

    for (std::ptrdiff_t c = 0; c < m; ++c) {
      const std::ptrdiff_t k = runs_[static_cast<std::size_t>(c)];
      const double* a = acc_.data() + c * S;
      double* g = G + k * D;
      for (std::ptrdiff_t j = 0; j < D; ++j) g[j] = a[j] / total;
      loss[k] = a[D] / total;
      if (alpha != 0.0) {  // with alpha == 0 the penalty is not computed at all
        const double* w = P + k * D;
        double sq = 0.0;
        for (std::ptrdiff_t j = 0; j < d; ++j) sq += w[j] * w[j];
        loss[k] += 0.5 * alpha * sq;
        for (std::ptrdiff_t j = 0; j < d; ++j) g[j] += alpha * w[j];
      }
    }
  }

 private:
  double weight_sum(const std::int64_t* rows, std::ptrdiff_t start, std::ptrdiff_t count) const {
    if (data_.sw == nullptr) return static_cast<double>(count);
    double s = 0.0;
    for (std::ptrdiff_t p = 0; p < count; ++p) {
      s += data_.sw[rows ? rows[start + p] : start + p];
    }
    return s;
  }

  // The partial sums of one block (rows rows[0 .. count), or start .. start + count when rows is
  // nullptr) for the runs runs_[c0 .. c1), into out + c * S for each c.
  void block_tile(const double* P, const std::int64_t* rows, std::ptrdiff_t start,
                  std::ptrdiff_t count, std::ptrdiff_t c0, std::ptrdiff_t c1, double* out) const {
    const std::ptrdiff_t d = data_.d, D = d + 1, S = detail::run_stride(D), ky = data_.ky;
    const T* X = data_.X;
    const double* Y = data_.Y;
    const double* sw = data_.sw;
    std::fill(out + c0 * S, out + c1 * S, 0.0);
    auto row = [&](std::ptrdiff_t p) -> std::ptrdiff_t {
      return rows ? static_cast<std::ptrdiff_t>(rows[p]) : start + p;
    };

    std::ptrdiff_t p = 0;
    for (; p + 4 <= count; p += 4) {
      const std::ptrdiff_t i[4] = {row(p), row(p + 1), row(p + 2), row(p + 3)};
      const T* x[4] = {X + i[0] * d, X + i[1] * d, X + i[2] * d, X + i[3] * d};
      for (std::ptrdiff_t q = p + kPrefetchRows; q < std::min(count, p + kPrefetchRows + 4); ++q) {
        detail::prefetch_row(X + row(q) * d, d);
      }
      double s[4];
      for (int r = 0; r < 4; ++r) s[r] = sw ? sw[i[r]] : 1.0;
      for (std::ptrdiff_t c = c0; c < c1; ++c) {
        const std::ptrdiff_t k = runs_[static_cast<std::size_t>(c)];
        const std::ptrdiff_t col = ky == 1 ? 0 : k;
        const double* w = P + k * D;
        double z[4], res[4];
        detail::dot4(x[0], x[1], x[2], x[3], w, d, z);
        double* g = out + c * S;
        double lsum = g[D];
        for (int r = 0; r < 4; ++r) {
          const double zr = z[r] + w[d];
          const double y = Y[i[r] * ky + col];
          double l, sig;
          log1pexp_sigmoid(zr, l, sig);
          lsum += s[r] * (l - y * zr);
          res[r] = s[r] * (sig - y);
        }
        g[D] = lsum;
        detail::axpy4(g, res, x[0], x[1], x[2], x[3], d);
        g[d] += (res[0] + res[1]) + (res[2] + res[3]);
      }
    }
    for (; p < count; ++p) {
      const std::ptrdiff_t i = row(p);
      const T* x = X + i * d;
      const double s = sw ? sw[i] : 1.0;
      for (std::ptrdiff_t c = c0; c < c1; ++c) {
        const std::ptrdiff_t k = runs_[static_cast<std::size_t>(c)];
        const double* w = P + k * D;
        const double z = detail::dot1(x, w, d) + w[d];
        const double y = Y[i * ky + (ky == 1 ? 0 : k)];
        double l, sig;
        log1pexp_sigmoid(z, l, sig);
        double* g = out + c * S;
        g[D] += s * (l - y * z);
        const double r = s * (sig - y);
        detail::axpy1(g, r, x, d);
        g[d] += r;
      }
    }
  }

  Dataset<T> data_;
  std::ptrdiff_t K_;
  std::vector<std::ptrdiff_t> runs_;  // the active runs, in run order
  std::vector<double> partial_;       // one slot of m * run_stride(D) per block of the current wave
  std::vector<double> wsum_;          // the weight sum of each block of the current wave
  std::vector<double> acc_;           // the running sum of the slots, in block order
};

}  // namespace gradstep
