// The logistic loss and gradient, and the Hessian-vector product, of K runs over a CSR matrix, in
// one pass over the nonzeros for all runs (gradstep._backends.sparse_reference states the
// contract; gradstep._backends.sparse_numba is the Numba version of the same pass).
//
// Per row i and active run k: z = sum_j data[j] P[k, indices[j]] + P[k, d], the link of the dense
// kernels (link4 / link1 of vector_math.hpp and block_kernel.hpp: no log1p(exp(z)) - y z, which
// cancels), and the residual s (sigmoid(z) - y) scattered back over the same nonzeros.
//
// Layout of the work, and why:
// - The parameters are read transposed, (D, Ka) for the Ka active runs, and each block copies
//   them into its slot of sums, feature by feature next to that feature's Ka gradient sums: one
//   nonzero reads Ka contiguous parameters and updates the Ka sums beside them (one cache line
//   at Ka = 1 and 2), so the Ka dot products of a row take one walk over its nonzeros and the Ka
//   residuals one more walk (the row is then in L1). Nothing of size n x d or d x K per row.
// - Rows are taken four at a time: the four rows' dot products first, then each run's link over
//   the four rows with the vector link (as the dense kernel does), then the four scatters. A run's
//   link therefore never depends on how many runs share the pass.
// - Every dot product keeps four partial sums, nonzero number q of the row in sum q % 4, added as
//   (s0 + s1) + (s2 + s3): one chain of dependent multiply-adds would bound a single run by the
//   multiply-add latency. Runs are taken 8 (gradient) or 4 at a time in vectors and the 2 or 3
//   left over together (one walk); each run's arithmetic is the same in every path, so a run's
//   bits do not depend on the other runs either.
// - Determinism across threads: rows are cut into blocks of about the same work (nonzeros + 1 per
//   row, at least max(2^15, 32 D)); the cut depends on the matrix, the rows asked for and D only,
//   never on the thread count. Each block sums into its own slot, and the slots' sums are added
//   into the zeroed result in block order. Blocks run in waves of at most 2 per thread (one slot
//   each), so the scratch is at most 2 x threads slots whatever the matrix (sparse_numba's
//   _partition/_n_slots do the same, with a byte cap instead). The work per block is at least 32
//   nonzeros per parameter so that filling and adding a slot stays a few per cent of the pass.
// - Safety: every column index is in [0, d), proven either by gradstep.sparse.check_csr (a pass
//   of its own) or, with check_rows, by the kernel itself just before it reads by them
//   (rows_are_canonical, per group of rows; the public one-pass calls and a fit's first pass,
//   so that they read X once); the bindings check the sizes, and the partition checks each used
//   row's range (it reads indptr anyway), so a row's nonzeros are always read inside the arrays.
//   Only prefetches (which never fault) use a group's indices before its check.
// - Multinomial (softmax) loss: a run's C classes are C consecutive columns of runs (the Engine's
//   n_classes), so the walks are the binary ones with Ka = C x runs; only the link differs, taken
//   over each run's C scores of a row at once (softmax_link.hpp), the loss summed into the run's
//   first column. Same one pass over the nonzeros for all classes of all runs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "block_kernel.hpp"
#include "block_slots.hpp"
#include "logistic.hpp"
#include "softmax_link.hpp"
#include "thread_pool.hpp"
#include "vector_math.hpp"

namespace gradstep {
namespace csr {

// A CSR matrix as the kernels read it. indptr is int32 or int64 independently of the indices (a
// user may widen one of them), read through at(); exactly one of indptr32 / indptr64 is set.
template <class T, class I>
struct Matrix {
  using value_type = T;
  using index_type = I;
  const T* data = nullptr;
  const I* indices = nullptr;
  const std::int32_t* indptr32 = nullptr;
  const std::int64_t* indptr64 = nullptr;
  std::ptrdiff_t n = 0;
  std::ptrdiff_t d = 0;

