// The inner loops: the partial loss and gradient (block_tile) and the partial Hessian-vector
// product (hessp_tile) of one block of rows for a tile of runs, and the choice, at run time, of
// the instruction set they are compiled for.
//
// Per row i and run k (weights w_k, intercept b_k, target y, weight s = s_ik):
//   gradient:  z = x_i . w_k + b_k
//              loss_k += s * (log(1 + exp(z)) - y z)
//              g_k    += s * (sigmoid(z) - y) * (x_i, 1)
//   hessp:     z = x_i . w_k + b_k,  u = x_i . v_k + v_kd    (V's row k: the vector multiplied)
//              h_k    += s * sigmoid(z) * (1 - sigmoid(z)) * u * (x_i, 1)
// The per-row terms come from one e = exp(-|z|) in forms that neither overflow nor cancel (link1,
// hess_weight1 and their vector versions in vector_math.hpp; reference.loss_and_residual).
//
// Sample weights (SW, (n, ks)): ks == 0 unit weights, ks == 1 one column shared by every run, ks == K
// a column per run. The per-run case is a template parameter (PerRun) chosen once per tile, outside
// the loops: the shared case keeps the loads of the shared weights out of the run loop, and the
// per-run case reads run k's weight only where it is applied, in the link stage.
//
// Layout of the work, and why:
// - Rows are taken four at a time and runs two at a time: one load of a piece of x_i serves two
//   runs and one load of a piece of w_k serves four rows, so a pair of runs keeps 8 dot products
//   (32 partial sums) in registers and the loads stay well below the multiply-adds. The gradient
//   update reads the four rows once for both runs and reads and writes g_k once per four rows.
//   The Hessian-vector product takes the dot products of w_k and v_k with the four rows in one go
//   (the same 8 dot products in registers, per run), then updates both runs as the gradient does.
// - Every dot product keeps kLanes = 4 independent partial sums (element j goes to lane j % 4),
//   added in a fixed order at the end: vector code without -ffast-math.
// - float32 X is read as float32 and widened per element; weights, sums and the loss are double.
// - Mini-batches pass row indices: the kernel reads X[rows[j]] where it lies; nothing is copied.
//
// Instruction sets. The same source is compiled three times: a baseline version (SSE2 on x86-64,
// NEON on arm64) and, on x86-64 with GCC or Clang, a version for AVX2 with FMA (Haswell, 2013, and
// later) and one for AVX-512 (opt-in, see kDefaultAvx512), chosen at run time from cpuid. Every helper is force-inlined into the entry points, so each
// entry point's instruction set covers all of its code and the baseline copy never holds an AVX
// instruction; nothing depends on -march. A wheel built this way runs on any x86-64 and uses
// 256-bit vectors and fused multiply-adds where the CPU has them. GRADSTEP_KERNEL=baseline in the
// environment (or gradstep._core.set_kernel) forces the baseline version. The baseline and AVX2
// versions differ in rounding (a fused multiply-add rounds once), by about 1e-16 relative; AVX2 and
// AVX-512 give the same bits; each gives the same bits for any number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "simd.hpp"
#include "vector_math.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(GRADSTEP_NO_DISPATCH)
#define GRADSTEP_HAS_AVX2_KERNEL 1
#endif

