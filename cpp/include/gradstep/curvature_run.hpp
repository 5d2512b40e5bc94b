// What the compiled curvature loops (lbfgs_loop.hpp, backtrack_loop.hpp) share: the line
// searches' arithmetic (rules/curvature.py: dot products, _negligible, _rounding) and the
// reference driver's bookkeeping of one run (driver._handle: a Step's divergence test, history
// entry and stop test; a Stall's status).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fit.hpp"

namespace gradstep {
namespace curvature {

constexpr double kEps = std::numeric_limits<double>::epsilon();  // curvature.EPS
constexpr double kStallTolFactor = 1e3;                            // driver.STALL_TOL_FACTOR

// a.b with 8 partial sums (entry j in sum j % 8), added pairwise: near the optimum the line
// searches decide on slopes g.d of a few ulp of their terms, and a single running sum (error
// growing with n) made them stall where the reference (BLAS ddot, 16 partial sums) went on.
inline double dot(const double* a, const double* b, std::ptrdiff_t n) {
  double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  std::ptrdiff_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int r = 0; r < 8; ++r) s[r] += a[j + r] * b[j + r];
  }
  for (int r = 0; j < n; ++j, ++r) s[r] += a[j] * b[j];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

// curvature._negligible: a step too small to change p in floating point.
inline bool negligible(const std::vector<double>& step, const double* p) {
  const auto D = static_cast<std::ptrdiff_t>(step.size());
  return std::sqrt(dot(step.data(), step.data(), D)) <=
         4.0 * kEps * (1.0 + std::sqrt(dot(p, p, D)));
}

inline double rounding(double f0) { return 1e-10 * std::fabs(f0); }  // curvature._rounding

// driver._handle's Stall of run 0: converged when the residual (the gradient, or with an L1
// term its minimum-norm subgradient) is within a factor of tol, else stalled.
inline void stall(const RunSpec& spec, FitState& st, const double* residual, std::ptrdiff_t D) {
  const bool close_enough = detail::max_abs(residual, D) <= kStallTolFactor * spec.tol;
  st.status[0] = close_enough ? kConverged : kStalled;
}

// driver._handle's Step of run 0 to q (gradient gq, step length t): the divergence test, then
// the new point, its history entry (passes: the run's passes so far) and the stop test.
// objective: the loss with the L1 term (without one, the loss at q); residual: what the stop
// test and the history see (without an L1 term, gq).
inline void take_step(const RunSpec& spec, FitState& st, double passes, std::ptrdiff_t D,
                      const double* q, const double* gq, double t, double objective,
                      const double* residual) {
  if (detail::weights_diverged(q, D) || !std::isfinite(objective) ||
      !detail::all_finite(gq, D) || objective > detail::loss_limit(st, 0)) {
    st.status[0] = kDiverged;  // st.P keeps the last good weights
    return;
  }
  const double step_norm = detail::distance(q, st.P, D);
  std::copy(q, q + D, st.P);
  st.loss[0] = objective;
  std::copy(gq, gq + D, st.grad);
  st.n_iter[0] += 1;
  st.t[0] += 1;
  detail::record(spec, st, 1, 0, D, objective, detail::norm2(residual, D), step_norm, t);
  if (spec.record_history && st.n_iter[0] < st.history_len) {
    st.history[kHPasses * st.history_len + st.n_iter[0]] = passes;
  }
  if (detail::max_abs(residual, D) <= spec.tol) {
    st.status[0] = kConverged;
  } else if (st.n_iter[0] >= spec.max_iter) {
    st.status[0] = kMaxIter;
  }
}

}  // namespace curvature
}  // namespace gradstep