  std::ptrdiff_t at(std::ptrdiff_t i) const {
    return indptr64 ? static_cast<std::ptrdiff_t>(indptr64[i])
                    : static_cast<std::ptrdiff_t>(indptr32[i]);
  }
};

// Scratch doubles per block: (4, Ka) dot products, (4, Ka) vector dot products (hessp), (4, Ka)
// residuals, and for the multinomial loss one run's scores and vector scores laid out (C, 4)
// for the vector links.
inline std::ptrdiff_t scratch_size(std::ptrdiff_t Ka, std::ptrdiff_t classes) {
  return 12 * Ka + (classes > 1 ? 8 * classes : 0);
}

// One block of rows for the Ka active runs: positions start .. stop of rows (rows of X when rows
// is nullptr) into out, slot_size(d, Ka, Hess) doubles laid out as block() says, which the kernel
// fills first. scratch holds scratch_size(Ka, classes) doubles. With check_rows, the rows'
// column indices are checked before the walks read by them (rows_are_canonical); the block stops
// at the first row that fails and writes it to *bad_row (which stays -1 otherwise).
template <class T, class I>
struct Job {
  Matrix<T, I> X;
  const double* Y;  // (n, ky); not read by hessp
  std::ptrdiff_t ky;
  const double* SW;  // (n, ks); nullptr when ks == 0
  std::ptrdiff_t ks;
  const double* PT;  // (d + 1, Ka)
  const double* VT;  // (d + 1, Ka): hessp's vectors; nullptr for the gradient
  const std::ptrdiff_t* runs;  // run index of each of the Ka columns (Y's and SW's columns)
  std::ptrdiff_t Ka;
  const std::int64_t* rows;
  std::ptrdiff_t start, stop;
  double* out;
  double* scratch;
  bool check_rows;
  std::ptrdiff_t* bad_row;
  // multinomial: each run's C = classes consecutive columns share a link over the row's integer
  // labels (Y is not read); the columns' run indices are run * C + class. classes == 1: binary.
  const std::int64_t* labels;
  std::ptrdiff_t classes;
  // The gradient of a call of one block (Engine::sweep): its sums go straight to out in the
  // result's layout ((d + 2, Ka): the features' sums, then the intercept's and the loss's) and
  // its parameters are read from PT, so that such a call (a mini-batch) copies no parameters
  // into a slot and adds no slot back: O(d) work less per step. The same sums, bit for bit.
  bool direct = false;
};

// A block's sums are kept next to the values the same nonzero reads (see block()): per feature,
// the Ka parameters, hessp's Ka vector values, then the Ka sums.
template <bool Hess>
constexpr std::ptrdiff_t kLanes = Hess ? 3 : 2;

inline std::ptrdiff_t lanes_of(bool hess) { return hess ? kLanes<true> : kLanes<false>; }

inline std::ptrdiff_t slot_size(std::ptrdiff_t d, std::ptrdiff_t Ka, bool hess) {
  return d * lanes_of(hess) * Ka + 2 * Ka;
}

// Over indices[j0 .. j1): the largest index as an unsigned number (a negative one wraps above any
// column count) and the number of pairs (j - 1, j), j0 < j, whose indices do not increase. The
// counts run in I's width over chunks of 2^20 (no overflow), with no branch: the loops vectorize
// (7 instructions per 8 int32 indices with AVX2).
template <class I>
struct IndexScreen {
  std::make_unsigned_t<I> top = 0;
  std::int64_t falls = 0;
};

template <class I>
GRADSTEP_INLINE IndexScreen<I> screen_indices(const I* indices, std::ptrdiff_t j0,
                                              std::ptrdiff_t j1) {
  using U = std::make_unsigned_t<I>;
  IndexScreen<I> out;
  if (j1 <= j0) return out;
  constexpr std::ptrdiff_t kChunk = std::ptrdiff_t{1} << 20;
  U top = static_cast<U>(indices[j0]);
  for (std::ptrdiff_t c0 = j0 + 1; c0 < j1; c0 += kChunk) {
    const std::ptrdiff_t c1 = std::min(j1, c0 + kChunk);
    I count = 0;
    for (std::ptrdiff_t j = c0; j < c1; ++j) {
      top = std::max(top, static_cast<U>(indices[j]));
      count += static_cast<I>(indices[j] <= indices[j - 1]);
    }
    out.falls += count;
  }
  out.top = top;
  return out;
}

namespace kernel {

using simd::kPrefetchRows;

GRADSTEP_INLINE std::ptrdiff_t col(std::int32_t c) { return static_cast<std::ptrdiff_t>(c); }
GRADSTEP_INLINE std::ptrdiff_t col(std::int64_t c) { return static_cast<std::ptrdiff_t>(c); }

// z = x . w over one row's nnz nonzeros (x their values, c their columns), w[c * stride] being
// column c's parameter: four partial sums, nonzero q in sum q % 4.
template <class T, class I>
GRADSTEP_INLINE double dot1(const T* x, const I* c, std::ptrdiff_t nnz, const double* w,
                            std::ptrdiff_t stride) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  std::ptrdiff_t q = 0;
  for (; q + 4 <= nnz; q += 4) {
    s0 += static_cast<double>(x[q]) * w[col(c[q]) * stride];
    s1 += static_cast<double>(x[q + 1]) * w[col(c[q + 1]) * stride];
    s2 += static_cast<double>(x[q + 2]) * w[col(c[q + 2]) * stride];
    s3 += static_cast<double>(x[q + 3]) * w[col(c[q + 3]) * stride];
  }
  if (q < nnz) s0 += static_cast<double>(x[q]) * w[col(c[q]) * stride];
  if (q + 1 < nnz) s1 += static_cast<double>(x[q + 1]) * w[col(c[q + 1]) * stride];
  if (q + 2 < nnz) s2 += static_cast<double>(x[q + 2]) * w[col(c[q + 2]) * stride];
  return (s0 + s1) + (s2 + s3);
}

// dot1 of two parameter vectors in the same walk (hessp: z and u).
template <class T, class I>
GRADSTEP_INLINE void dot1_pair(const T* x, const I* c, std::ptrdiff_t nnz, const double* w,
                               const double* v, std::ptrdiff_t stride, double& z, double& u) {
  double s[4] = {0.0, 0.0, 0.0, 0.0}, t[4] = {0.0, 0.0, 0.0, 0.0};
  std::ptrdiff_t q = 0;
  for (; q + 4 <= nnz; q += 4) {
    for (std::ptrdiff_t l = 0; l < 4; ++l) {
      const double xv = static_cast<double>(x[q + l]);
      const std::ptrdiff_t o = col(c[q + l]) * stride;
      s[l] += xv * w[o];
      t[l] += xv * v[o];
    }
  }
  for (std::ptrdiff_t l = 0; q + l < nnz; ++l) {
    const double xv = static_cast<double>(x[q + l]);
    const std::ptrdiff_t o = col(c[q + l]) * stride;
    s[l] += xv * w[o];
    t[l] += xv * v[o];
  }
  z = (s[0] + s[1]) + (s[2] + s[3]);
  u = (t[0] + t[1]) + (t[2] + t[3]);
}

// dot1 for R (2 or 3) consecutive runs in one walk (the runs left over from the vectors): each
// run keeps dot1's four partial sums, so it gets dot1's bits, without a walk of its own.
template <std::size_t R, class T, class I>
GRADSTEP_INLINE void dotr(const T* x, const I* c, std::ptrdiff_t nnz, const double* w,
                          std::ptrdiff_t stride, double* z) {
  double s[4][R] = {};
  std::ptrdiff_t q = 0;
  for (; q + 4 <= nnz; q += 4) {
    for (std::ptrdiff_t l = 0; l < 4; ++l) {
      const double xv = static_cast<double>(x[q + l]);
      const double* p = w + col(c[q + l]) * stride;
      for (std::size_t a = 0; a < R; ++a) s[l][a] += xv * p[a];
    }
  }
  for (std::ptrdiff_t l = 0; q + l < nnz; ++l) {
    const double xv = static_cast<double>(x[q + l]);
    const double* p = w + col(c[q + l]) * stride;
    for (std::size_t a = 0; a < R; ++a) s[l][a] += xv * p[a];
  }
  for (std::size_t a = 0; a < R; ++a) z[a] = (s[0][a] + s[1][a]) + (s[2][a] + s[3][a]);
}

#if defined(GRADSTEP_VECTOR_EXT)
using simd::splat;
using simd::v4d;

GRADSTEP_INLINE v4d load4(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GRADSTEP_INLINE void store4(double* p, v4d v) { std::memcpy(p, &v, sizeof v); }

// dot1 for NV * 4 consecutive runs at once (w points at the first one's column): the same four
// partial sums per run, each a vector lane, so every run gets dot1's bits.
template <std::size_t NV, class T, class I>
GRADSTEP_INLINE void dotv(const T* x, const I* c, std::ptrdiff_t nnz, const double* w,
                          std::ptrdiff_t stride, double* z) {
  v4d s[4][NV];
  for (std::size_t l = 0; l < 4; ++l) {
    for (std::size_t h = 0; h < NV; ++h) s[l][h] = splat(0.0);
  }
  std::ptrdiff_t q = 0;
  for (; q + 4 <= nnz; q += 4) {
    for (std::size_t l = 0; l < 4; ++l) {
      const auto ql = q + static_cast<std::ptrdiff_t>(l);
      const v4d xv = splat(static_cast<double>(x[ql]));
      const double* p = w + col(c[ql]) * stride;
      for (std::size_t h = 0; h < NV; ++h) s[l][h] += xv * load4(p + 4 * h);
    }
  }
  for (std::size_t l = 0; q + static_cast<std::ptrdiff_t>(l) < nnz; ++l) {
    const auto ql = q + static_cast<std::ptrdiff_t>(l);
    const v4d xv = splat(static_cast<double>(x[ql]));
    const double* p = w + col(c[ql]) * stride;
    for (std::size_t h = 0; h < NV; ++h) s[l][h] += xv * load4(p + 4 * h);
  }
  for (std::size_t h = 0; h < NV; ++h) {
    store4(z + 4 * h, (s[0][h] + s[1][h]) + (s[2][h] + s[3][h]));
  }
}

// dot1_pair for 4 consecutive runs at once.
template <class T, class I>
GRADSTEP_INLINE void dotv_pair(const T* x, const I* c, std::ptrdiff_t nnz, const double* w,
                               const double* v, std::ptrdiff_t stride, double* z, double* u) {
  v4d s[4], t[4];
  for (int l = 0; l < 4; ++l) s[l] = t[l] = splat(0.0);
  std::ptrdiff_t q = 0;
  for (; q + 4 <= nnz; q += 4) {
    for (int l = 0; l < 4; ++l) {
      const v4d xv = splat(static_cast<double>(x[q + l]));
      const std::ptrdiff_t o = col(c[q + l]) * stride;
      s[l] += xv * load4(w + o);
      t[l] += xv * load4(v + o);
    }
  }
  for (int l = 0; q + l < nnz; ++l) {
    const v4d xv = splat(static_cast<double>(x[q + l]));
    const std::ptrdiff_t o = col(c[q + l]) * stride;
    s[l] += xv * load4(w + o);
    t[l] += xv * load4(v + o);
  }
  store4(z, (s[0] + s[1]) + (s[2] + s[3]));
  store4(u, (t[0] + t[1]) + (t[2] + t[3]));
}
#endif

// z[a] = row . w[:, a] for the Ka runs, column c's values at w + c * stride (the block's
// interleaved sums, below): 8, then 4 runs at a time in vectors, the rest (2 or 3) in one walk.
template <std::ptrdiff_t stride_one_run, class T, class I>
GRADSTEP_INLINE void row_dots(const T* x, const I* c, std::ptrdiff_t nnz, const double* w,
                              std::ptrdiff_t stride, std::ptrdiff_t Ka, double* z) {
  std::ptrdiff_t a = 0;
#if defined(GRADSTEP_VECTOR_EXT)
  for (; a + 8 <= Ka; a += 8) dotv<2>(x, c, nnz, w + a, stride, z + a);
  for (; a + 4 <= Ka; a += 4) dotv<1>(x, c, nnz, w + a, stride, z + a);
#endif
  if (Ka == 1) {  // one run: a constant stride (no multiply per nonzero)
    z[0] = dot1(x, c, nnz, w, stride_one_run);
    return;
  }
  // The rest (< 4 where vectors are compiled) in one walk. A switch, not a helper taking lambdas:
  // a lambda's body does not inherit the AVX2 kernel's target attribute (no FMA there), which
  // changed the bits of these runs against a run alone (measured).
  switch (Ka - a) {
    case 0:
      return;
    case 2:
      dotr<2>(x, c, nnz, w + a, stride, z + a);
      return;
    case 3:
      dotr<3>(x, c, nnz, w + a, stride, z + a);
      return;
    default:
      for (; a < Ka; ++a) z[a] = dot1(x, c, nnz, w + a, stride);
  }
}

// row_dots of w into z and of v into u, in one walk per run group.
template <std::ptrdiff_t stride_one_run, class T, class I>
GRADSTEP_INLINE void row_dot_pairs(const T* x, const I* c, std::ptrdiff_t nnz, const double* w,
                                   const double* v, std::ptrdiff_t stride, std::ptrdiff_t Ka,
                                   double* z, double* u) {
  std::ptrdiff_t a = 0;
#if defined(GRADSTEP_VECTOR_EXT)
  for (; a + 4 <= Ka; a += 4) dotv_pair(x, c, nnz, w + a, v + a, stride, z + a, u + a);
#endif
  if (Ka == 1) {
    dot1_pair(x, c, nnz, w, v, stride_one_run, z[0], u[0]);
    return;
  }
  for (; a < Ka; ++a) dot1_pair(x, c, nnz, w + a, v + a, stride, z[a], u[a]);
}

// acc[c * stride] += r x for every nonzero (x, c) of the row: one run's column of the sums.
// Four nonzeros at a time, all four loads before the four stores: a row's columns are distinct,
// so they cannot alias, and the processor need not order each load after the store before it (a
// frequent column stored by the previous row taught it to wait on every store: measured 2 x
// slower, one nonzero at a time).
template <class T, class I>
GRADSTEP_INLINE void scatter1(const T* x, const I* c, std::ptrdiff_t nnz, double r,
                              std::ptrdiff_t stride, double* GRADSTEP_RESTRICT acc) {
  std::ptrdiff_t q = 0;
  for (; q + 4 <= nnz; q += 4) {
    double* g0 = acc + col(c[q]) * stride;
    double* g1 = acc + col(c[q + 1]) * stride;
    double* g2 = acc + col(c[q + 2]) * stride;
    double* g3 = acc + col(c[q + 3]) * stride;
    const double v0 = *g0 + r * static_cast<double>(x[q]);
    const double v1 = *g1 + r * static_cast<double>(x[q + 1]);
    const double v2 = *g2 + r * static_cast<double>(x[q + 2]);
    const double v3 = *g3 + r * static_cast<double>(x[q + 3]);
    *g0 = v0;
    *g1 = v1;
    *g2 = v2;
    *g3 = v3;
  }
  for (; q < nnz; ++q) acc[col(c[q]) * stride] += r * static_cast<double>(x[q]);
}

// scatter1 for R (2 or 3) consecutive runs in one walk (the runs left over from the vectors): a
// nonzero's R loads before its R stores; each sum gets scatter1's single multiply-add.
template <std::size_t R, class T, class I>
GRADSTEP_INLINE void scatterr(const T* x, const I* c, std::ptrdiff_t nnz, const double* r,
                              std::ptrdiff_t stride, double* GRADSTEP_RESTRICT acc) {
  double rr[R];
  for (std::size_t a = 0; a < R; ++a) rr[a] = r[a];
  for (std::ptrdiff_t q = 0; q < nnz; ++q) {
    double* g = acc + col(c[q]) * stride;
    const double xv = static_cast<double>(x[q]);
    double v[R];
    for (std::size_t a = 0; a < R; ++a) v[a] = g[a] + rr[a] * xv;
    for (std::size_t a = 0; a < R; ++a) g[a] = v[a];
  }
}

#if defined(GRADSTEP_VECTOR_EXT)
// scatter1 for NV * 4 consecutive runs (acc points at the first one's column), one vector per
// four runs: each sum gets scatter1's single multiply-add per nonzero, in the row's order.
template <std::size_t NV, class T, class I>
GRADSTEP_INLINE void scatterv(const T* x, const I* c, std::ptrdiff_t nnz, const double* r,
                              std::ptrdiff_t stride, double* GRADSTEP_RESTRICT acc) {
  v4d rv[NV];
  for (std::size_t h = 0; h < NV; ++h) rv[h] = load4(r + 4 * h);
  std::ptrdiff_t q = 0;
  if constexpr (NV == 1) {  // four nonzeros' loads before their stores (see scatter1)
    for (; q + 4 <= nnz; q += 4) {
      double* g0 = acc + col(c[q]) * stride;
      double* g1 = acc + col(c[q + 1]) * stride;
      double* g2 = acc + col(c[q + 2]) * stride;
      double* g3 = acc + col(c[q + 3]) * stride;
      const v4d v0 = load4(g0) + rv[0] * splat(static_cast<double>(x[q]));
      const v4d v1 = load4(g1) + rv[0] * splat(static_cast<double>(x[q + 1]));
      const v4d v2 = load4(g2) + rv[0] * splat(static_cast<double>(x[q + 2]));
      const v4d v3 = load4(g3) + rv[0] * splat(static_cast<double>(x[q + 3]));
      store4(g0, v0);
      store4(g1, v1);
      store4(g2, v2);
      store4(g3, v3);
    }
  }
  for (; q < nnz; ++q) {  // NV > 1: one nonzero's NV loads before its NV stores
    double* g = acc + col(c[q]) * stride;
    const v4d xv = splat(static_cast<double>(x[q]));
    v4d v[NV];
    for (std::size_t h = 0; h < NV; ++h) v[h] = load4(g + 4 * h) + rv[h] * xv;
    for (std::size_t h = 0; h < NV; ++h) store4(g + 4 * h, v[h]);
  }
}
#endif

// acc[c * stride + a] += r[a] x for every nonzero (x, c) of the row and every run a: runs 16,
// then 4 at a time in vectors, the 2 or 3 left together, each a walk over the row (in L1); every
// sum gets the same single multiply-add per nonzero in any path. stride_one_run is the stride when
// Ka == 1, as a constant.
template <std::ptrdiff_t stride_one_run, class T, class I>
GRADSTEP_INLINE void scatter(const T* x, const I* c, std::ptrdiff_t nnz, const double* r,
                             std::ptrdiff_t stride, std::ptrdiff_t Ka,
                             double* GRADSTEP_RESTRICT acc) {
  if (Ka == 1) {  // one run: a constant stride (no multiply per nonzero)
    scatter1(x, c, nnz, r[0], stride_one_run, acc);
    return;
  }
  std::ptrdiff_t a = 0;
#if defined(GRADSTEP_VECTOR_EXT)
  for (; a + 16 <= Ka; a += 16) scatterv<4>(x, c, nnz, r + a, stride, acc + a);
  for (; a + 4 <= Ka; a += 4) scatterv<1>(x, c, nnz, r + a, stride, acc + a);
#endif
  switch (Ka - a) {  // the rest in one walk, as row_dots's (a switch: see there)
    case 0:
      return;
    case 2:
      scatterr<2>(x, c, nnz, r + a, stride, acc + a);
      return;
    case 3:
      scatterr<3>(x, c, nnz, r + a, stride, acc + a);
      return;
    default:
      for (; a < Ka; ++a) scatter1(x, c, nnz, r[a], stride, acc + a);
  }
}

// The link of four rows of one run (padded rows have y = 0 and are not used): loss terms and
// residuals by the dense kernel's vector link, or its scalar one where vectors are not compiled.
GRADSTEP_INLINE void link_rows(const double z[4], const double y[4], double l[4], double r[4]) {
#if defined(GRADSTEP_VECTOR_EXT)
  simd::v4d lv, rv;
  simd::link4(simd::v4d{z[0], z[1], z[2], z[3]}, simd::v4d{y[0], y[1], y[2], y[3]}, lv, rv);
  for (int q = 0; q < 4; ++q) {
    l[q] = lv[q];
    r[q] = rv[q];
  }
#else
  for (int q = 0; q < 4; ++q) link1(z[q], y[q], l[q], r[q]);
#endif
}

GRADSTEP_INLINE void hess_rows(const double z[4], double h[4]) {
#if defined(GRADSTEP_VECTOR_EXT)
  const simd::v4d hv = simd::hess_weight4(simd::v4d{z[0], z[1], z[2], z[3]});
  for (int q = 0; q < 4; ++q) h[q] = hv[q];
#else
  for (int q = 0; q < 4; ++q) h[q] = hess_weight1(z[q]);
#endif
}

// Asks for the first cache lines of a row's values and columns ahead of its use: full-batch
// rows are sequential (the hardware prefetcher has them), mini-batch rows are scattered.
template <class T, class I>
GRADSTEP_INLINE void prefetch_row(const Matrix<T, I>& X, std::ptrdiff_t i) {
#if defined(__GNUC__) || defined(__clang__)
  const std::ptrdiff_t lo = X.at(i);
  __builtin_prefetch(X.data + lo, 0, 3);
  __builtin_prefetch(X.indices + lo, 0, 3);
#else
  (void)X;
  (void)i;
#endif
}

// A block's sums at or above this size (the features' entries, d S doubles; L2 holds 0.5-2 MB)
// ask for the next group's entries ahead of their use (prefetch_features). D = 50,000 features,
// 200,000 Zipf rows, 1 thread, min of 3-4 alternated processes (Zen 3): K = 8 (6.4 MB) 290 ->
// 222 ms, K = 16 (12.8 MB) 1,020 -> 580-760 ms. K = 4 (3.2 MB) was within this machine's noise
// (+-20 %), and smaller sums (K = 1 at 800 KB; any K at D = 1,000) measured slower with it.
constexpr std::ptrdiff_t kPrefetchSumsBytes = std::ptrdiff_t{1} << 22;

// Asks for the cache lines of the block's entries (S doubles each: parameters, vectors, sums) of
// every feature row i uses: the dot products read them and the scatter writes them a group later.
// Without this, the walks stall on one entry's miss after another; with it, a group's misses
// overlap.
template <class T, class I>
GRADSTEP_INLINE void prefetch_features(const Matrix<T, I>& X, std::ptrdiff_t i, const double* out,
                                       std::ptrdiff_t S) {
#if defined(__GNUC__) || defined(__clang__)
  const std::ptrdiff_t bytes = S * static_cast<std::ptrdiff_t>(sizeof(double));
  for (std::ptrdiff_t j = X.at(i), end = X.at(i + 1); j < end; ++j) {
    const char* entry = reinterpret_cast<const char*>(out + col(X.indices[j]) * S);
    for (std::ptrdiff_t o = 0; o < bytes; o += 64) __builtin_prefetch(entry + o, 1, 3);
  }
#else
  (void)X;
  (void)i;
  (void)out;
  (void)S;
#endif
}

// check_rows screens consecutive rows this many at a time (whole groups of four): one screen of
// a group's ~400 indices cost more than its walks' gathers save (200,000 x 50,000 Zipf CSR, 20M
// nonzeros, K = 1, 1 thread, Zen 4: the checked pass 7-9 ms above the unchecked 50 ms with a
// group per screen, 1-3 ms with 64 rows and with 256; 64 rows' indices are about 25 KB).
constexpr std::ptrdiff_t kCheckRows = 64;
static_assert(kCheckRows % 4 == 0, "a chunk of checked rows is whole groups of four");

// Whether the column indices of rows first .. last - 1 of X (consecutive: their nonzeros are
// one range) are strictly increasing within each row and inside [0, d): what check_csr proves for
// the whole matrix, here for the rows a block is about to read by (check_rows). One vectorized
// screen of the range, then each non-empty row's start is allowed one fall (from the row before).
// A block checks each group of rows just before the group's walks, which then find the indices in
// L1.
template <class T, class I>
GRADSTEP_INLINE bool rows_are_canonical(const Matrix<T, I>& X, std::ptrdiff_t first,
                                        std::ptrdiff_t last) {
  const std::ptrdiff_t lo = X.at(first), hi = X.at(last);
  const IndexScreen<I> screen = screen_indices(X.indices, lo, hi);
  std::int64_t falls = screen.falls;
  for (std::ptrdiff_t i = first + 1; i < last && falls > 0; ++i) {
    const std::ptrdiff_t start = X.at(i);
    if (start > lo && start < X.at(i + 1)) falls -= X.indices[start] <= X.indices[start - 1];
  }
  return hi == lo ||
         (falls == 0 && static_cast<std::uint64_t>(screen.top) < static_cast<std::uint64_t>(X.d));
}

// Row i's weight for run k.
template <bool PerRun, class T, class I>
GRADSTEP_INLINE double weight(const Job<T, I>& job, std::ptrdiff_t i, std::ptrdiff_t k) {
  if constexpr (PerRun) {
    return job.SW[i * job.ks + k];
  } else {
    (void)k;
    return job.SW ? job.SW[i] : 1.0;
  }
}

// The links of a group of four rows (nr real ones, padded rows' z = 0 never used), binary: each
// run's four residuals s (sigmoid(z) - y) (hessp: s h(z) u) into res, its intercept sums into gb
// and (gradient) its loss sums into gl, each in row order.
template <bool Hess, bool PerRun, class T, class I>
GRADSTEP_INLINE void binary_links(const Job<T, I>& job, const std::ptrdiff_t i[4],
                                  std::ptrdiff_t nr, const double* z, double* u,
                                  double* res, const double* b, const double* vb, double* gb,
                                  double* gl) {
  const std::ptrdiff_t Ka = job.Ka;
  for (std::ptrdiff_t a = 0; a < Ka; ++a) {
    const std::ptrdiff_t k = job.runs[a];
    double zr[4], s[4], r[4];
    for (std::ptrdiff_t q = 0; q < 4; ++q) {
      zr[q] = z[q * Ka + a] + b[a];
      s[q] = q < nr ? weight<PerRun>(job, i[q], k) : 0.0;
    }
    if constexpr (Hess) {
      double h[4];
      hess_rows(zr, h);
      for (std::ptrdiff_t q = 0; q < 4; ++q) r[q] = s[q] * h[q] * (u[q * Ka + a] + vb[a]);
    } else {
      const std::ptrdiff_t yc = job.ky == 1 ? 0 : k;
      double y[4], l[4], rr[4];
      for (std::ptrdiff_t q = 0; q < 4; ++q) y[q] = q < nr ? job.Y[i[q] * job.ky + yc] : 0.0;
      link_rows(zr, y, l, rr);
      double loss = gl[a];
      for (std::ptrdiff_t q = 0; q < nr; ++q) loss += s[q] * l[q];  // row order
      gl[a] = loss;
      for (std::ptrdiff_t q = 0; q < 4; ++q) r[q] = s[q] * rr[q];
    }
    double inter = gb[a];
    for (std::ptrdiff_t q = 0; q < nr; ++q) {
      res[q * Ka + a] = r[q];
      inter += r[q];
    }
    gb[a] = inter;
  }
}

// Z (C, 4) = the four rows' scores of one run's classes a0 .. a0 + C, from their dot products z
// (4, Ka) and intercepts b: the layout of the vector links (softmax_link.hpp).
GRADSTEP_INLINE void scores4(const double* z, const double* b, std::ptrdiff_t Ka,
                             std::ptrdiff_t a0, std::ptrdiff_t C, double* Z) {
  for (std::ptrdiff_t q = 0; q < 4; ++q) {
    for (std::ptrdiff_t c = 0; c < C; ++c) Z[c * 4 + q] = z[q * Ka + a0 + c] + b[a0 + c];
  }
}

// The same for the multinomial loss: each run's C consecutive columns (a0 .. a0 + C) take one
// softmax link per row (softmax_link.hpp), the row's loss going to the run's first column.
template <bool Hess, bool PerRun, class T, class I>
GRADSTEP_INLINE void softmax_links(const Job<T, I>& job, const std::ptrdiff_t i[4],
                                   std::ptrdiff_t nr, const double* z, double* u,
                                   double* res, const double* b, const double* vb, double* gb,
                                   double* gl) {
  const std::ptrdiff_t Ka = job.Ka, C = job.classes;
  for (std::ptrdiff_t a0 = 0; a0 < Ka; a0 += C) {
    const std::ptrdiff_t run = job.runs[a0] / C;  // SW's column
#if defined(GRADSTEP_VECTOR_EXT)
    if (nr == 4) {  // the four rows' links in vectors, scores (C, 4) in scratch
      const simd::v4d s = {weight<PerRun>(job, i[0], run), weight<PerRun>(job, i[1], run),
                           weight<PerRun>(job, i[2], run), weight<PerRun>(job, i[3], run)};
      double* Z = job.scratch + 12 * Ka;
      scores4(z, b, Ka, a0, C, Z);
      if constexpr (Hess) {
        double* U = Z + 4 * C;
        scores4(u, vb, Ka, a0, C, U);
        softmax::hess4_rows(Z, U, C, s);
      } else {
        const std::int64_t y[4] = {job.labels[i[0]], job.labels[i[1]], job.labels[i[2]],
                                   job.labels[i[3]]};
        const simd::v4d l = softmax::link4_rows(Z, C, y, s);
        gl[a0] = (((gl[a0] + l[0]) + l[1]) + l[2]) + l[3];  // row order
      }
      for (std::ptrdiff_t q = 0; q < 4; ++q) {
        for (std::ptrdiff_t c = 0; c < C; ++c) {
          res[q * Ka + a0 + c] = Z[c * 4 + q];
          gb[a0 + c] += Z[c * 4 + q];
        }
      }
      continue;
    }
#endif
    for (std::ptrdiff_t q = 0; q < nr; ++q) {
      const double s = weight<PerRun>(job, i[q], run);
      double* t = res + q * Ka + a0;
      const double* zq = z + q * Ka + a0;
      for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = zq[c] + b[a0 + c];
      if constexpr (Hess) {
        double* uq = u + q * Ka + a0;  // the vector's scores: add its intercepts in place
        for (std::ptrdiff_t c = 0; c < C; ++c) uq[c] += vb[a0 + c];
        softmax::hess_row(t, uq, C, s);
      } else {
        gl[a0] += s * softmax::link_row(t, C, job.labels[i[q]]);  // row order
        for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = s * t[c];
      }
      for (std::ptrdiff_t c = 0; c < C; ++c) gb[a0 + c] += t[c];
    }
  }
}

// The block: rows four at a time (dot products, link per run, scatters); the last group may be
// short, its missing rows padded with z = 0 and never used. Its sums live in out interleaved with
// the parameters: feature j's Ka parameters, (hessp) Ka vector values and Ka gradient sums are
// consecutive, so the scatter of a nonzero writes the cache line its dot product has just read
// (one line per nonzero instead of two, where the parameters and the sums of d = 50,000 features
// together outgrow L2: 1 run, 20M Zipf nonzeros, 66 -> 61 ms, min of 15 alternated calls, Zen 3).
// Direct (Job::direct): the gradient of a call of one block, its sums in a zeroed out laid out as
// the result, its parameters read from PT (one lane per feature: S = Ka).
template <bool Hess, bool PerRun, bool Direct, class T, class I>
GRADSTEP_INLINE void block(const Job<T, I>& job) {
  static_assert(!(Hess && Direct), "the direct layout has no room for hessp's vectors");
  const Matrix<T, I>& X = job.X;
  const std::ptrdiff_t d = X.d, Ka = job.Ka;
  constexpr std::ptrdiff_t lanes = Direct ? 1 : kLanes<Hess>;
  const std::ptrdiff_t S = lanes * Ka;  // values per feature in the block's sums
  double* const out = job.out;
  if constexpr (!Direct) {
    for (std::ptrdiff_t j = 0; j < d; ++j) {  // features' parameters (and vectors), zero sums
      double* const o = out + j * S;
      for (std::ptrdiff_t a = 0; a < Ka; ++a) o[a] = job.PT[j * Ka + a];
      if constexpr (Hess) {
        for (std::ptrdiff_t a = 0; a < Ka; ++a) o[Ka + a] = job.VT[j * Ka + a];
      }
      for (std::ptrdiff_t a = S - Ka; a < S; ++a) o[a] = 0.0;
    }
  }
  const double* const wl = Direct ? job.PT : out;  // feature j's parameters at wl + j S
  const double* const vl = out + Ka;       // hessp's vectors at vl + j S
  double* const sums = out + (S - Ka);     // feature j's gradient sums at sums + j S
  double* const gb = out + d * S;          // the intercept's sums
  double* const gl = gb + Ka;              // the loss sums (gradient only)
  std::fill(gb, gb + 2 * Ka, 0.0);
  double* const z = job.scratch;          // (4, Ka) dot products with PT
  double* const u = z + 4 * Ka;           // (4, Ka) dot products with VT (hessp)
  double* const res = u + 4 * Ka;         // (4, Ka) residuals s (sigmoid - y), or hessp's
  const double* const b = job.PT + d * Ka;
  const double* const vb = Hess ? job.VT + d * Ka : nullptr;
  auto row = [&](std::ptrdiff_t p) -> std::ptrdiff_t {
    return job.rows ? static_cast<std::ptrdiff_t>(job.rows[p]) : p;
  };
  const bool prefetch_sums =
      d * S * static_cast<std::ptrdiff_t>(sizeof(double)) >= kPrefetchSumsBytes;
  std::ptrdiff_t checked_to = job.start;  // check_rows, consecutive rows: those below are checked
  for (std::ptrdiff_t p = job.start; p < job.stop; p += 4) {
    const std::ptrdiff_t nr = std::min<std::ptrdiff_t>(4, job.stop - p);
    std::ptrdiff_t i[4], lo[4], len[4];
    for (std::ptrdiff_t q = 0; q < 4; ++q) {
      if (q < nr) {
        i[q] = row(p + q);
        lo[q] = X.at(i[q]);
        len[q] = X.at(i[q] + 1) - lo[q];
      } else {
        i[q] = lo[q] = len[q] = 0;
      }
    }
    if (job.rows) {
      const std::ptrdiff_t ahead = std::min(job.stop, p + kPrefetchRows + 4);
      for (std::ptrdiff_t q = p + kPrefetchRows; q < ahead; ++q) prefetch_row(X, row(q));
    }  // (rows in order: the hardware prefetcher has them; asking for the lines of the group
       // ahead as well was measured slower)
    if (prefetch_sums) {
      const std::ptrdiff_t ahead = std::min(job.stop, p + 8);
      for (std::ptrdiff_t q = p + 4; q < ahead; ++q) prefetch_features(X, row(q), out, S);
    }
    // check_rows: consecutive rows kCheckRows at a time (the chunk's range in one screen, its
    // indices then in L1 or L2 for the walks), rows asked for by number row by row; a bad chunk
    // is checked row by row to find its first bad row, and the block stops there.
    if (job.check_rows) {
      std::ptrdiff_t first = 0, last = 0;  // the rows to check now, when consecutive
      if (!job.rows && p >= checked_to) {
        first = p;
        last = checked_to = std::min(job.stop, p + kCheckRows);
      }
      if (job.rows || (last > first && !rows_are_canonical(X, first, last))) {
        const std::ptrdiff_t n_check = job.rows ? nr : last - first;
        for (std::ptrdiff_t q = 0; q < n_check; ++q) {
          const std::ptrdiff_t r = job.rows ? i[q] : first + q;
          if (!rows_are_canonical(X, r, r + 1)) {
            *job.bad_row = r;
            return;
          }
        }
      }
    }
    for (std::ptrdiff_t q = 0; q < 4; ++q) {  // padded rows have no nonzeros: z = 0
      if constexpr (Hess) {
        row_dot_pairs<lanes>(X.data + lo[q], X.indices + lo[q], len[q], wl, vl, S, Ka,
                             z + q * Ka, u + q * Ka);
      } else {
        row_dots<lanes>(X.data + lo[q], X.indices + lo[q], len[q], wl, S, Ka, z + q * Ka);
      }
    }
    if (job.classes > 1) {
      softmax_links<Hess, PerRun>(job, i, nr, z, u, res, b, vb, gb, gl);
    } else {
      binary_links<Hess, PerRun>(job, i, nr, z, u, res, b, vb, gb, gl);
    }
    for (std::ptrdiff_t q = 0; q < nr; ++q) {
      scatter<lanes>(X.data + lo[q], X.indices + lo[q], len[q], res + q * Ka, S, Ka, sums);
    }
  }
}
template <bool Hess, class T, class I>
GRADSTEP_INLINE void block_any(const Job<T, I>& job) {
  if constexpr (!Hess) {
    if (job.direct) {
      if (job.ks > 1) {
        block<false, true, true>(job);
      } else {
        block<false, false, true>(job);
      }
      return;
    }
  }
  if (job.ks > 1) {
    block<Hess, true, false>(job);
  } else {
    block<Hess, false, false>(job);
  }
}

}  // namespace kernel

// The compiled versions of the block (baseline and, on x86-64 with GCC or Clang, AVX2 + FMA),
// chosen at run time as the dense kernels are (current_kernel()). The walk over a row's nonzeros
// is bound by its gathers, not by vector width, so the AVX-512 kernel choice runs the AVX2 block.
template <bool Hess, class T, class I>
GRADSTEP_NOINLINE void block_baseline(const Job<T, I>& job) {
  kernel::block_any<Hess>(job);
}

#if defined(GRADSTEP_HAS_AVX2_KERNEL)
template <bool Hess, class T, class I>
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE void block_avx2(const Job<T, I>& job) {
  kernel::block_any<Hess>(job);
}
#endif

template <bool Hess, class T, class I>
inline void run_block(const Job<T, I>& job) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() != Kernel::baseline) {
    block_avx2<Hess>(job);
    return;
  }
#endif
  block_baseline<Hess>(job);
}

