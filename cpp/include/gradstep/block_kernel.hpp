// The inner loop of the gradient: the partial loss and gradient of one block of rows for a tile of
// runs, and the choice, at run time, of the instruction set it is compiled for.
//
// Per row i and run k (weights w_k, intercept b_k, target y, weight s):
//     z = x_i . w_k + b_k
//     loss_k += s * (log(1 + exp(z)) - y z)
//     g_k    += s * (sigmoid(z) - y) * (x_i, 1)
//
// Layout of the work, and why:
// - Rows are taken four at a time and runs two at a time: one load of a piece of x_i serves two
//   runs and one load of a piece of w_k serves four rows, so a pair of runs keeps 8 dot products
//   (32 partial sums) in registers and the loads stay well below the multiply-adds. The gradient
//   update reads the four rows once for both runs and reads and writes g_k once per four rows.
// - Every dot product keeps kLanes = 4 independent partial sums (element j goes to lane j % 4),
//   added in a fixed order at the end: vector code without -ffast-math.
// - float32 X is read as float32 and widened per element; weights, sums and the loss are double.
// - Mini-batches pass row indices: the kernel reads X[rows[j]] where it lies; nothing is copied.
//
// Instruction sets. The same source is compiled twice: a baseline version (SSE2 on x86-64, NEON on
// arm64) and, on x86-64 with GCC or Clang, a version for AVX2 with FMA (Haswell, 2013, and later),
// chosen at run time from cpuid. Every helper is force-inlined into the two entry points, so each
// entry point's instruction set covers all of its code and the baseline copy never holds an AVX
// instruction; nothing depends on -march. A wheel built this way runs on any x86-64 and uses
// 256-bit vectors and fused multiply-adds where the CPU has them. GRADSTEP_KERNEL=baseline in the
// environment (or gradstep._core.set_kernel) forces the baseline version. The two versions differ
// in rounding (a fused multiply-add rounds once), by about 1e-16 relative; each of them gives the
// same bits for any number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "simd.hpp"
#include "vector_math.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(GRADSTEP_NO_DISPATCH)
#define GRADSTEP_HAS_AVX2_KERNEL 1
#endif

