// The multinomial (softmax) link of one row, for the compiled kernels that treat a run's C classes
// as C consecutive columns of runs (sparse_kernel.hpp): the same operations in the same order as
// gradstep._backends.softmax_reference.softmax_link / softmax_from, so that a confident row keeps
// its tiny loss and residuals to full relative accuracy (every score is measured from a pivot that
// leads, and T = sum of the other classes' exp(z_c - z_j) is kept apart from the 1).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace gradstep {
namespace softmax {

// The first class with the largest score (a NaN propagates through the exps whatever it leads).
inline std::ptrdiff_t leader(const double* t, std::ptrdiff_t C) {
  std::ptrdiff_t lead = 0;
  for (std::ptrdiff_t c = 1; c < C; ++c) {
    if (t[c] > t[lead]) lead = c;
  }
  return lead;
}

// t[c] = exp(t[c] - t[j]) for c != j and t[j] = 0; returns their sum T (class order).
inline double exps_from(double* t, std::ptrdiff_t C, std::ptrdiff_t j) {
  const double tj = t[j];
  double T = 0.0;
  for (std::ptrdiff_t c = 0; c < C; ++c) {
    const double e = c == j ? 0.0 : std::exp(t[c] - tj);
    t[c] = e;
    T += e;
  }
  return T;
}

// Over the scores t[0 .. C) (intercepts included) of a row labelled y: writes the residuals
// softmax(t) - onehot(y) over t and returns the loss logsumexp(t) - t[y], both as
// softmax_reference.softmax_link computes them (pivot j: the label when it ties for the lead).
inline double link_row(double* t, std::ptrdiff_t C, std::int64_t y) {
  const std::ptrdiff_t lead = leader(t, C);
  const auto yc = static_cast<std::ptrdiff_t>(y);
  const std::ptrdiff_t j = t[yc] >= t[lead] ? yc : lead;
  const double gap = t[j] - t[yc];
  const double T = exps_from(t, C, j);
  const double S = 1.0 + T;
  for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = t[c] / S;
  t[j] = 1.0 / S;
  t[yc] = j == yc ? -T / S : t[yc] - 1.0;
  return gap + std::log1p(T);
}

// The Hessian-vector product's row term: over the scores t and the vector's scores u (both with
// intercepts), writes s p_c (u_c - sum_c' p_c' u_c') over t (softmax_reference.hessp's order).
inline void hess_row(double* t, const double* u, std::ptrdiff_t C, double s) {
  const std::ptrdiff_t j = leader(t, C);
  const double T = exps_from(t, C, j);
  const double S = 1.0 + T;
  for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = t[c] / S;
  t[j] = 1.0 / S;
  double mean = 0.0;
  for (std::ptrdiff_t c = 0; c < C; ++c) mean += t[c] * u[c];
  for (std::ptrdiff_t c = 0; c < C; ++c) t[c] = s * t[c] * (u[c] - mean);
}

}  // namespace softmax
}  // namespace gradstep