// A pass below this much work ((nonzeros + rows) x runs) stays on the calling thread: waking a
// sleeping worker costs tens of microseconds (logistic.hpp's kMinParallelWork, for the dense
// kernels' cheaper multiply-adds). The result is the same either way.
constexpr double kMinParallelWork = 1.0e5;
// A block holds at least this much work (nonzeros + 1 per row) ...
constexpr std::ptrdiff_t kMinBlockWork = std::ptrdiff_t{1} << 15;
// ... and at least this much per parameter, so that filling its slot and adding it to the result
// (2 D Ka values, streamed) stays small next to its gathers and scatters (2 per nonzero and run).
constexpr std::ptrdiff_t kWorkPerParam = 32;

// Checks each used row's range, [indptr[i], indptr[i + 1]) inside [0, indptr[n]], and cuts the
// positions 0 .. used of rows (or the rows of X) into blocks of consecutive positions whose work
// reaches the target: returns the block starts, (n_blocks + 1), and the total work. The cut
// depends on the matrix, the rows and D only.
template <class T, class I>
std::vector<std::ptrdiff_t> partition(const Matrix<T, I>& X, const std::int64_t* rows,
                                      std::ptrdiff_t used, double* total_work) {
  const std::ptrdiff_t target = std::max(kMinBlockWork, kWorkPerParam * (X.d + 1));
  const std::ptrdiff_t end = X.at(X.n);
  std::vector<std::ptrdiff_t> starts{0};
  std::ptrdiff_t work = 0;
  double total = 0.0;
  for (std::ptrdiff_t p = 0; p < used; ++p) {
    const std::ptrdiff_t i = rows ? static_cast<std::ptrdiff_t>(rows[p]) : p;
    const std::ptrdiff_t lo = X.at(i), hi = X.at(i + 1);
    if (lo < 0 || hi < lo || hi > end) {
      throw std::invalid_argument("X is not a valid CSR matrix: row " + std::to_string(i) +
                                  " spans indptr " + std::to_string(lo) + " .. " +
                                  std::to_string(hi) + " outside 0 .. " + std::to_string(end) +
                                  " (check it with gradstep.sparse.check_csr)");
    }
    work += hi - lo + 1;
    total += static_cast<double>(hi - lo + 1);
    if (work >= target) {
      starts.push_back(p + 1);
      work = 0;
    }
  }
  if (starts.back() < used) starts.push_back(used);
  *total_work = total;
  return starts;
}

