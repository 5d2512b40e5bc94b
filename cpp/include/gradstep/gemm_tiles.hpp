// The two small matrix products of a block of rows against many columns (a run's classes, or many
// runs), as register tiles in the manner of BLIS / OpenBLAS micro-kernels:
//   scores:     Z = X_b Wt + bias,  Wt (d, Kp) packed, Kp a multiple of 4
//   accumulate: G_c += sum_r R[r, c] x_r        for the columns c < m, into G_c[0 .. d)
// X_b's rows are given by pointers (a full batch or a mini-batch alike; nothing is copied).
// Z and R are kept in groups of four rows (grouped(r, c, Kp)): lane r % 4 of column c's vector,
// the (C, 4) layout in which the links take four rows at once (softmax_link.hpp), so the links
// work in place; the scores tile transposes its 4 x 4 blocks in registers to write it.
//
// Why tiles: taking the products a few rows and two columns at a time (dot_rows, axpy4) reads W
// or G once per four rows and reduces each dot product's four partial sums at the end; on the
// multinomial digits problem (1,797 x 64, 10 classes) that ran at ~2.2e9 vector multiply-adds
// per second on Zen 3, where two FMA ports give ~5.6e9. Here a tile of 4 rows x 12 columns keeps
// 12 vector accumulators in registers over the whole row (scores: per feature, 3 loads of Wt,
// 4 broadcasts of x, 12 multiply-adds), and a tile of 3 columns x 12 features keeps its sums over
// the rows it is given (accumulate: per row, 3 loads of x, 3 broadcasts of R, 9 multiply-adds),
// so G is read and written once per call (a chunk of rows, see chunk_rows).
//
// Bits: each Z[r, c] is one chain of multiply-adds over j = 0 .. d in order, and each G_c[j] gets
// one chain over the call's rows in order, whatever the tiling: a row's scores do not depend on
// which rows or columns share its tile, and the sums depend on the rows only, never on the thread
// count (the callers cut rows into chunks and blocks by d and n alone).
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "simd.hpp"

