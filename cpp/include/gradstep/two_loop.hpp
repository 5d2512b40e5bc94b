// The two-loop recursion of L-BFGS for r runs at once: gradstep.rules.curvature._two_loop_rows
// (the NumPy version, the specification) compiled. A batched lbfgs round (LBFGSRuns) spent most
// of its time there on small problems: 2m row-wise dot products and updates, each a few NumPy
// calls of tiny arrays, ~0.6 ms per round for 50 runs of 31 parameters, against ~0.2 ms for the
// round's gradient pass of all runs.
//
// Per run i, with its pairs (s, y) in memory[i, slot] and memory[i, m + slot], its ring order
// order[i, :] (oldest first, right-aligned) and rho[i, slot] = 1 / s'y (0 for an empty slot):
//   q = g;  for c = m-1 .. oldest: a_c = rho s_c'q;  q -= a_c y_c
//   q *= gamma;  for c = oldest .. m-1: b = rho y_c'q;  q += (a_c - b) s_c
// The dot products are the kernels' simd::dot1 (four partial sums, entry j in sum j % 4); their
// order differs from NumPy's einsum, so directions agree with the NumPy version to rounding, not
// in every bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "block_kernel.hpp"

namespace gradstep {

// Q (r, D) = the recursion applied to G (r, D); memory (r, 2m, D), order (r, m) with values in
// [0, m) (checked by the caller), rho (r, m), gamma (r,); slots before `oldest` in every row's
// order are skipped (no row has pairs there). alphas is scratch of m values. Force-inlined into
// one entry point per instruction set (two_loop_rows below).
GRADSTEP_INLINE void two_loop_rows_body(const double* G, std::ptrdiff_t r, std::ptrdiff_t D,
                                        const double* memory, std::ptrdiff_t m,
                                        const std::int64_t* order, const double* rho,
                                        const double* gamma, std::ptrdiff_t oldest,
                                        double* alphas, double* Q) {
  for (std::ptrdiff_t i = 0; i < r; ++i) {
    double* q = Q + i * D;
    for (std::ptrdiff_t j = 0; j < D; ++j) q[j] = G[i * D + j];
    const double* mem = memory + i * 2 * m * D;
    for (std::ptrdiff_t c = m - 1; c >= oldest; --c) {  // newest first
      const std::ptrdiff_t slot = order[i * m + c];
      const double* s = mem + slot * D;
      const double* y = mem + (m + slot) * D;
      const double a = rho[i * m + slot] * simd::dot1(s, q, D);
      for (std::ptrdiff_t j = 0; j < D; ++j) q[j] -= y[j] * a;
      alphas[c] = a;
    }
    for (std::ptrdiff_t j = 0; j < D; ++j) q[j] *= gamma[i];
    for (std::ptrdiff_t c = oldest; c < m; ++c) {
      const std::ptrdiff_t slot = order[i * m + c];
      const double* s = mem + slot * D;
      const double* y = mem + (m + slot) * D;
      const double step = alphas[c] - rho[i * m + slot] * simd::dot1(y, q, D);
      for (std::ptrdiff_t j = 0; j < D; ++j) q[j] += s[j] * step;
    }
  }
}

GRADSTEP_NOINLINE inline void two_loop_rows_baseline(const double* G, std::ptrdiff_t r,
                                                    std::ptrdiff_t D, const double* memory,
                                                    std::ptrdiff_t m, const std::int64_t* order,
                                                    const double* rho, const double* gamma,
                                                    std::ptrdiff_t oldest, double* alphas,
                                                    double* Q) {
  two_loop_rows_body(G, r, D, memory, m, order, rho, gamma, oldest, alphas, Q);
}

#if defined(GRADSTEP_HAS_AVX2_KERNEL)
__attribute__((target("avx2,fma"))) GRADSTEP_NOINLINE inline void two_loop_rows_avx2(
    const double* G, std::ptrdiff_t r, std::ptrdiff_t D, const double* memory, std::ptrdiff_t m,
    const std::int64_t* order, const double* rho, const double* gamma, std::ptrdiff_t oldest,
    double* alphas, double* Q) {
  two_loop_rows_body(G, r, D, memory, m, order, rho, gamma, oldest, alphas, Q);
}
#endif

// The recursion in the instruction set of the kernels in use (current_kernel): AVX2 with FMA
// wherever the kernels run AVX2 or AVX-512. The baseline build of the same loops (SSE2 on x86-64)
// was 2.2-4.2 x slower (C++ harness, Zen 3): 50 runs of 31 parameters with 40 pairs each,
// 264 -> 118 us per call; with 10 pairs, 78 -> 32 us; 5 runs of 128 with 40 pairs, 114 -> 27 us.
// The two differ by rounding (a fused multiply-add rounds once).
inline void two_loop_rows(const double* G, std::ptrdiff_t r, std::ptrdiff_t D,
                          const double* memory, std::ptrdiff_t m, const std::int64_t* order,
                          const double* rho, const double* gamma, std::ptrdiff_t oldest,
                          double* alphas, double* Q) {
#if defined(GRADSTEP_HAS_AVX2_KERNEL)
  if (current_kernel() != Kernel::baseline) {
    two_loop_rows_avx2(G, r, D, memory, m, order, rho, gamma, oldest, alphas, Q);
    return;
  }
#endif
  two_loop_rows_baseline(G, r, D, memory, m, order, rho, gamma, oldest, alphas, Q);
}

}  // namespace gradstep