// The loss and gradient, and the Hessian-vector product, of K runs over a CSR matrix (one call:
// the scratch lives as long as the engine).
template <class T, class I>
class Engine {
 public:
  // n_classes > 1: the multinomial loss over integer labels (Y unused), n_runs counting every
  // run's classes (run r's class c is run r C + c: P's rows (K, C (d + 1)) read as (K C, d + 1));
  // SW's columns (ks > 1) are the runs', the loss comes back in each run's first class.
  Engine(const Matrix<T, I>& X, const double* Y, std::ptrdiff_t ky, const double* SW,
         std::ptrdiff_t ks, std::ptrdiff_t n_runs, const std::int64_t* labels = nullptr,
         std::ptrdiff_t n_classes = 1)
      : X_(X), Y_(Y), ky_(ky), SW_(SW), ks_(ks), K_(n_runs), labels_(labels),
        classes_(n_classes) {}

  // As GradientEngine::compute (logistic.hpp): loss (K,), G (K, D) at P over rows[0 .. n_rows)
  // (rows == nullptr: all rows), active runs only, divided by each run's weight of the rows used
  // or by denominator[k]; a run whose divisor is 0 comes back as zeros; alpha's L2 term added.
  // check_rows: check each used row's column indices before reading by them (a matrix whose
  // structure check_csr has not proven); std::invalid_argument names the first bad row.
  void loss_grad(const double* P, const double* alpha, const std::int64_t* rows,
                 std::ptrdiff_t n_rows, const std::uint8_t* active, int n_threads, double* loss,
                 double* G, const double* denominator, bool check_rows = false) {
    compute_impl(P, alpha, rows, n_rows, active, n_threads, loss, G, denominator, check_rows);
  }