namespace gradstep {

// What one call of the block kernel does: rows rows[0 .. count) (or start .. start + count when
// rows is nullptr) for the runs runs[c0 .. c1), into out + c * stride for each c (the gradient in
// out[0 .. D), the loss in out[D]); out is zeroed first.
template <class T>
struct BlockJob {
  const T* X;
  std::ptrdiff_t d;
  const double* Y;  // (n, ky)
  std::ptrdiff_t ky;
  const double* sw;  // nullptr: unit weights
  const double* P;   // (K, d + 1)
  const std::ptrdiff_t* runs;
  const std::int64_t* rows;
  std::ptrdiff_t start, count, c0, c1, stride;
  double* out;
};

// log(1 + exp(z)) and 1 / (1 + exp(-z)) from one e = exp(-|z|): neither overflows for any z
// (reference.log1pexp_and_sigmoid).
GRADSTEP_INLINE void log1pexp_sigmoid(double z, double& log1pexp, double& sigmoid) {
  const double e = std::exp(-std::fabs(z));
  log1pexp = std::max(z, 0.0) + std::log1p(e);  // like np.maximum, a NaN z stays NaN
  sigmoid = z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

namespace simd {

constexpr std::ptrdiff_t kPrefetchRows = 8;  // how far ahead rows are prefetched

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

// z[q][r] = x_r . w_q for NR rows and NW runs: NR * NW independent Quads, each one the same
// chain of additions as dot1's, so a row's dot product has the same bits in any grouping.
template <int NR, int NW, class T>
GRADSTEP_INLINE void dot_rows(const T* const x[NR], const double* const w[NW], std::ptrdiff_t d,
                              double z[NW][NR]) {
  Quad a[NW][NR];
  for (int q = 0; q < NW; ++q) {
    for (int r = 0; r < NR; ++r) a[q][r] = Quad{};
  }
  std::ptrdiff_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    Quad wv[NW];
    for (int q = 0; q < NW; ++q) load(wv[q], w[q] + j);
    for (int r = 0; r < NR; ++r) {
      Quad xv;
      load(xv, x[r] + j);
      for (int q = 0; q < NW; ++q) madd(a[q][r], xv, wv[q]);
    }
  }
  for (int l = 0; j < d; ++j, ++l) {  // the last d % 4 terms, each in its lane
    for (int q = 0; q < NW; ++q) {
      for (int r = 0; r < NR; ++r) add_lane(a[q][r], l, static_cast<double>(x[r][j]) * w[q][j]);
    }
  }
  for (int q = 0; q < NW; ++q) {
    for (int r = 0; r < NR; ++r) z[q][r] = hsum(a[q][r]);
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

// g_q += sum_r res[q][r] x_r for four rows and NW runs: one pass over the rows serves both
// runs, and g is read and written once per four rows.
template <int NW, class T>
GRADSTEP_INLINE void axpy4(double* GRADSTEP_RESTRICT g0, double* GRADSTEP_RESTRICT g1,
                           const double res[NW][4], const T* const x[4], std::ptrdiff_t d) {
  double a[4], b[4];
  for (int r = 0; r < 4; ++r) {
    a[r] = res[0][r];
    b[r] = res[NW - 1][r];
  }
  for (std::ptrdiff_t j = 0; j < d; ++j) {
    double v[4];
    for (int r = 0; r < 4; ++r) v[r] = static_cast<double>(x[r][j]);
    g0[j] += sum4(a, v);
    if (NW == 2) g1[j] += sum4(b, v);
  }
}

template <class T>
GRADSTEP_INLINE void axpy1(double* GRADSTEP_RESTRICT g, double r, const T* GRADSTEP_RESTRICT x,
                           std::ptrdiff_t d) {
  for (std::ptrdiff_t j = 0; j < d; ++j) g[j] += r * static_cast<double>(x[j]);
}

// NR rows (x, their indices i and weights s) against NW runs starting at runs[c]; the link is
// taken four rows at a time.
template <int NR, int NW, class T>
GRADSTEP_INLINE void group_runs(const BlockJob<T>& job, const T* const x[NR],
                                const std::ptrdiff_t i[NR], const double s[NR], std::ptrdiff_t c) {
  static_assert(NR == 4, "the gradient update (axpy4) takes rows four at a time");
  const std::ptrdiff_t d = job.d, D = d + 1;
  const double* w[NW];
  double* g[NW];
  std::ptrdiff_t col[NW];
  for (int q = 0; q < NW; ++q) {
    const std::ptrdiff_t k = job.runs[c + q];
    w[q] = job.P + k * D;
    g[q] = job.out + (c + q) * job.stride;
    col[q] = job.ky == 1 ? 0 : k;
  }
  double z[NW][NR], res[NW][NR];
  dot_rows<NR, NW>(x, w, d, z);
  for (int q = 0; q < NW; ++q) {
    double y[NR];
    for (int r = 0; r < NR; ++r) y[r] = job.Y[i[r] * job.ky + col[q]];
    double lsum = g[q][D], gb = g[q][d];
#if defined(GRADSTEP_VECTOR_EXT)
    for (int r0 = 0; r0 < NR; r0 += 4) {
      const v4d zv = v4d{z[q][r0], z[q][r0 + 1], z[q][r0 + 2], z[q][r0 + 3]} + splat(w[q][d]);
      const v4d yv = {y[r0], y[r0 + 1], y[r0 + 2], y[r0 + 3]};
      const v4d sv = {s[r0], s[r0 + 1], s[r0 + 2], s[r0 + 3]};
      v4d l, sig;
      link4(zv, l, sig);
      const v4d terms = sv * (l - yv * zv);
      const v4d rv = sv * (sig - yv);
      for (int r = 0; r < 4; ++r) res[q][r0 + r] = rv[r];
      for (int r = 0; r < 4; ++r) lsum += terms[r];  // row order, as the scalar version
    }
#else
    for (int r = 0; r < NR; ++r) {
      const double zr = z[q][r] + w[q][d];
      double l, sig;
      log1pexp_sigmoid(zr, l, sig);
      lsum += s[r] * (l - y[r] * zr);
      res[q][r] = s[r] * (sig - y[r]);
    }
#endif
    for (int r = 0; r < NR; ++r) gb += res[q][r];
    g[q][D] = lsum;
    g[q][d] = gb;
  }
  axpy4<NW>(g[0], NW == 2 ? g[NW - 1] : nullptr, res, x, d);
}

// The groups of NR rows of a block from row p on; returns the first row not taken.
template <int NR, class T, class RowIndex>
GRADSTEP_INLINE std::ptrdiff_t row_groups(const BlockJob<T>& job, RowIndex row) {
  const std::ptrdiff_t d = job.d;
  std::ptrdiff_t p = 0;
  for (; p + NR <= job.count; p += NR) {
    std::ptrdiff_t i[NR];
    const T* x[NR];
    double s[NR];
    for (int r = 0; r < NR; ++r) {
      i[r] = row(p + r);
      x[r] = job.X + i[r] * d;
      s[r] = job.sw ? job.sw[i[r]] : 1.0;
    }
    const std::ptrdiff_t ahead = std::min(job.count, p + kPrefetchRows + NR);
    for (std::ptrdiff_t q = p + kPrefetchRows; q < ahead; ++q) {
      prefetch_row(job.X + row(q) * d, d);
    }
    std::ptrdiff_t c = job.c0;
    for (; c + 2 <= job.c1; c += 2) group_runs<NR, 2>(job, x, i, s, c);
    if (c < job.c1) group_runs<NR, 1>(job, x, i, s, c);
  }
  return p;
}

// One block and one tile of runs: rows in groups of 4, then the rows left one by one. (Groups of 8
// for a single run, two link chains in flight, were measured no faster at d = 20 and slower for
// float32 X at d = 100; a GEMM-like order, all dot products of the block first, then the link,
// then the gradient from L2, was measured 1.5 x slower for 16 runs.)
template <class T>
GRADSTEP_INLINE void block_tile(const BlockJob<T>& job) {
  const std::ptrdiff_t d = job.d, D = d + 1, ky = job.ky;
  const T* X = job.X;
  const double* sw = job.sw;
  std::fill(job.out + job.c0 * job.stride, job.out + job.c1 * job.stride, 0.0);
  auto row = [&](std::ptrdiff_t p) -> std::ptrdiff_t {
    return job.rows ? static_cast<std::ptrdiff_t>(job.rows[p]) : job.start + p;
  };
  std::ptrdiff_t p = row_groups<4>(job, row);
  for (; p < job.count; ++p) {
    const std::ptrdiff_t i = row(p);
    const T* x = X + i * d;
    const double s = sw ? sw[i] : 1.0;
    for (std::ptrdiff_t c = job.c0; c < job.c1; ++c) {
      const std::ptrdiff_t k = job.runs[c];
      const double* w = job.P + k * D;
      const double z = dot1(x, w, d) + w[d];
      const double y = job.Y[i * ky + (ky == 1 ? 0 : k)];
      double l, sig;
      log1pexp_sigmoid(z, l, sig);
      double* g = job.out + c * job.stride;
      g[D] += s * (l - y * z);
      const double r = s * (sig - y);
      axpy1(g, r, x, d);
      g[d] += r;
    }
  }
}

}  // namespace simd

// The two compiled versions of simd::block_tile. Each is an ordinary (not inline-everything)
// function so that it is compiled once, with its own instruction set.
#if defined(__GNUC__) || defined(__clang__)
#define GRADSTEP_NOINLINE __attribute__((noinline))
#else
#define GRADSTEP_NOINLINE
#endif

// log(1 + exp(z)) and sigmoid(z) of n values through the kernel's vector link (the last n % 4 by
// the scalar one, as in the kernel); exposed for the accuracy tests of vector_math.hpp.
GRADSTEP_INLINE void link_array(const double* z, std::ptrdiff_t n, double* log1pexp,
                                double* sigmoid) {
  std::ptrdiff_t p = 0;
#if defined(GRADSTEP_VECTOR_EXT)
  for (; p + 4 <= n; p += 4) {
    simd::v4d l, s;
    simd::link4(simd::v4d{z[p], z[p + 1], z[p + 2], z[p + 3]}, l, s);
    for (int r = 0; r < 4; ++r) {
      log1pexp[p + r] = l[r];
      sigmoid[p + r] = s[r];
    }
  }
#endif
  for (; p < n; ++p) log1pexp_sigmoid(z[p], log1pexp[p], sigmoid[p]);
}

GRADSTEP_NOINLINE inline void link_baseline(const double* z, std::ptrdiff_t n, double* l,
                                            double* s) {
  link_array(z, n, l, s);
}

#if defined(GRADSTEP_HAS_AVX2_KERNEL)
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE inline void link_avx2(
    const double* z, std::ptrdiff_t n, double* l, double* s) {
  link_array(z, n, l, s);
}
#endif

template <class T>
GRADSTEP_NOINLINE void block_tile_baseline(const BlockJob<T>& job) {
  simd::block_tile(job);
}

#if defined(GRADSTEP_HAS_AVX2_KERNEL)
template <class T>
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE void block_tile_avx2(const BlockJob<T>& job) {
  simd::block_tile(job);
}
#endif

// The kernel in use: "avx2" where the CPU has AVX2 and FMA (and the build is for x86-64 with GCC
// or Clang), else "baseline"; GRADSTEP_KERNEL=baseline in the environment forces the baseline.
enum class Kernel { baseline, avx2 };

inline bool cpu_has_avx2_fma() {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

inline Kernel default_kernel() {
  const char* forced = std::getenv("GRADSTEP_KERNEL");
  if (forced != nullptr && std::string(forced) == "baseline") return Kernel::baseline;
  return cpu_has_avx2_fma() ? Kernel::avx2 : Kernel::baseline;
}

inline Kernel& current_kernel() {
  static Kernel kernel = default_kernel();
  return kernel;
}

inline const char* kernel_name(Kernel k) { return k == Kernel::avx2 ? "avx2" : "baseline"; }

// Selects a kernel by name; raises std::invalid_argument for an unknown name or one this CPU or
// build cannot run.
inline void select_kernel(const std::string& name) {
  if (name == "baseline") {
    current_kernel() = Kernel::baseline;
  } else if (name == "avx2") {
    if (!cpu_has_avx2_fma()) {
      throw std::invalid_argument("kernel 'avx2' needs an x86-64 CPU with AVX2 and FMA and a "
                                  "GCC or Clang build; this one has only 'baseline'");
    }
    current_kernel() = Kernel::avx2;
  } else {
    throw std::invalid_argument("kernel must be 'baseline' or 'avx2', got '" + name + "'");
  }
}

inline void run_link(const double* z, std::ptrdiff_t n, double* l, double* s) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() == Kernel::avx2) {
    link_avx2(z, n, l, s);
    return;
  }
#endif
  link_baseline(z, n, l, s);
}

template <class T>
inline void run_block_kernel(const BlockJob<T>& job) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() == Kernel::avx2) {
    block_tile_avx2(job);
    return;
  }
#endif
  block_tile_baseline(job);
}

}  // namespace gradstep