namespace gradstep {

// What one call of a block kernel does: rows rows[0 .. count) (or start .. start + count when
// rows is nullptr) for the runs runs[c0 .. c1), into out + c * stride for each c (the gradient or
// the Hessian-vector product in out[0 .. D), the loss in out[D]); out is zeroed first.
template <class T>
struct BlockJob {
  const T* X;
  std::ptrdiff_t d;
  const double* Y;  // (n, ky); not read by hessp
  std::ptrdiff_t ky;
  const double* SW;  // (n, ks); nullptr when ks == 0 (unit weights)
  std::ptrdiff_t ks;
  const double* P;  // (K, d + 1)
  const double* V;  // (K, d + 1): hessp's vectors; nullptr for the gradient
  const std::ptrdiff_t* runs;
  const std::int64_t* rows;
  std::ptrdiff_t start, count, c0, c1, stride;
  double* out;
  // The rows of a group of four read one after another (one row's dot products, then the next
  // row's) with no software prefetch of contiguous rows, instead of interleaved four rows at a
  // time (see RowOrder), by the gradient's and the Hessian product's pair paths (the run-chunk
  // path keeps its tile). The same operations per row: the same bits.
  bool rowwise = false;
};

// The link of one row with a 0/1 target y (reference.loss_and_residual; simd::link4 for four):
// loss = log(1 + exp(z)) - y z and residual = sigmoid(z) - y, from one e = exp(-|z|), in forms
// that neither overflow nor cancel for any z (see link4).
GRADSTEP_INLINE void link1(double z, double y, double& loss, double& residual) {
  const double e = std::exp(-std::fabs(z));
  loss = (std::max(z, 0.0) - y * z) + std::log1p(e);  // like np.maximum, a NaN z stays NaN
  const double q = 1.0 - y;
  residual = (z >= 0.0 ? q - y * e : q * e - y) / (1.0 + e);
}

// sigmoid(z) (1 - sigmoid(z)) as e / (1 + e)^2 (reference.hess_weight; simd::hess_weight4).
GRADSTEP_INLINE double hess_weight1(double z) {
  const double e = std::exp(-std::fabs(z));
  const double o = 1.0 + e;
  return e / (o * o);
}

// log(1 + exp(z)) and 1 / (1 + exp(-z)) from one e = exp(-|z|) (gradstep._core.link only).
GRADSTEP_INLINE void log1pexp_sigmoid(double z, double& log1pexp, double& sigmoid) {
  const double e = std::exp(-std::fabs(z));
  log1pexp = std::max(z, 0.0) + std::log1p(e);  // like np.maximum, a NaN z stays NaN
  sigmoid = z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

namespace simd {

constexpr std::ptrdiff_t kPrefetchRows = 8;  // how far ahead rows are prefetched
// Groups of four rows whose links (or Hessian weights) are taken back to back by the gradient
// (group_runs) and the Hessian-vector product (group_hessp) where rows are short (at most
// kLinkGroupRowBytes), and the first row prefetched is then that far ahead: the rows of the next
// call. 1,000 x 20 and 512 x 8 in cache, one run, 1 thread (Zen 3): 22.0 -> 17.1 and 19.7 -> 15.0
// ns per row with 4 groups (2: 19.0; 8: 16.6 and 14.3). Long rows keep one group
// at a time: at d = 100, 4 groups were 10 % faster in cache (41 -> 37 ns per row) but about 8 %
// slower from memory (1M x 100, 121 -> 131 ms, medians of 6 alternating processes), where the 16
// rows in use and the 16 prefetched (25 KB) crowd the 32 KB L1.
constexpr std::ptrdiff_t kLinkGroups = 4;
constexpr std::ptrdiff_t kLinkGroupRowBytes = 256;

// Asks for the cache lines of a row ahead of its use: without this the load of the next group
// only starts when its dot products stall on it, and a single thread reaches about half the memory
// bandwidth. Also covers mini-batches, whose rows are scattered.
template <class T>
GRADSTEP_INLINE void prefetch_row(const T* x, std::ptrdiff_t d) {
#if defined(__GNUC__) || defined(__clang__)
  const char* p = reinterpret_cast<const char*>(x);
  const std::ptrdiff_t bytes = d * static_cast<std::ptrdiff_t>(sizeof(T));
  for (std::ptrdiff_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
#else
  (void)x;
  (void)d;
#endif
}

// Where the rows of a block lie: rows start, start + 1, ... of X (a full batch), or rows listed
// by index (a mini-batch). A type for each, so that the kernels are compiled for each and the full
// batch reads no index (1,000 x 20 in cache, 1 thread, Zen 3: 17.2 -> 16.3 ns per row). (Its next
// rows prefetched as one range of bytes instead of row by row: 37 -> 41 ns per row at d = 100.)
struct ContiguousRows {
  std::ptrdiff_t start;
  GRADSTEP_INLINE std::ptrdiff_t operator()(std::ptrdiff_t p) const { return start + p; }
};
struct IndexedRows {
  const std::int64_t* rows;
  GRADSTEP_INLINE std::ptrdiff_t operator()(std::ptrdiff_t p) const {
    return static_cast<std::ptrdiff_t>(rows[p]);
  }
};

// Prefetches the rows at positions from .. to of the block.
template <class T, class RowIndex>
GRADSTEP_INLINE void prefetch_rows(const T* X, std::ptrdiff_t d, RowIndex row, std::ptrdiff_t from,
                                   std::ptrdiff_t to) {
  for (std::ptrdiff_t q = from; q < to; ++q) prefetch_row(X + row(q) * d, d);
}

// z[q][r] = x_r . w_q for NR rows and NW vectors: NR * NW independent Quads, each one the same
// chain of additions as dot1's, so a row's dot product has the same bits in any grouping.
// Keep: x's loads kept in registers (simd::keep_in_register; AVX builds only).
// rowwise: each row's loads in one sweep over its features (BlockJob::rowwise), the same Quads.
template <std::size_t NR, std::size_t NW, class T, bool Keep = false>
GRADSTEP_INLINE void dot_rows(const T* const x[NR], const double* const w[NW], std::ptrdiff_t d,
                              double z[NW][NR], bool rowwise = false) {
  Quad a[NW][NR];
  for (std::size_t q = 0; q < NW; ++q) {
    for (std::size_t r = 0; r < NR; ++r) a[q][r] = Quad{};
  }
  std::ptrdiff_t j = 0;
  if (rowwise) {
    for (std::size_t r = 0; r < NR; ++r) {
      for (j = 0; j + kLanes <= d; j += kLanes) {
        Quad xv;
        load(xv, x[r] + j);
        for (std::size_t q = 0; q < NW; ++q) {
          Quad wv;
          load(wv, w[q] + j);
          madd(a[q][r], xv, wv);
        }
      }
    }
  }
  for (; !rowwise && j + kLanes <= d; j += kLanes) {
    Quad wv[NW];
    for (std::size_t q = 0; q < NW; ++q) load(wv[q], w[q] + j);
    for (std::size_t r = 0; r < NR; ++r) {
      Quad xv;
      load(xv, x[r] + j);
      keep_in_register<Keep && (NW > 1)>(xv);
      for (std::size_t q = 0; q < NW; ++q) madd(a[q][r], xv, wv[q]);
    }
  }
  for (int l = 0; j < d; ++j, ++l) {  // the last d % 4 terms, each in its lane
    for (std::size_t q = 0; q < NW; ++q) {
      for (std::size_t r = 0; r < NR; ++r) add_lane(a[q][r], l, static_cast<double>(x[r][j]) * w[q][j]);
    }
  }
  for (std::size_t q = 0; q < NW; ++q) {
    for (std::size_t r = 0; r < NR; ++r) z[q][r] = hsum(a[q][r]);
  }
}

// x . w for one row (the rows left over after the groups of four), same lanes as dot_rows.
template <class T>
GRADSTEP_INLINE double dot1(const T* GRADSTEP_RESTRICT x, const double* GRADSTEP_RESTRICT w,
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

// a0 v0 + a1 v1 + a2 v2 + a3 v3 as (a0 v0 + a1 v1) + (a2 v2 + a3 v3): two dependent additions
// per element of g instead of four. (Written out: with a loop over a local array GCC no longer
// vectorizes the loop over j.)
GRADSTEP_INLINE double sum4(const double a[4], const double v[4]) {
  return (a[0] * v[0] + a[1] * v[1]) + (a[2] * v[2] + a[3] * v[3]);
}
GRADSTEP_INLINE Quad sum4(const Quad& a0, const Quad& a1, const Quad& a2, const Quad& a3,
                          const Quad& v0, const Quad& v1, const Quad& v2, const Quad& v3) {
  Quad s, t;
  s = mul(a0, v0);
  madd(s, a1, v1);
  t = mul(a2, v2);
  madd(t, a3, v3);
  add(s, t);
  return s;
}

// g_q += sum_r res[q][r] x_r for four rows and NW runs: one pass over the rows serves both
// runs, and g is read and written once per four rows.
// Keep (AVX builds): the loop written in Quads; for two runs each row's load is kept in a register
// (simd::keep_in_register), not loaded again for the second run; the same operations per element.
// For one run GCC's own vectorization of the scalar loop below reloaded the row and g pointers
// from the stack on every iteration and widened float32 through a spilled register (Zen 3, 1M x
// 100, 1 thread: float32 56-59 -> 41-46 ms together with simd::load's widening, float64 84-90 ->
// 75-77 ms).
template <std::size_t NW, class T, bool Keep = false>
GRADSTEP_INLINE void axpy4(double* GRADSTEP_RESTRICT g0, double* GRADSTEP_RESTRICT g1,
                           const double res[NW][4], const T* const x[4], std::ptrdiff_t d) {
  double a[4], b[4];
  for (std::size_t r = 0; r < 4; ++r) {
    a[r] = res[0][r];
    b[r] = res[NW - 1][r];
  }
  // The row pointers in locals marked restrict: read through the array x, GCC reloads all four
  // from the stack on every iteration (a store to g might have changed them), 4 extra loads per
  // 4 elements in a loop bound by its loads.
  const T* GRADSTEP_RESTRICT x0 = x[0];
  const T* GRADSTEP_RESTRICT x1 = x[1];
  const T* GRADSTEP_RESTRICT x2 = x[2];
  const T* GRADSTEP_RESTRICT x3 = x[3];
  std::ptrdiff_t j0 = 0;
  if constexpr (Keep) {
    Quad a0, a1, a2, a3, b0, b1, b2, b3;  // b: the second run's (unused for one run)
    broadcast(a0, a[0]);
    broadcast(a1, a[1]);
    broadcast(a2, a[2]);
    broadcast(a3, a[3]);
    broadcast(b0, b[0]);
    broadcast(b1, b[1]);
    broadcast(b2, b[2]);
    broadcast(b3, b[3]);
    for (; j0 + kLanes <= d; j0 += kLanes) {
      Quad v0, v1, v2, v3;
      load(v0, x0 + j0);
      load(v1, x1 + j0);
      load(v2, x2 + j0);
      load(v3, x3 + j0);
      keep_in_register<NW == 2>(v0);
      keep_in_register<NW == 2>(v1);
      keep_in_register<NW == 2>(v2);
      keep_in_register<NW == 2>(v3);
      add_store(g0 + j0, sum4(a0, a1, a2, a3, v0, v1, v2, v3));
      if constexpr (NW == 2) add_store(g1 + j0, sum4(b0, b1, b2, b3, v0, v1, v2, v3));
    }
  }
  for (std::ptrdiff_t j = j0; j < d; ++j) {
    const double v[4] = {static_cast<double>(x0[j]), static_cast<double>(x1[j]),
                         static_cast<double>(x2[j]), static_cast<double>(x3[j])};
    g0[j] += sum4(a, v);
    if (NW == 2) g1[j] += sum4(b, v);
  }
}

template <class T>
GRADSTEP_INLINE void axpy1(double* GRADSTEP_RESTRICT g, double r, const T* GRADSTEP_RESTRICT x,
                           std::ptrdiff_t d) {
  for (std::ptrdiff_t j = 0; j < d; ++j) g[j] += r * static_cast<double>(x[j]);
}

// Run k's weights of NR rows: the shared ones (s) or, per run, column k of SW.
template <std::size_t NR, bool PerRun, class T>
GRADSTEP_INLINE void run_weights(const BlockJob<T>& job, const std::ptrdiff_t i[NR],
                                 const double s[NR], std::ptrdiff_t k, double out[NR]) {
  for (std::size_t r = 0; r < NR; ++r) {
    if constexpr (PerRun) {
      out[r] = job.SW[i[r] * job.ks + k];
    } else {
      out[r] = s[r];
    }
  }
}

// Four rows of a block: where they lie, their indices and their shared weights.
template <class T>
struct RowGroup {
  const T* x[4];
  std::ptrdiff_t i[4];
  double s[4];
};

// The gradient: NG groups of four rows against NW runs starting at runs[c], in three stages: the
// dot products of every group, then the link of every group, then the updates. A group's link is
// one long chain of dependent operations (exp, log1p, three divisions: 63 ns per call when each
// call waits for the last, 34 ns when they are independent, Zen 3); taken group by group it
// stalls the core, taken for NG groups back to back the chains overlap. Every row's terms and
// every sum are the same operations in the same order as for one group at a time: the same bits.
// (Eight rows per pass over w for one run, eight chains of multiply-adds, measured no faster.)
template <std::size_t NG, std::size_t NW, bool PerRun, bool Avx, class T>
GRADSTEP_INLINE void group_runs(const BlockJob<T>& job, const RowGroup<T>* grp, std::ptrdiff_t c) {
  constexpr std::size_t NR = 4;
  const std::ptrdiff_t d = job.d, D = d + 1;
  const double* w[NW];
  double* g[NW];
  std::ptrdiff_t col[NW];
  std::ptrdiff_t k[NW];
  for (std::size_t q = 0; q < NW; ++q) {
    const std::ptrdiff_t cq = c + static_cast<std::ptrdiff_t>(q);
    k[q] = job.runs[cq];
    w[q] = job.P + k[q] * D;
    g[q] = job.out + cq * job.stride;
    col[q] = job.ky == 1 ? 0 : k[q];
  }
  double z[NG][NW][NR], res[NG][NW][NR];
  for (std::size_t G = 0; G < NG; ++G) dot_rows<NR, NW, T, Avx>(grp[G].x, w, d, z[G], job.rowwise);
  for (std::size_t q = 0; q < NW; ++q) {
    double lsum = g[q][D], gb = g[q][d];
    for (std::size_t G = 0; G < NG; ++G) {
      double y[NR], sq[NR];
      for (std::size_t r = 0; r < NR; ++r) y[r] = job.Y[grp[G].i[r] * job.ky + col[q]];
      run_weights<NR, PerRun>(job, grp[G].i, grp[G].s, k[q], sq);
#if defined(GRADSTEP_VECTOR_EXT)
      const v4d zv = v4d{z[G][q][0], z[G][q][1], z[G][q][2], z[G][q][3]} + splat(w[q][d]);
      const v4d yv = {y[0], y[1], y[2], y[3]};
      const v4d sv = {sq[0], sq[1], sq[2], sq[3]};
      v4d l, residual;
      link4(zv, yv, l, residual);
      const v4d terms = sv * l;
      const v4d rv = sv * residual;
      for (std::size_t r = 0; r < NR; ++r) res[G][q][r] = rv[r];
      for (std::size_t r = 0; r < NR; ++r) lsum += terms[r];  // row order, as the scalar version
#else
      for (std::size_t r = 0; r < NR; ++r) {
        const double zr = z[G][q][r] + w[q][d];
        double l, residual;
        link1(zr, y[r], l, residual);
        lsum += sq[r] * l;
        res[G][q][r] = sq[r] * residual;
      }
#endif
      for (std::size_t r = 0; r < NR; ++r) gb += res[G][q][r];
    }
    g[q][D] = lsum;
    g[q][d] = gb;
  }
  for (std::size_t G = 0; G < NG; ++G) {
    axpy4<NW, T, Avx>(g[0], NW == 2 ? g[NW - 1] : nullptr, res[G], grp[G].x, d);
  }
}

// The Hessian-vector product: NG groups of four rows against NW runs starting at runs[c]. For each
// run the dot products of w_k and v_k with a group's rows are taken in one go (8 Quads, as a pair
// of runs in the gradient); the weights of all groups follow (one exp and one division per group,
// overlapping as the gradient's links do), then both runs' accumulators are updated in one pass
// over each group's rows (axpy4). Same operations in the same order for any NG: the same bits.
template <std::size_t NG, std::size_t NW, bool PerRun, class T>
GRADSTEP_INLINE void group_hessp(const BlockJob<T>& job, const RowGroup<T>* grp, std::ptrdiff_t c) {
  const std::ptrdiff_t d = job.d, D = d + 1;
  double* g[NW];
  double res[NG][NW][4];
  double zu[NG][NW][2][4];
  const double* wv[NW][2];
  std::ptrdiff_t k[NW];
  for (std::size_t q = 0; q < NW; ++q) {
    const std::ptrdiff_t cq = c + static_cast<std::ptrdiff_t>(q);
    k[q] = job.runs[cq];
    wv[q][0] = job.P + k[q] * D;
    wv[q][1] = job.V + k[q] * D;
    g[q] = job.out + cq * job.stride;
  }
  for (std::size_t G = 0; G < NG; ++G) {
    for (std::size_t q = 0; q < NW; ++q) {
      dot_rows<4, 2>(grp[G].x, wv[q], d, zu[G][q], job.rowwise);
    }
  }
  for (std::size_t q = 0; q < NW; ++q) {
    const double b = wv[q][0][d], vb = wv[q][1][d];
    double hb = g[q][d];
    for (std::size_t G = 0; G < NG; ++G) {
      double sq[4];
      run_weights<4, PerRun>(job, grp[G].i, grp[G].s, k[q], sq);
#if defined(GRADSTEP_VECTOR_EXT)
      const v4d zv = v4d{zu[G][q][0][0], zu[G][q][0][1], zu[G][q][0][2], zu[G][q][0][3]} + splat(b);
      const v4d uv = v4d{zu[G][q][1][0], zu[G][q][1][1], zu[G][q][1][2], zu[G][q][1][3]} + splat(vb);
      const v4d sv = {sq[0], sq[1], sq[2], sq[3]};
      const v4d rv = sv * hess_weight4(zv) * uv;  // reference.hessp's order
      for (std::size_t r = 0; r < 4; ++r) res[G][q][r] = rv[r];
#else
      for (std::size_t r = 0; r < 4; ++r) {
        res[G][q][r] = sq[r] * hess_weight1(zu[G][q][0][r] + b) * (zu[G][q][1][r] + vb);
      }
#endif
      for (std::size_t r = 0; r < 4; ++r) hb += res[G][q][r];
    }
    g[q][d] = hb;
  }
  for (std::size_t G = 0; G < NG; ++G) {
    axpy4<NW>(g[0], NW == 2 ? g[NW - 1] : nullptr, res[G], grp[G].x, d);
  }
}

// The Hessian-vector product of one group of four rows (long rows): for each run the dot products
// of w_k and v_k with the four rows in one go, then its weights, then both runs' accumulators are
// updated in one pass over the rows (axpy4). The same operations as group_hessp's, in the same
// order per run. (group_hessp with NG = 1, its stages run after one another for both runs, was
// measured ~15 % slower at d = 100.)
template <std::size_t NW, bool PerRun, class T>
GRADSTEP_INLINE void group_hessp1(const BlockJob<T>& job, const T* const x[4],
                                 const std::ptrdiff_t i[4], const double s[4], std::ptrdiff_t c) {
  const std::ptrdiff_t d = job.d, D = d + 1;
  double* g[NW];
  double res[NW][4];
  for (std::size_t q = 0; q < NW; ++q) {
    const std::ptrdiff_t cq = c + static_cast<std::ptrdiff_t>(q);
    const std::ptrdiff_t k = job.runs[cq];
    const double* wv[2] = {job.P + k * D, job.V + k * D};
    g[q] = job.out + cq * job.stride;
    double zu[2][4], sq[4];
    dot_rows<4, 2>(x, wv, d, zu, job.rowwise);
    run_weights<4, PerRun>(job, i, s, k, sq);
    const double b = wv[0][d], vb = wv[1][d];
#if defined(GRADSTEP_VECTOR_EXT)
    const v4d zv = v4d{zu[0][0], zu[0][1], zu[0][2], zu[0][3]} + splat(b);
    const v4d uv = v4d{zu[1][0], zu[1][1], zu[1][2], zu[1][3]} + splat(vb);
    const v4d sv = {sq[0], sq[1], sq[2], sq[3]};
    const v4d rv = sv * hess_weight4(zv) * uv;  // reference.hessp's order
    for (std::size_t r = 0; r < 4; ++r) res[q][r] = rv[r];
#else
    for (std::size_t r = 0; r < 4; ++r) {
      res[q][r] = sq[r] * hess_weight1(zu[0][r] + b) * (zu[1][r] + vb);
    }
#endif
    double hb = g[q][d];
    for (std::size_t r = 0; r < 4; ++r) hb += res[q][r];
    g[q][d] = hb;
  }
  axpy4<NW>(g[0], NW == 2 ? g[NW - 1] : nullptr, res, x, d);
}

// NG groups of four rows against the tile's runs from first_run on, two at a time.
template <bool Hess, std::size_t NG, bool PerRun, bool Avx, class T>
GRADSTEP_INLINE void groups_of_runs(const BlockJob<T>& job, const RowGroup<T>* grp,
                                    std::ptrdiff_t first_run) {
  std::ptrdiff_t c = first_run;
  if constexpr (Hess && NG == 1) {
    const RowGroup<T>& h = grp[0];
    for (; c + 2 <= job.c1; c += 2) group_hessp1<2, PerRun>(job, h.x, h.i, h.s, c);
    if (c < job.c1) group_hessp1<1, PerRun>(job, h.x, h.i, h.s, c);
  } else if constexpr (Hess) {
    for (; c + 2 <= job.c1; c += 2) group_hessp<NG, 2, PerRun>(job, grp, c);
    if (c < job.c1) group_hessp<NG, 1, PerRun>(job, grp, c);
  } else {
    for (; c + 2 <= job.c1; c += 2) group_runs<NG, 2, PerRun, Avx>(job, grp, c);
    if (c < job.c1) group_runs<NG, 1, PerRun, Avx>(job, grp, c);
  }
}

// The rows of a block from position p on in calls of NG groups of four rows, each against the
// tile's runs two at a time; returns the first position not taken.
template <bool Hess, bool PerRun, std::size_t NG, bool Avx, class T, class RowIndex>
GRADSTEP_INLINE std::ptrdiff_t row_groups_of(const BlockJob<T>& job, RowIndex row,
                                             std::ptrdiff_t first_run, std::ptrdiff_t p) {
  constexpr auto kRows = static_cast<std::ptrdiff_t>(4 * NG);
  constexpr std::ptrdiff_t kLead = std::max(kPrefetchRows, kRows);  // the next call's rows
  const std::ptrdiff_t d = job.d;
  for (; p + kRows <= job.count; p += kRows) {
    RowGroup<T> grp[NG];
    for (std::size_t G = 0; G < NG; ++G) {
      for (std::size_t r = 0; r < 4; ++r) {
        const std::ptrdiff_t i = row(p + static_cast<std::ptrdiff_t>(4 * G + r));
        grp[G].i[r] = i;
        grp[G].x[r] = job.X + i * d;
        if constexpr (PerRun) {
          grp[G].s[r] = 0.0;  // not read: each run reads its own column
        } else {
          grp[G].s[r] = job.SW ? job.SW[i] : 1.0;  // ks == 1: column 0 is SW[i]
        }
      }
    }
    if (!(job.rowwise && std::is_same_v<RowIndex, ContiguousRows>)) {  // see RowOrder
      prefetch_rows(job.X, d, row, p + kLead, std::min(job.count, p + kLead + kRows));
    }
    groups_of_runs<Hess, NG, PerRun, Avx>(job, grp, first_run);
  }
  return p;
}

// The groups of 4 rows of a block from row 0 on: kLinkGroups of them per call where rows are short
// (see kLinkGroups), then one per call; returns the first row not taken.
template <bool Hess, bool PerRun, bool Avx, class T, class RowIndex>
GRADSTEP_INLINE std::ptrdiff_t row_groups(const BlockJob<T>& job, RowIndex row,
                                          std::ptrdiff_t first_run) {
  std::ptrdiff_t p = 0;
  if (job.d * static_cast<std::ptrdiff_t>(sizeof(T)) <= kLinkGroupRowBytes) {
    p = row_groups_of<Hess, PerRun, static_cast<std::size_t>(kLinkGroups), Avx>(job, row,
                                                                              first_run, p);
  }
  return row_groups_of<Hess, PerRun, 1, Avx>(job, row, first_run, p);
}

#if defined(GRADSTEP_VECTOR_EXT)
// Runs in chunks (8 in the AVX2 kernel; 16, then 8, in the AVX-512 one), vectorized over the
// runs instead of over the features: the layout of a GEMM micro-kernel (BLIS, OpenBLAS). With K
// runs the gradient is two small matrix products per
// block, Z = X_b W^T and G += R^T X_b; taking runs in pairs with the dot products vectorized over
// features (group_runs) leaves each 4-row group with 8 horizontal sums and re-reads the rows and
// the gradient from L1 once per pair, and was measured at about 1 multiply-add per cycle. Here
// the chunk's weights are packed feature-major (wt[j][0..8)), so that for each feature one load
// of two vectors of weights meets four broadcast row entries: 8 independent multiply-add chains
// (4 rows x 2 vectors of runs) in registers, no horizontal sums, and the same shape for the
// gradient (gt[j][0..8) += x_rj res_r). A run's dot products are then one chain over j, not four
// lanes, so its bits differ from the pair path's by rounding (about 1e-16 relative); both are
// deterministic and independent of the number of threads.
// Vectors of runs: v4d (four runs; one register in the AVX2 kernel) or v8d (eight; one register in
// the AVX-512 kernel). Lane q of a vector is run q of its group, so a run's sums are the same chain
// of operations at either width: the AVX2 and AVX-512 kernels give the same bits.
typedef double v8d __attribute__((vector_size(64)));

template <class V>
constexpr std::ptrdiff_t kVecRuns = static_cast<std::ptrdiff_t>(sizeof(V) / sizeof(double));

template <class V>
GRADSTEP_INLINE V splat_runs(double a) {
  if constexpr (kVecRuns<V> == 4) {
    return splat(a);
  } else {
    return V{a, a, a, a, a, a, a, a};
  }
}

// A row entry *p in every lane of a vector of runs (simd::splat_load for four runs).
template <class V, bool Avx>
GRADSTEP_INLINE V splat_row(const double* p) {
  if constexpr (kVecRuns<V> == 4) {
    return splat_load<Avx>(p);
  } else {
    return splat_runs<V>(*p);
  }
}

// Per-thread scratch for the packed weights and gradients of one chunk: grown, never shrunk.
inline std::vector<double>& chunk_scratch() {
  static thread_local std::vector<double> scratch;
  return scratch;
}

// The runs' values of row i in a table with one column per run (Y or SW), or one shared value;
// `adjacent`: the vector's columns are col[0], col[0] + 1, ... (runs in order, as a K-run call
// with one target column per run has them), read as one load instead of one load per lane.
template <class V>
GRADSTEP_INLINE V run_values(const double* table, std::ptrdiff_t i, std::ptrdiff_t width,
                             bool shared, bool adjacent, const std::ptrdiff_t* col) {
  if (shared) return splat_runs<V>(table[i * width]);
  const double* row = table + i * width;
  V v;
  if (adjacent) {
    std::memcpy(&v, row + col[0], sizeof v);
  } else if constexpr (kVecRuns<V> == 4) {
    v = V{row[col[0]], row[col[1]], row[col[2]], row[col[3]]};
  } else {
    v = V{row[col[0]], row[col[1]], row[col[2]], row[col[3]],
          row[col[4]], row[col[5]], row[col[6]], row[col[7]]};
  }
  return v;
}

// Whether col[0 .. n) are adjacent columns in order (run_values' `adjacent`).
GRADSTEP_INLINE bool adjacent_columns(const std::ptrdiff_t* col, std::ptrdiff_t n) {
  for (std::ptrdiff_t q = 1; q < n; ++q) {
    if (col[q] != col[0] + q) return false;
  }
  return true;
}

// The gradient for the runs runs[c .. c + m * NV * lanes) of the tile, NV vectors of runs at a
// time (a chunk), over the rows in groups of four (the first job.count / 4 * 4 rows; the rest are
// the caller's); returns the first run not taken. out must be zeroed.
// Avx: compiled into the AVX2 entry point (a row entry's broadcast is simd::splat_load's one load).
template <bool PerRun, class V, std::ptrdiff_t NV, bool Avx, class T, class RowIndex>
GRADSTEP_INLINE std::ptrdiff_t run_chunks(const BlockJob<T>& job, RowIndex row, std::ptrdiff_t c) {
  constexpr std::ptrdiff_t W = kVecRuns<V>, kChunk = W * NV;
  constexpr auto kArrayChunk = static_cast<std::size_t>(kChunk);  // array extents
  constexpr auto kArrayNV = static_cast<std::size_t>(NV);
  const std::ptrdiff_t d = job.d, D = d + 1;
  const std::ptrdiff_t grouped = job.count / 4 * 4;
  if (job.c1 - c < kChunk || grouped == 0) return c;
  // float32 rows are widened once per group into xd (4 rows): a broadcast of a double from
  // memory is one instruction, a widened float three.
  constexpr bool kWiden = !std::is_same_v<T, double>;
  const std::size_t need = static_cast<std::size_t>((2 * kChunk + (kWiden ? 4 : 0)) * d);
  std::vector<double>& scratch = chunk_scratch();
  if (scratch.size() < need) scratch.resize(need);
  double* wt = scratch.data();
  double* gt = wt + kChunk * d;
  double* xd = gt + kChunk * d;
  for (; c + kChunk <= job.c1; c += kChunk) {
    std::ptrdiff_t k[kArrayChunk], ycol[kArrayChunk];
    for (std::ptrdiff_t q = 0; q < kChunk; ++q) {
      k[q] = job.runs[c + q];
      ycol[q] = job.ky == 1 ? 0 : k[q];
      const double* w = job.P + k[q] * D;
      for (std::ptrdiff_t j = 0; j < d; ++j) wt[j * kChunk + q] = w[j];
    }
    std::fill(gt, gt + kChunk * d, 0.0);
    V b[kArrayNV], loss[kArrayNV], bias[kArrayNV];
    bool y_adjacent[kArrayNV], w_adjacent[kArrayNV];
    for (std::ptrdiff_t h = 0; h < NV; ++h) {
      for (std::ptrdiff_t q = 0; q < W; ++q) b[h][q] = job.P[k[h * W + q] * D + d];
      loss[h] = bias[h] = splat_runs<V>(0.0);
      y_adjacent[h] = adjacent_columns(ycol + W * h, W);
      w_adjacent[h] = adjacent_columns(k + W * h, W);
    }
    for (std::ptrdiff_t p = 0; p < grouped; p += 4) {
      std::ptrdiff_t i[4];
      const double* x[4];
      for (std::ptrdiff_t r = 0; r < 4; ++r) {
        i[r] = row(p + r);
        if constexpr (kWiden) {
          const T* src = job.X + i[r] * d;
          double* dst = xd + r * d;
          for (std::ptrdiff_t j = 0; j < d; ++j) dst[j] = static_cast<double>(src[j]);
          x[r] = dst;
        } else {
          x[r] = job.X + i[r] * d;
        }
      }
      prefetch_rows(job.X, d, row, p + kPrefetchRows, std::min(grouped, p + kPrefetchRows + 4));
      // The sums in acc, copied to z after the loop (with z's address escaping, GCC stored z to
      // memory on every iteration next to splat_load's asm).
      V acc[4][kArrayNV];
      for (std::ptrdiff_t r = 0; r < 4; ++r) {
        for (std::ptrdiff_t h = 0; h < NV; ++h) acc[r][h] = splat_runs<V>(0.0);
      }
      for (std::ptrdiff_t j = 0; j < d; ++j) {
        V w[kArrayNV];
        for (std::ptrdiff_t h = 0; h < NV; ++h) {
          std::memcpy(&w[h], wt + j * kChunk + h * W, sizeof w[h]);
        }
        for (std::ptrdiff_t r = 0; r < 4; ++r) {
          const V xb = splat_row<V, Avx>(x[r] + j);
          for (std::ptrdiff_t h = 0; h < NV; ++h) acc[r][h] += xb * w[h];
        }
      }
      V z[4][kArrayNV];
      for (std::ptrdiff_t r = 0; r < 4; ++r) {
        for (std::ptrdiff_t h = 0; h < NV; ++h) z[r][h] = acc[r][h];
      }
      V res[4][kArrayNV];
      for (std::ptrdiff_t r = 0; r < 4; ++r) {  // rows in order: the loss sums as the pair path's
        for (std::ptrdiff_t h = 0; h < NV; ++h) {
          const V yv = run_values<V>(job.Y, i[r], job.ky, job.ky == 1, y_adjacent[h],
                                     ycol + W * h);
          const V sv = PerRun ? run_values<V>(job.SW, i[r], job.ks, false, w_adjacent[h],
                                              k + W * h)
                              : splat_runs<V>(job.SW ? job.SW[i[r]] : 1.0);
          V l, residual;
          link4(z[r][h] + b[h], yv, l, residual);  // 4 or 8 lanes: vector_math's templates
          loss[h] += sv * l;
          res[r][h] = sv * residual;
          bias[h] += res[r][h];
        }
      }
      for (std::ptrdiff_t j = 0; j < d; ++j) {
        V g[kArrayNV];
        for (std::ptrdiff_t h = 0; h < NV; ++h) {
          std::memcpy(&g[h], gt + j * kChunk + h * W, sizeof g[h]);
        }
        for (std::ptrdiff_t r = 0; r < 4; ++r) {
          const V xb = splat_row<V, Avx>(x[r] + j);
          for (std::ptrdiff_t h = 0; h < NV; ++h) g[h] += xb * res[r][h];
        }
        for (std::ptrdiff_t h = 0; h < NV; ++h) {
          std::memcpy(gt + j * kChunk + h * W, &g[h], sizeof g[h]);
        }
      }
    }
    for (std::ptrdiff_t q = 0; q < kChunk; ++q) {
      double* g = job.out + (c + q) * job.stride;
      for (std::ptrdiff_t j = 0; j < d; ++j) g[j] = gt[j * kChunk + q];
      g[d] = bias[q / W][q % W];
      g[D] = loss[q / W][q % W];
    }
  }
  return c;
}
#endif

// Row i's weight for run k.
template <bool PerRun, class T>
GRADSTEP_INLINE double weight_of(const BlockJob<T>& job, std::ptrdiff_t i, std::ptrdiff_t k) {
  if constexpr (PerRun) {
    return job.SW[i * job.ks + k];
  } else {
    (void)k;
    return job.SW ? job.SW[i] : 1.0;
  }
}

// One block and one tile of runs: rows in groups of 4 (kLinkGroups of them at a time for the
// gradient), then the rows left one by one. (A GEMM-like order, all dot products of the block
// first, then the link, then the gradient from L2, was measured 1.5 x slower for 16 runs.)
// Wide: the AVX-512 kernel, whose chunks of runs are 16 and 8 runs in 512-bit vectors. Avx: the
// AVX2 kernel, where the gradient's pairs of runs keep a row's loads in registers for both runs
// (simd::keep_in_register in dot_rows and axpy4: same bits; 100,000 x 100, 1 thread, Zen 3:
// K = 4 7-16 % faster, K = 2 ~5 %, in three A/B runs). Not in the Hessian-vector product: with
// one run (w and v as the pair) it was no faster from memory and 8-11 % slower in cache
// (20,000 x 20). The AVX-512 kernel is left as it was: not measured with it (no AVX-512 here).
template <bool Hess, bool PerRun, bool Wide, bool Avx, class T, class RowIndex>
GRADSTEP_INLINE void tile_impl(const BlockJob<T>& job, RowIndex row) {
  const std::ptrdiff_t d = job.d, D = d + 1, ky = job.ky;
  const T* X = job.X;
  std::fill(job.out + job.c0 * job.stride, job.out + job.c1 * job.stride, 0.0);
  std::ptrdiff_t first_pair = job.c0;  // runs before it were taken in chunks (run_chunks)
#if defined(GRADSTEP_VECTOR_EXT)
  if constexpr (!Hess && Wide) {
    first_pair = run_chunks<PerRun, v8d, 2, Avx>(job, row, job.c0);
    first_pair = run_chunks<PerRun, v8d, 1, Avx>(job, row, first_pair);
  } else if constexpr (!Hess) {
    first_pair = run_chunks<PerRun, v4d, 2, Avx>(job, row, job.c0);
  }
#endif
  std::ptrdiff_t p = first_pair < job.c1 ? row_groups<Hess, PerRun, Avx>(job, row, first_pair)
                                         : job.count / 4 * 4;
  for (; p < job.count; ++p) {
    const std::ptrdiff_t i = row(p);
    const T* x = X + i * d;
    for (std::ptrdiff_t c = job.c0; c < job.c1; ++c) {
      const std::ptrdiff_t k = job.runs[c];
      const double s = weight_of<PerRun>(job, i, k);
      const double* w = job.P + k * D;
      const double z = dot1(x, w, d) + w[d];
      double* g = job.out + c * job.stride;
      double r;
      if constexpr (Hess) {
        const double* v = job.V + k * D;
        const double u = dot1(x, v, d) + v[d];
        r = s * hess_weight1(z) * u;
      } else {
        const double y = job.Y[i * ky + (ky == 1 ? 0 : k)];
        double l, res;
        link1(z, y, l, res);
        g[D] += s * l;
        r = s * res;
      }
      axpy1(g, r, x, d);
      g[d] += r;
    }
  }
}

template <bool Hess, bool PerRun, bool Wide, bool Avx, class T>
GRADSTEP_INLINE void tile_rows(const BlockJob<T>& job) {
  if (job.rows) {
    tile_impl<Hess, PerRun, Wide, Avx>(job, IndexedRows{job.rows});
  } else {
    tile_impl<Hess, PerRun, Wide, Avx>(job, ContiguousRows{job.start});
  }
}

// The partial loss and gradient of one block and one tile.
template <bool Wide, bool Avx, class T>
GRADSTEP_INLINE void block_tile(const BlockJob<T>& job) {
  if (job.ks > 1) {
    tile_rows<false, true, Wide, Avx>(job);
  } else {
    tile_rows<false, false, Wide, Avx>(job);
  }
}

// The partial Hessian-vector product of one block and one tile.
template <bool Wide, bool Avx, class T>
GRADSTEP_INLINE void hessp_tile(const BlockJob<T>& job) {
  if (job.ks > 1) {
    tile_rows<true, true, Wide, Avx>(job);
  } else {
    tile_rows<true, false, Wide, Avx>(job);
  }
}

}  // namespace simd

// The two compiled versions of simd::block_tile and simd::hessp_tile. Each is an ordinary (not
// inline-everything) function so that it is compiled once, with its own instruction set.
#if defined(__GNUC__) || defined(__clang__)
#define GRADSTEP_NOINLINE __attribute__((noinline))
#else
#define GRADSTEP_NOINLINE
#endif

// log(1 + exp(z)) and sigmoid(z) of n values through the vector exp and log1p of the kernel's
// link (the last n % 4 by the scalar one); exposed for the accuracy tests of vector_math.hpp.
GRADSTEP_INLINE void link_array(const double* z, std::ptrdiff_t n, double* log1pexp,
                                double* sigmoid) {
  std::ptrdiff_t p = 0;
#if defined(GRADSTEP_VECTOR_EXT)
  for (; p + 4 <= n; p += 4) {
    simd::v4d l, s;
    simd::log1pexp_sigmoid4(simd::v4d{z[p], z[p + 1], z[p + 2], z[p + 3]}, l, s);
    for (int r = 0; r < 4; ++r) {
      log1pexp[p + r] = l[r];
      sigmoid[p + r] = s[r];
    }
  }
#endif
  for (; p < n; ++p) log1pexp_sigmoid(z[p], log1pexp[p], sigmoid[p]);
}

// The kernel's own per-row terms of n rows: loss, residual (0/1 targets y) and Hessian weight,
// four at a time by the vector link, the last n % 4 by the scalar one, as in the kernel; exposed
// for the accuracy tests (gradstep._core.link_terms).
GRADSTEP_INLINE void terms_array(const double* z, const double* y, std::ptrdiff_t n,
                                 double* loss, double* residual, double* hess_weight) {
  std::ptrdiff_t p = 0;
#if defined(GRADSTEP_VECTOR_EXT)
  for (; p + 4 <= n; p += 4) {
    const simd::v4d zv{z[p], z[p + 1], z[p + 2], z[p + 3]};
    simd::v4d l, r;
    simd::link4(zv, simd::v4d{y[p], y[p + 1], y[p + 2], y[p + 3]}, l, r);
    const simd::v4d h = simd::hess_weight4(zv);
    for (int i = 0; i < 4; ++i) {
      loss[p + i] = l[i];
      residual[p + i] = r[i];
      hess_weight[p + i] = h[i];
    }
  }
#endif
  for (; p < n; ++p) {
    link1(z[p], y[p], loss[p], residual[p]);
    hess_weight[p] = hess_weight1(z[p]);
  }
}

GRADSTEP_NOINLINE inline void link_baseline(const double* z, std::ptrdiff_t n, double* l,
                                            double* s) {
  link_array(z, n, l, s);
}

GRADSTEP_NOINLINE inline void terms_baseline(const double* z, const double* y, std::ptrdiff_t n,
                                             double* l, double* r, double* h) {
  terms_array(z, y, n, l, r, h);
}

#if defined(GRADSTEP_HAS_AVX2_KERNEL)
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE inline void link_avx2(
    const double* z, std::ptrdiff_t n, double* l, double* s) {
  link_array(z, n, l, s);
}

__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE inline void terms_avx2(
    const double* z, const double* y, std::ptrdiff_t n, double* l, double* r, double* h) {
  terms_array(z, y, n, l, r, h);
}
#endif

template <class T>
GRADSTEP_NOINLINE void block_tile_baseline(const BlockJob<T>& job) {
  simd::block_tile<false, false>(job);
}

template <class T>
GRADSTEP_NOINLINE void hessp_tile_baseline(const BlockJob<T>& job) {
  simd::hessp_tile<false, false>(job);
}

#if defined(GRADSTEP_HAS_AVX2_KERNEL)
template <class T>
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE void block_tile_avx2(const BlockJob<T>& job) {
  simd::block_tile<false, true>(job);
}

template <class T>
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE void hessp_tile_avx2(const BlockJob<T>& job) {
  simd::hessp_tile<false, true>(job);
}

// The AVX-512 version (AVX-512 F, VL and DQ: Skylake-SP, 2017, and later Xeons; AMD Zen 4): the
// same source with 32 vector registers, 512-bit auto-vectorized loops (the gradient updates) and
// 16 or 8 runs per register tile of run_chunks. It gives the AVX2 version's bits.
// Clang takes no prefer-vector-width in a target attribute: it warns and drops the WHOLE attribute
// (the "AVX-512" functions were then compiled for the baseline, and -Werror builds failed), so
// under Clang the width goes in its own attribute, min_vector_width(512), which lets the
// functions use 512-bit vectors (checked with clang 22 via `zig c++`: zmm code, no warning).
#if defined(__clang__)
#define GRADSTEP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"), min_vector_width(512)))
#else
#define GRADSTEP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")))
#endif

GRADSTEP_TARGET_AVX512 GRADSTEP_NOINLINE inline void link_avx512(const double* z, std::ptrdiff_t n,
                                                                 double* l, double* s) {
  link_array(z, n, l, s);
}

GRADSTEP_TARGET_AVX512 GRADSTEP_NOINLINE inline void terms_avx512(const double* z,
                                                                  const double* y,
                                                                  std::ptrdiff_t n, double* l,
                                                                  double* r, double* h) {
  terms_array(z, y, n, l, r, h);
}

template <class T>
GRADSTEP_TARGET_AVX512 GRADSTEP_NOINLINE void block_tile_avx512(const BlockJob<T>& job) {
  simd::block_tile<true, false>(job);
}

template <class T>
GRADSTEP_TARGET_AVX512 GRADSTEP_NOINLINE void hessp_tile_avx512(const BlockJob<T>& job) {
  simd::hessp_tile<true, false>(job);
}
#endif

// The kernel in use: "avx2" where the CPU has AVX2 and FMA (and the build is for x86-64 with GCC
// or Clang), else "baseline". "avx512" runs where the CPU has AVX-512 F, VL and DQ; it is not the
// default (see kDefaultAvx512). GRADSTEP_KERNEL=baseline|avx2|avx512 in the environment asks for
// one: a name this CPU cannot run falls back to the default.
enum class Kernel { baseline, avx2, avx512 };

// Whether a CPU with AVX-512 runs the "avx512" kernel by default. Off: on the one AVX-512 machine
// measured (a 16-core Intel Xeon, model 207; README), 1 thread, it is about twice as slow at
// K = 16 (1M x 100: 1048 vs 501 ms; with the 8-lane link since, 400k x 100 in a harness: 253 and
// 233 vs 178 and 139 ms) for a reason not found, and faster only at K = 1 float64 (97.5 vs
// 112.9 ms; float32 86.7 vs 81.3). It passes the kernel tests there, bit-identical to "avx2".
constexpr bool kDefaultAvx512 = false;

inline bool cpu_has_avx2_fma() {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// __builtin_cpu_supports also checks that the operating system saves the 512-bit registers.
inline bool cpu_has_avx512() {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

inline const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::avx512:
      return "avx512";
    case Kernel::avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

// The kernels this CPU and build can run, slowest first.
inline std::vector<Kernel> available_kernels() {
  std::vector<Kernel> kernels{Kernel::baseline};
  if (cpu_has_avx2_fma()) kernels.push_back(Kernel::avx2);
  if (cpu_has_avx512()) kernels.push_back(Kernel::avx512);
  return kernels;
}

inline Kernel default_kernel() {
  const std::vector<Kernel> can = available_kernels();
  const char* forced = std::getenv("GRADSTEP_KERNEL");
  if (forced != nullptr) {
    for (Kernel k : can) {
      if (std::string(forced) == kernel_name(k)) return k;
    }
  }
  if (cpu_has_avx512() && kDefaultAvx512) return Kernel::avx512;
  return cpu_has_avx2_fma() ? Kernel::avx2 : Kernel::baseline;
}

inline Kernel& current_kernel() {
  static Kernel kernel = default_kernel();
  return kernel;
}

// Selects a kernel by name; raises std::invalid_argument for an unknown name or one this CPU or
// build cannot run.
inline void select_kernel(const std::string& name) {
  for (Kernel k : available_kernels()) {
    if (name == kernel_name(k)) {
      current_kernel() = k;
      return;
    }
  }
  if (name == "avx2" || name == "avx512") {
    throw std::invalid_argument(
        "kernel '" + name + "' needs an x86-64 CPU with " +
        (name == "avx2" ? "AVX2 and FMA" : "AVX-512 F, VL and DQ") +
        " and a GCC or Clang build; this one can run " +
        (cpu_has_avx2_fma() ? "'baseline' and 'avx2'" : "only 'baseline'"));
  }
  throw std::invalid_argument("kernel must be 'baseline', 'avx2' or 'avx512', got '" + name + "'");
}

// The order in which the gradient and the Hessian-vector product read a group's four rows
// (BlockJob::rowwise). "interleaved": each feature of the four rows in turn, the rows 8 ahead
// prefetched by software: four independent chains of multiply-adds in flight, the faster order
// from L1 / L2 everywhere and, measured on Zen 3, from memory too. "rowwise": one row after another, no software prefetch of
// contiguous rows. On AMD Zen 4 (2 cores, 1 MB L2, one thread, a harness of the engine), X of
// 100 float64 features: from memory (1M rows) and from L3 (20,000 rows, 16 MB) interleaved
// 120-130 and 76-125 ns per row, rowwise 45-56 and 42-48 (a plain loop of one row at a time,
// as Numba's: 53); from 4 MB, 33-38 vs 38-44; in L2 (1,000 rows) 28-38 vs 37-50. Through
// gradstep (1M x 100, best of 5, two alternations): float64 K = 1 99 -> 52 ms, K = 2 142 -> 56,
// K = 3 148 -> 96; float32 (400-byte rows) K = 1 39 -> 36, K = 2 47 -> 52, K = 3 82 -> 88. The
// Hessian-vector product (harness, 1M x 100): K = 1 122 -> 47-49 ns per row, K = 2 155-160 ->
// 82-122. "auto" therefore takes rowwise for float64 calls reading at least kRowwiseBytes of X
// on AMD CPUs with AVX-512 (Zen 4 and later; measured on Zen 4 only), interleaved elsewhere.
// GRADSTEP_ROW_ORDER=auto|rowwise|interleaved in the environment, or
// gradstep._core.set_row_order, asks for one. Either order gives the same bits.
enum class RowOrder { automatic, rowwise, interleaved };

constexpr std::ptrdiff_t kRowwiseBytes = std::ptrdiff_t{8} << 20;

inline const char* row_order_name(RowOrder o) {
  switch (o) {
    case RowOrder::rowwise:
      return "rowwise";
    case RowOrder::interleaved:
      return "interleaved";
    default:
      return "auto";
  }
}

inline bool parse_row_order(const std::string& name, RowOrder* out) {
  for (RowOrder o : {RowOrder::automatic, RowOrder::rowwise, RowOrder::interleaved}) {
    if (name == row_order_name(o)) {
      *out = o;
      return true;
    }
  }
  return false;
}

inline RowOrder& current_row_order() {
  static RowOrder order = [] {
    RowOrder o = RowOrder::automatic;
    const char* asked = std::getenv("GRADSTEP_ROW_ORDER");
    if (asked != nullptr) parse_row_order(asked, &o);  // an unknown name: auto
    return o;
  }();
  return order;
}

// Selects the row order by name; std::invalid_argument for an unknown one.
inline void select_row_order(const std::string& name) {
  if (!parse_row_order(name, &current_row_order())) {
    throw std::invalid_argument("row order must be 'auto', 'rowwise' or 'interleaved', got '" +
                                name + "'");
  }
}

inline bool cpu_prefers_rowwise() {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  static const bool prefers = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("amd") && cpu_has_avx512();
  }();
  return prefers;
#else
  return false;
#endif
}

// Whether a call that reads `bytes` of an X of `element_bytes` per entry takes its rows one
// after another.
inline bool rowwise_rows(std::ptrdiff_t bytes, std::size_t element_bytes) {
  switch (current_row_order()) {
    case RowOrder::rowwise:
      return true;
    case RowOrder::interleaved:
      return false;
    default:
      return element_bytes == sizeof(double) && bytes >= kRowwiseBytes && cpu_prefers_rowwise();
  }
}

inline void run_link(const double* z, std::ptrdiff_t n, double* l, double* s) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() == Kernel::avx512) {
    link_avx512(z, n, l, s);
    return;
  }
  if (current_kernel() == Kernel::avx2) {
    link_avx2(z, n, l, s);
    return;
  }
#endif
  link_baseline(z, n, l, s);
}

inline void run_terms(const double* z, const double* y, std::ptrdiff_t n, double* l, double* r,
                      double* h) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() == Kernel::avx512) {
    terms_avx512(z, y, n, l, r, h);
    return;
  }
  if (current_kernel() == Kernel::avx2) {
    terms_avx2(z, y, n, l, r, h);
    return;
  }
#endif
  terms_baseline(z, y, n, l, r, h);
}

template <class T>
inline void run_block_kernel(const BlockJob<T>& job) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() == Kernel::avx512) {
    block_tile_avx512(job);
    return;
  }
  if (current_kernel() == Kernel::avx2) {
    block_tile_avx2(job);
    return;
  }
#endif
  block_tile_baseline(job);
}

template <class T>
inline void run_hessp_kernel(const BlockJob<T>& job) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() == Kernel::avx512) {
    hessp_tile_avx512(job);
    return;
  }
  if (current_kernel() == Kernel::avx2) {
    hessp_tile_avx2(job);
    return;
  }
#endif
  hessp_tile_baseline(job);
}

}  // namespace gradstep