  // loss_grad with GradientEngine::compute's signature, for the compiled fit loops (fit.hpp,
  // CsrFit): their matrix's structure is proven, so no row is checked.
  void compute(const double* P, const double* alpha, const std::int64_t* rows,
               std::ptrdiff_t n_rows, const std::uint8_t* active, int n_threads, double* loss,
               double* G, const double* denominator = nullptr) {
    compute_impl(P, alpha, rows, n_rows, active, n_threads, loss, G, denominator, false);
  }

 private:
  void compute_impl(const double* P, const double* alpha, const std::int64_t* rows,
                    std::ptrdiff_t n_rows, const std::uint8_t* active, int n_threads,
                    double* loss, double* G, const double* denominator, bool check_rows) {
    const std::ptrdiff_t d = X_.d, D = d + 1;
    std::fill(loss, loss + K_, 0.0);
    std::fill(G, G + K_ * D, 0.0);
    const std::ptrdiff_t used = rows ? n_rows : X_.n;
    if (used == 0) return;
    detail::run_divisors(totals_, K_, denominator, SW_, ks_, rows, used, classes_);
    if (!detail::select_runs(runs_, active, totals_, K_)) return;
    transpose(P, PT_);
    sweep(false, rows, used, n_threads, check_rows);
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    for (std::ptrdiff_t a = 0; a < m; ++a) {
      const std::ptrdiff_t k = runs_[idx(a)];
      const double total = totals_[idx(k)];
      double* g = G + k * D;
      for (std::ptrdiff_t j = 0; j < D; ++j) g[j] = out_[idx(j * m + a)] / total;
      loss[k] = out_[idx((d + 1) * m + a)] / total;
      const double ak = alpha[k];
      if (ak != 0.0) {  // with alpha == 0 the penalty is not computed at all
        const double* w = P + k * D;
        double sq = 0.0;
        for (std::ptrdiff_t j = 0; j < d; ++j) sq += w[j] * w[j];
        loss[k] += 0.5 * ak * sq;
        for (std::ptrdiff_t j = 0; j < d; ++j) g[j] += ak * w[j];
      }
    }
  }

