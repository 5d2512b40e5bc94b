// Two row-wise steps of a batched L-BFGS round compiled (gradstep.rules.curvature.LBFGSRuns): the
// strong Wolfe test of the runs' first trials (accept_rows) and the push of the new (s, y) pairs
// into each run's ring (push_pairs_rows). On small problems a round is bound by its NumPy calls on
// arrays of a few dozen rows, not by its gradient pass: breast cancer in GDClassifierCV (50 runs of
// 31 parameters) spent ~0.3 ms per round in Python against ~0.14 ms in the pass; these two steps
// were ~30 of its ~60 NumPy calls. The NumPy versions (_accept_rows_numpy, LBFGSRuns._finish's
// own code) are the specification; the dot products here are the kernels' simd::dot1 (four
// partial sums), so s'y, y'y and g.d agree with NumPy's einsum to rounding, not in every bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "block_kernel.hpp"

namespace gradstep {

// accept[i] = 1 where run i's first trial (loss f[i], gradient row i of G, along row i of d,
// from loss f0[i] with slope0[i] = g.d < 0, at step t0[i]) passes strong_wolfe's first test
// (c1, c2: its constants, curvature.WOLFE_C1 and WOLFE_C2):
//   f <= f0 + c1 t0 slope0 and |s| <= c2 |slope0| (s = G.d), or its rounding fallback
//   (_sufficient_decrease): f finite, f <= f0 + 1e-10 |f0|, s <= (1 - 2 c1) |slope0|, |s| <= ...
// LBFGSRuns.receive applies the fallback only when some row failed the first test; the result
// is the same as taking the union row by row. Comparisons with a NaN are false, as NumPy's.
inline void accept_rows(const double* f, const double* G, const double* d, const double* f0,
                        const double* t0, const double* slope0, std::ptrdiff_t r,
                        std::ptrdiff_t D, double c1, double c2, std::uint8_t* accept) {
  for (std::ptrdiff_t i = 0; i < r; ++i) {
    const double s = simd::dot1(G + i * D, d + i * D, D);
    const bool curvature = std::fabs(s) <= -c2 * slope0[i];
    const bool decrease = f[i] <= f0[i] + c1 * t0[i] * slope0[i];
    const bool rounded = std::isfinite(f[i]) && f[i] <= f0[i] + 1e-10 * std::fabs(f0[i]) &&
                         s <= (1.0 - 2.0 * c1) * -slope0[i];
    accept[i] = static_cast<std::uint8_t>(curvature && (decrease || rounded));
  }
}

// For each i, the run in row rows[i] stepped to Q[i] with gradient G[i] from P[rows[i]] with
// gradient Gold[rows[i]]: s = Q[i] - P[rows[i]], y = G[i] - Gold[rows[i]], and where
// s'y > eps y'y the pair goes into the run's next ring slot head (memory[row, head] = s,
// memory[row, m + head] = y, rho[row, head] = 1 / s'y), head moves on (mod m), gamma[row] =
// s'y / y'y and n_pairs[row] grows up to m. A pair not kept leaves the ring as it was.
// memory (runs, 2m, D), rho (runs, m), head, gamma and n_pairs (runs,); rows distinct and in
// [0, runs) (checked by the caller).
inline void push_pairs_rows(const std::int64_t* rows, std::ptrdiff_t n, const double* Q,
                            const double* G, const double* P, const double* Gold,
                            std::ptrdiff_t D, double* memory, std::ptrdiff_t m,
                            std::int64_t* head, double* rho, double* gamma,
                            std::int64_t* n_pairs, double eps) {
  std::vector<double> s(static_cast<std::size_t>(D)), y(static_cast<std::size_t>(D));
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const std::ptrdiff_t row = static_cast<std::ptrdiff_t>(rows[i]);
    for (std::ptrdiff_t j = 0; j < D; ++j) {
      s[static_cast<std::size_t>(j)] = Q[i * D + j] - P[row * D + j];
      y[static_cast<std::size_t>(j)] = G[i * D + j] - Gold[row * D + j];
    }
    const double sy = simd::dot1(s.data(), y.data(), D);
    const double yy = simd::dot1(y.data(), y.data(), D);
    if (!(sy > eps * yy)) continue;  // keep only pairs with positive curvature
    const std::ptrdiff_t slot = static_cast<std::ptrdiff_t>(head[row]);
    double* ring = memory + row * 2 * m * D;
    for (std::ptrdiff_t j = 0; j < D; ++j) {
      ring[slot * D + j] = s[static_cast<std::size_t>(j)];
      ring[(m + slot) * D + j] = y[static_cast<std::size_t>(j)];
    }
    rho[row * m + slot] = 1.0 / sy;
    head[row] = (slot + 1) % m;
    gamma[row] = sy / yy;
    n_pairs[row] = std::min<std::int64_t>(n_pairs[row] + 1, m);
  }
}

}  // namespace gradstep