namespace gradstep {
namespace tiles {

using simd::Quad;

// The loops over a tile's rows, columns and quads have a few iterations known at compile time; they
// must be unrolled for the accumulators to live in registers (GCC left them as loops, with the
// accumulators on the stack: 7 x slower than the code this replaced).
#if defined(__GNUC__) || defined(__clang__)
#define GRADSTEP_UNROLL _Pragma("GCC unroll 16")
#else
#define GRADSTEP_UNROLL
#endif

inline std::ptrdiff_t padded_columns(std::ptrdiff_t m) { return (m + 3) / 4 * 4; }

// How many of the `left` quads (scores) or columns (accumulate) the next panel takes: 3, but 2
// and 2 where 4 are left (a panel of 1 has too few independent accumulators), and what is left
// below 3.
inline std::ptrdiff_t panel_width(std::ptrdiff_t left) {
  return left >= 3 && left != 4 ? 3 : std::min<std::ptrdiff_t>(left, 2);
}

// Rows per chunk: the scores, links and sums of a block are taken a chunk of rows at a time, so
// that accumulate reads the rows that scores has just brought into L1 (16 KB of them; at least 8
// rows, a multiple of 4). A function of d and the type only: the same sums for any thread count.
// Digits (64 features, 10 columns), 1 thread, Zen 3: accumulate over 256 rows from L2 ran at
// ~2.4e9 vector multiply-adds per second, over 32-row chunks from L1 at ~3.2e9.
inline std::ptrdiff_t chunk_rows(std::ptrdiff_t d, std::size_t type_size) {
  const auto row_bytes = std::max<std::ptrdiff_t>(1, d * static_cast<std::ptrdiff_t>(type_size));
  return std::max<std::ptrdiff_t>(8, 16384 / row_bytes / 4 * 4);
}

// q = (v, v, v, v) with v = *p as a double (simd::splat_load: one vbroadcastsd in the AVX2 build).
template <bool Keep, class T>
GRADSTEP_INLINE void splat_from(Quad& q, const T* p) {
#if defined(GRADSTEP_VECTOR_EXT)
  if constexpr (std::is_same_v<T, double>) {
    q.v = simd::splat_load<Keep>(p);
    return;
  }
#endif
  simd::broadcast(q, static_cast<double>(*p));
}

// Where entry (r, c) of a grouped (rows, Kp) matrix lies.
GRADSTEP_INLINE std::ptrdiff_t grouped(std::ptrdiff_t r, std::ptrdiff_t c, std::ptrdiff_t Kp) {
  return (r / 4) * 4 * Kp + c * 4 + r % 4;
}

// a[0 .. 4) (four rows' values of four columns) become the four columns' values of the rows.
GRADSTEP_INLINE void transpose4(Quad a[4]) {
#if defined(GRADSTEP_VECTOR_EXT) && !defined(__clang__)
  typedef long long mask4 __attribute__((vector_size(32)));  // GCC's shuffle takes a mask vector
#endif
#if defined(GRADSTEP_VECTOR_EXT) && defined(__clang__)
#define GRADSTEP_SHUFFLE(x, y, ...) __builtin_shufflevector(x, y, __VA_ARGS__)
#elif defined(GRADSTEP_VECTOR_EXT)
#define GRADSTEP_SHUFFLE(x, y, ...) __builtin_shuffle(x, y, mask4{__VA_ARGS__})
#endif
#if defined(GRADSTEP_SHUFFLE)
  const simd::v4d t0 = GRADSTEP_SHUFFLE(a[0].v, a[1].v, 0, 4, 2, 6);
  const simd::v4d t1 = GRADSTEP_SHUFFLE(a[0].v, a[1].v, 1, 5, 3, 7);
  const simd::v4d t2 = GRADSTEP_SHUFFLE(a[2].v, a[3].v, 0, 4, 2, 6);
  const simd::v4d t3 = GRADSTEP_SHUFFLE(a[2].v, a[3].v, 1, 5, 3, 7);
  a[0].v = GRADSTEP_SHUFFLE(t0, t2, 0, 1, 4, 5);
  a[1].v = GRADSTEP_SHUFFLE(t1, t3, 0, 1, 4, 5);
  a[2].v = GRADSTEP_SHUFFLE(t0, t2, 2, 3, 6, 7);
  a[3].v = GRADSTEP_SHUFFLE(t1, t3, 2, 3, 6, 7);
#undef GRADSTEP_SHUFFLE
#else
  double m[4][4];
  for (int r = 0; r < 4; ++r) simd::store(m[r], a[r]);
  for (int c = 0; c < 4; ++c) {
    const double col[4] = {m[0][c], m[1][c], m[2][c], m[3][c]};
    simd::load(a[c], col);
  }
#endif
}

// Z's columns 4 q0 .. 4 (q0 + NQ) for the NR rows x[0 .. NR), rows r0 .. r0 + NR of the grouped Z
// (NR a multiple of 4 with r0 too, or 1).
template <std::size_t NR, std::size_t NQ, bool Keep, class T>
GRADSTEP_INLINE void scores_tile(const T* const* x, const double* Wt, std::ptrdiff_t ldw,
                                 const double* bias, std::ptrdiff_t d, double* Z,
                                 std::ptrdiff_t r0, std::ptrdiff_t q0, std::ptrdiff_t Kp) {
  Quad acc[NR][NQ];
  GRADSTEP_UNROLL
  for (std::size_t r = 0; r < NR; ++r) {
    GRADSTEP_UNROLL
    for (std::size_t q = 0; q < NQ; ++q) acc[r][q] = Quad{};
  }
  for (std::ptrdiff_t j = 0; j < d; ++j) {
    Quad w[NQ];
    GRADSTEP_UNROLL
    for (std::size_t q = 0; q < NQ; ++q) {
      simd::load(w[q], Wt + j * ldw + 4 * static_cast<std::ptrdiff_t>(q));
    }
    GRADSTEP_UNROLL
    for (std::size_t r = 0; r < NR; ++r) {
      Quad xb;
      splat_from<Keep>(xb, x[r] + j);
      GRADSTEP_UNROLL
      for (std::size_t q = 0; q < NQ; ++q) simd::madd(acc[r][q], xb, w[q]);
    }
  }
  GRADSTEP_UNROLL
  for (std::size_t q = 0; q < NQ; ++q) {
    Quad b;
    simd::load(b, bias + 4 * static_cast<std::ptrdiff_t>(q));
    const std::ptrdiff_t c = 4 * (q0 + static_cast<std::ptrdiff_t>(q));
    if constexpr (NR == 1) {
      simd::add(acc[0][q], b);
      double v[4];
      simd::store(v, acc[0][q]);
      for (std::ptrdiff_t l = 0; l < 4; ++l) Z[grouped(r0, c + l, Kp)] = v[l];
    } else {
      GRADSTEP_UNROLL
      for (std::size_t g = 0; g < NR / 4; ++g) {
        Quad t[4];
        GRADSTEP_UNROLL
        for (std::size_t l = 0; l < 4; ++l) {
          t[l] = acc[4 * g + l][q];
          simd::add(t[l], b);
        }
        transpose4(t);
        double* out = Z + grouped(r0 + 4 * static_cast<std::ptrdiff_t>(g), c, Kp);
        GRADSTEP_UNROLL
        for (std::size_t l = 0; l < 4; ++l) simd::store(out + 4 * static_cast<std::ptrdiff_t>(l), t[l]);
      }
    }
  }
}

// All rows for the quads q0 .. q0 + NQ of the columns: groups of 4 rows, then single rows (8 rows
// at a time where a single quad would leave 4 accumulators, too few to fill two FMA pipes).
template <std::size_t NQ, bool Keep, class T>
GRADSTEP_INLINE void scores_panel(const T* const* x, std::ptrdiff_t count, const double* Wt,
                                  const double* bias, std::ptrdiff_t d, double* Z,
                                  std::ptrdiff_t q0, std::ptrdiff_t Kp) {
  const double* W = Wt + 4 * q0;
  const double* b = bias + 4 * q0;
  std::ptrdiff_t r = 0;
  if constexpr (NQ == 1) {
    for (; r + 8 <= count; r += 8) scores_tile<8, 1, Keep>(x + r, W, Kp, b, d, Z, r, q0, Kp);
  }
  for (; r + 4 <= count; r += 4) scores_tile<4, NQ, Keep>(x + r, W, Kp, b, d, Z, r, q0, Kp);
  for (; r < count; ++r) scores_tile<1, NQ, Keep>(x + r, W, Kp, b, d, Z, r, q0, Kp);
}

// The grouped Z (count rows, Kp columns) = X_b Wt + bias; Wt is (d, Kp) with row stride Kp, bias
// (Kp,), Kp a multiple of 4 (padding columns of zeros give zeros). Quads in panels (panel_width).
template <bool Keep, class T>
GRADSTEP_INLINE void scores(const T* const* x, std::ptrdiff_t count, const double* Wt,
                            const double* bias, std::ptrdiff_t Kp, std::ptrdiff_t d, double* Z) {
  const std::ptrdiff_t quads = Kp / 4;
  for (std::ptrdiff_t q0 = 0, w = 0; q0 < quads; q0 += w) {
    w = panel_width(quads - q0);
    if (w == 3) {
      scores_panel<3, Keep>(x, count, Wt, bias, d, Z, q0, Kp);
    } else if (w == 2) {
      scores_panel<2, Keep>(x, count, Wt, bias, d, Z, q0, Kp);
    } else {
      scores_panel<1, Keep>(x, count, Wt, bias, d, Z, q0, Kp);
    }
  }
}

// G_c[j0 .. j0 + 4 NV) += sum_r R[r, c] x_r[...] for NC columns (R: the grouped matrix from its
// column c0 on), over all count rows.
template <std::size_t NC, std::size_t NV, bool Keep, class T>
GRADSTEP_INLINE void accumulate_tile(const T* const* x, std::ptrdiff_t count, const double* R,
                                     std::ptrdiff_t Kp, double* const* G, std::ptrdiff_t j0) {
  Quad acc[NC][NV];
  GRADSTEP_UNROLL
  for (std::size_t c = 0; c < NC; ++c) {
    GRADSTEP_UNROLL
    for (std::size_t v = 0; v < NV; ++v) acc[c][v] = Quad{};
  }
  for (std::ptrdiff_t r = 0; r < count; ++r) {
    Quad xv[NV];
    GRADSTEP_UNROLL
    for (std::size_t v = 0; v < NV; ++v) {
      simd::load(xv[v], x[r] + j0 + 4 * static_cast<std::ptrdiff_t>(v));
      simd::keep_in_register<Keep && (NC > 1)>(xv[v]);
    }
    GRADSTEP_UNROLL
    for (std::size_t c = 0; c < NC; ++c) {
      Quad rb;
      splat_from<Keep>(rb, R + grouped(r, static_cast<std::ptrdiff_t>(c), Kp));
      GRADSTEP_UNROLL
      for (std::size_t v = 0; v < NV; ++v) simd::madd(acc[c][v], xv[v], rb);
    }
  }
  GRADSTEP_UNROLL
  for (std::size_t c = 0; c < NC; ++c) {
    GRADSTEP_UNROLL
    for (std::size_t v = 0; v < NV; ++v) {
      simd::add_store(G[c] + j0 + 4 * static_cast<std::ptrdiff_t>(v), acc[c][v]);
    }
  }
}

// NC columns over all features: 4 NV features at a time (NV = 3 for three columns, 4 for fewer:
// a tile's NC NV sums are its independent chains, and two FMA pipes of 4 cycles' latency need 8),
// then 4, then the last d % 4 one by one.
template <std::size_t NC, bool Keep, class T>
GRADSTEP_INLINE void accumulate_panel(const T* const* x, std::ptrdiff_t count, const double* R,
                                      std::ptrdiff_t Kp, double* const* G, std::ptrdiff_t d) {
  constexpr std::size_t NV = NC >= 3 ? 3 : 4;
  constexpr std::ptrdiff_t wide = 4 * static_cast<std::ptrdiff_t>(NV);
  std::ptrdiff_t j = 0;
  for (; j + wide <= d; j += wide) accumulate_tile<NC, NV, Keep>(x, count, R, Kp, G, j);
  for (; j + 4 <= d; j += 4) accumulate_tile<NC, 1, Keep>(x, count, R, Kp, G, j);
  for (; j < d; ++j) {
    GRADSTEP_UNROLL
    for (std::size_t c = 0; c < NC; ++c) {
      double s = 0.0;
      for (std::ptrdiff_t r = 0; r < count; ++r) {
        s += R[grouped(r, static_cast<std::ptrdiff_t>(c), Kp)] * static_cast<double>(x[r][j]);
      }
      G[c][j] += s;
    }
  }
}

// G[c][0 .. d) += sum_r R[r, c] x_r and G[c][d] += sum_r R[r, c] (the intercept) for c < m:
// R the grouped (count, Kp) matrix, G[c] the m outputs. Columns in panels (panel_width).
template <bool Keep, class T>
GRADSTEP_INLINE void accumulate(const T* const* x, std::ptrdiff_t count, const double* R,
                                std::ptrdiff_t Kp, std::ptrdiff_t m, double* const* G,
                                std::ptrdiff_t d) {
  for (std::ptrdiff_t c0 = 0, w = 0; c0 < m; c0 += w) {
    w = panel_width(m - c0);
    const double* Rc = R + 4 * c0;  // column c0's lanes
    if (w == 3) {
      accumulate_panel<3, Keep>(x, count, Rc, Kp, G + c0, d);
    } else if (w == 2) {
      accumulate_panel<2, Keep>(x, count, Rc, Kp, G + c0, d);
    } else {
      accumulate_panel<1, Keep>(x, count, Rc, Kp, G + c0, d);
    }
  }
  // The intercepts: per column, the groups' vectors added in order, their lanes summed, then the
  // rows of a last incomplete group (a fixed order for a given count; one scalar chain per column
  // in row order was ~10 % of the whole product).
  const std::ptrdiff_t full = count / 4;
  for (std::ptrdiff_t c = 0; c < m; ++c) {
    Quad s = {};
    for (std::ptrdiff_t g = 0; g < full; ++g) {
      Quad v;
      simd::load(v, R + g * 4 * Kp + c * 4);
      simd::add(s, v);
    }
    double total = simd::hsum(s);
    for (std::ptrdiff_t r = 4 * full; r < count; ++r) total += R[grouped(r, c, Kp)];
    G[c][d] += total;
  }
}

}  // namespace tiles
}  // namespace gradstep