 public:
  // HV (K, D): as GradientEngine::hessp, over all rows; check_rows as loss_grad's.
  void hessp(const double* P, const double* V, const double* alpha, const std::uint8_t* active,
             int n_threads, double* HV, bool check_rows = false) {
    const std::ptrdiff_t d = X_.d, D = d + 1;
    std::fill(HV, HV + K_ * D, 0.0);
    if (X_.n == 0) return;
    detail::run_divisors(totals_, K_, nullptr, SW_, ks_, nullptr, X_.n, classes_);
    if (!detail::select_runs(runs_, active, totals_, K_)) return;
    transpose(P, PT_);
    transpose(V, VT_);
    sweep(true, nullptr, X_.n, n_threads, check_rows);
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    for (std::ptrdiff_t a = 0; a < m; ++a) {
      const std::ptrdiff_t k = runs_[idx(a)];
      const double total = totals_[idx(k)];
      const double* v = V + k * D;
      double* h = HV + k * D;
      const double ak = alpha[k];
      for (std::ptrdiff_t j = 0; j < d; ++j) h[j] = out_[idx(j * m + a)] / total + ak * v[j];
      h[d] = out_[idx(d * m + a)] / total;
    }
  }

 private:
  static std::size_t idx(std::ptrdiff_t i) { return static_cast<std::size_t>(i); }

  // dst (D, Ka) = the active runs' rows of src (K, D), transposed, on a cache line (so that a
  // group of 8 runs' values of one feature, 64 bytes, is one line when Ka is a multiple of 8).
  void transpose(const double* src, std::vector<double>& dst) {
    const std::ptrdiff_t D = X_.d + 1;
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    dst.resize(idx(D * m + detail::kLineDoubles));
    double* t = detail::align_to_line(dst.data());
    for (std::ptrdiff_t a = 0; a < m; ++a) {
      const double* s = src + runs_[idx(a)] * D;
      for (std::ptrdiff_t j = 0; j < D; ++j) t[j * m + a] = s[j];
    }
  }

  // The error of a row a block refused (bad >= 0; -1: none).
  static void throw_bad_row(std::ptrdiff_t bad, std::ptrdiff_t d) {
    if (bad < 0) return;
    throw std::invalid_argument("X is not a valid CSR matrix: row " + std::to_string(bad) +
                                " has a column index outside [0, " + std::to_string(d) +
                                ") or its column indices are not sorted and unique (check it "
                                "with gradstep.sparse.check_csr)");
  }

  // out_ ((d + 2), Ka) = the sum of the blocks' sums (each block's own slot, laid out as
  // block() says), added to a zeroed out_ in block order; a call of one block (the gradient)
  // writes its sums to out_ directly (Job::direct), which is the same sum.
  void sweep(bool hess, const std::int64_t* rows, std::ptrdiff_t used, int n_threads,
             bool check_rows) {
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    const std::ptrdiff_t d = X_.d;
    // whole cache lines per slot, so that two threads' slots never share a line
    const std::ptrdiff_t slot = detail::whole_lines(slot_size(d, m, hess));
    double work = 0.0;
    const std::vector<std::ptrdiff_t> starts = partition(X_, rows, used, &work);
    const auto n_blocks = static_cast<std::ptrdiff_t>(starts.size()) - 1;
    if (n_blocks == 1 && !hess) {  // one block: its sums go straight to out_ (Job::direct)
      out_.assign(idx((d + 2) * m), 0.0);
      scratch_.resize(idx(scratch_size(m, classes_)));
      std::ptrdiff_t bad_row = -1;
      Job<T, I> job{X_, Y_, ky_, SW_, ks_, detail::align_to_line(PT_.data()), nullptr,
                    runs_.data(), m, rows, 0, used, out_.data(), scratch_.data(), check_rows,
                    &bad_row, labels_, classes_};
      job.direct = true;
      run_block<false>(job);
      throw_bad_row(bad_row, d);
      return;
    }
    const double cost = work * static_cast<double>(m) * (hess ? 2.0 : 1.0);
    const int participants =
        (n_blocks > 1 && cost >= kMinParallelWork) ? std::max(1, n_threads) : 1;
    // any wave size gives the same bits, as the slots are added in block order
    const std::ptrdiff_t wave = detail::wave_blocks(n_blocks, participants);
    out_.assign(idx((d + 2) * m), 0.0);
    slots_.resize(idx(wave * slot + detail::kLineDoubles));
    const std::ptrdiff_t scratch = scratch_size(m, classes_);
    scratch_.resize(idx(wave * scratch));
    bad_rows_.assign(idx(wave), -1);
    double* const slots = detail::align_to_line(slots_.data());
    ThreadPool* pool = participants > 1 ? &ThreadPool::instance() : nullptr;
    const double* PT = detail::align_to_line(PT_.data());
    const double* VT = hess ? detail::align_to_line(VT_.data()) : nullptr;

    for (std::ptrdiff_t b0 = 0; b0 < n_blocks; b0 += wave) {
      const std::ptrdiff_t nw = std::min(wave, n_blocks - b0);
      auto target = [&](std::ptrdiff_t t) { return slots + t * slot; };
      auto task = [&](std::ptrdiff_t t) {
        const Job<T, I> job{X_, Y_, ky_, SW_, ks_, PT, VT, runs_.data(), m, rows,
                            starts[idx(b0 + t)], starts[idx(b0 + t + 1)], target(t),
                            scratch_.data() + t * scratch, check_rows, &bad_rows_[idx(t)],
                            labels_, classes_};
        if (hess) {
          run_block<true>(job);
        } else {
          run_block<false>(job);
        }
      };
      run_tasks(pool, nw, participants, task);
      for (std::ptrdiff_t t = 0; t < nw; ++t) {  // the first bad row in block order
        throw_bad_row(bad_rows_[idx(t)], d);
      }
      // out_ += the wave's sums, in block order; chunks of features in parallel
      const std::ptrdiff_t S = lanes_of(hess) * m;
      const std::ptrdiff_t n_chunks = pool ? 4 * participants : 1;
      const std::ptrdiff_t chunk = (d + 2 + n_chunks - 1) / n_chunks;
      auto reduce = [&](std::ptrdiff_t ci) {
        const std::ptrdiff_t lo = ci * chunk, hi = std::min(d + 2, lo + chunk);
        for (std::ptrdiff_t t = 0; t < nw; ++t) {
          const double* GRADSTEP_RESTRICT part = target(t);
          for (std::ptrdiff_t j = lo; j < hi; ++j) {
            // features' sums follow their parameters; the intercept and loss sums are compact
            const double* GRADSTEP_RESTRICT src =
                j < d ? part + j * S + (S - m) : part + d * S + (j - d) * m;
            double* GRADSTEP_RESTRICT acc = out_.data() + j * m;
            for (std::ptrdiff_t a = 0; a < m; ++a) acc[a] += src[a];
          }
        }
      };
      run_tasks(pool, n_chunks, participants, reduce);
    }
  }

  Matrix<T, I> X_;
  const double* Y_;
  std::ptrdiff_t ky_;
  const double* SW_;
  std::ptrdiff_t ks_;
  std::ptrdiff_t K_;
  const std::int64_t* labels_;
  std::ptrdiff_t classes_;
  std::vector<std::ptrdiff_t> runs_;  // the active runs to compute, in run order
  std::vector<double> totals_;        // each run's divisor (K,)
  std::vector<double> PT_, VT_;       // (D, Ka), transposed, aligned inside
  std::vector<double> out_;           // (d + 2, Ka): the result's sums
  std::vector<double> slots_;         // each block of the wave's slot
  std::vector<double> scratch_;       // scratch_size per block of the wave
  std::vector<std::ptrdiff_t> bad_rows_;  // each block of the wave's first bad row, or -1
};

// The structural check of gradstep.sparse.check_csr without temporaries, as
// sparse_reference.structure_error: (code, first offending row), code 0 OK, 1 indptr decreasing,
// 2 a column index outside [0, n_cols), 3 unsorted or duplicate indices in a row. indptr has
// n_rows + 1 entries, indptr[0] == 0 and indptr[n_rows] <= the number of indices (checked by the
// caller).
//
// A branch-free screen runs first and the exact scan only when it finds something (to name the
// first offending row): the indices' pairs (j - 1, j) that do not increase, counted over the
// whole array, must all be row starts, and the largest index as an unsigned number (a negative
// one wraps above) must be below n_cols. The counting loops vectorize and split into fixed chunks
// over n_threads: 20M int32 indices in ~14 ms on one thread, where the exact scan's
// compare-and-branch per index took ~21 ms (Zen 3).
template <class I, class J>
bool structure_is_valid(const J* indptr, std::ptrdiff_t n_rows, const I* indices,
                        std::ptrdiff_t n_cols, int n_threads) {
  std::int64_t decreasing = 0;
  for (std::ptrdiff_t i = 0; i < n_rows; ++i) decreasing += indptr[i + 1] < indptr[i];
  if (decreasing != 0) return false;
  using U = std::make_unsigned_t<I>;
  const auto nnz = static_cast<std::ptrdiff_t>(indptr[n_rows]);
  if (nnz == 0) return true;
  // fixed chunks of the index array, counted in I's width and on up to n_threads threads (the
  // counts are integers: the same result for any thread count)
  constexpr std::ptrdiff_t chunk = std::ptrdiff_t{1} << 20;
  const std::ptrdiff_t n_chunks = (nnz + chunk - 1) / chunk;
  std::vector<U> largest(static_cast<std::size_t>(n_chunks));
  std::vector<std::int64_t> not_above(static_cast<std::size_t>(n_chunks));  // pairs (j - 1, j)
  auto task = [&](std::ptrdiff_t c) {                                        // with c_j <= c_j-1
    const std::ptrdiff_t j0 = c * chunk;  // pairs (j - 1, j) for j in [j0, j0 + chunk)
    const IndexScreen<I> screen =
        screen_indices(indices, std::max<std::ptrdiff_t>(j0 - 1, 0), std::min(nnz, j0 + chunk));
    largest[static_cast<std::size_t>(c)] = screen.top;
    not_above[static_cast<std::size_t>(c)] = screen.falls;
  };
  run_tasks(n_chunks > 1 && n_threads > 1 ? &ThreadPool::instance() : nullptr, n_chunks, n_threads,
            task);
  const U top = *std::max_element(largest.begin(), largest.end());
  if (static_cast<std::uint64_t>(top) >= static_cast<std::uint64_t>(n_cols)) return false;
  std::int64_t falls = 0;
  for (const std::int64_t count : not_above) falls += count;
  for (std::ptrdiff_t i = 0; i < n_rows; ++i) {  // a row's first index may be below the last one
    const auto lo = static_cast<std::ptrdiff_t>(indptr[i]);
    if (lo > 0 && lo < indptr[i + 1]) falls -= indices[lo] <= indices[lo - 1];
  }
  return falls == 0;
}

template <class I, class J>
std::pair<int, std::ptrdiff_t> structure_error(const J* indptr, std::ptrdiff_t n_rows,
                                               const I* indices, std::ptrdiff_t n_cols,
                                               int n_threads = 1) {
  if (structure_is_valid(indptr, n_rows, indices, n_cols, n_threads)) return {0, -1};
  for (std::ptrdiff_t i = 0; i < n_rows; ++i) {
    if (indptr[i + 1] < indptr[i]) return {1, i};
  }
  for (std::ptrdiff_t i = 0; i < n_rows; ++i) {
    std::ptrdiff_t previous = -1;
    for (auto j = static_cast<std::ptrdiff_t>(indptr[i]); j < indptr[i + 1]; ++j) {
      const auto c = static_cast<std::ptrdiff_t>(indices[j]);
      if (c < 0 || c >= n_cols) return {2, i};
      if (c <= previous) return {3, i};
      previous = c;
    }
  }
  return {0, -1};
}

}  // namespace csr
}  // namespace gradstep
