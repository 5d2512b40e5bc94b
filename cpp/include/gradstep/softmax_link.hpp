// The multinomial (softmax) link of one row, for the compiled kernels that treat a run's C classes
// as C consecutive columns of runs (sparse_kernel.hpp): the same operations in the same order as
// gradstep._backends.softmax_reference.softmax_link / softmax_from, so that a confident row keeps
// its tiny loss and residuals to full relative accuracy (every score is measured from a pivot that
// leads, and T = sum of the other classes' exp(z_c - z_j) is kept apart from the 1).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "simd.hpp"
#include "vector_math.hpp"

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


// The same links for four rows at once (lane r of each class's vector is row r's), with the
// vector exp of the binary link (vector_math.hpp): the compiled kernels' groups of four rows.
#if defined(GRADSTEP_VECTOR_EXT)
GRADSTEP_INLINE simd::v4d load4(const double* p) {
  simd::v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GRADSTEP_INLINE void store4(double* p, simd::v4d v) { std::memcpy(p, &v, sizeof v); }

// leader for four rows, in vectors: per lane the first class with the largest score (lead) and
// that score (top), the same comparisons in the same order as leader's (a NaN score never leads).
// Row by row the comparisons' branches are taken at random on real data; here they are selects.
GRADSTEP_INLINE void leaders4(const double* Z, std::ptrdiff_t C, simd::v4i& lead, simd::v4d& top) {
  top = load4(Z);
  lead = simd::v4i{0, 0, 0, 0};
  for (std::ptrdiff_t c = 1; c < C; ++c) {
    const simd::v4d z = load4(Z + c * 4);
    const simd::v4i higher = z > top;
    top = simd::select(higher, z, top);
    lead = (higher & static_cast<std::int64_t>(c)) | (~higher & lead);
  }
}

// softmax_from (softmax_link.hpp) for four rows at once, lane r of each class's vector Z[c]
// (Z is (C, 4)) row r's score, j the pivots and tj their scores: the exps in vectors
// (simd::exp_nonpositive: every exponent is <= 0, measured from a pivot that leads), the pivots'
// entries 0 in T's sum and then 1 / S, as link_row and hess_row do, row by row. The pivots'
// lanes are chosen by selects, not stored one by one: a vector load of a vector that a scalar
// store has just changed cannot take its data from the store buffer and waits for both (on
// digits these waits were a large part of the link). Z becomes the probabilities; returns T (the
// other classes' sum) per row.
GRADSTEP_INLINE simd::v4d softmax_from4(double* Z, std::ptrdiff_t C, simd::v4i j, simd::v4d tj) {
  const simd::v4d zero = simd::splat(0.0);
  simd::v4d T = zero;
  for (std::ptrdiff_t c = 0; c < C; ++c) {  // class order
    const simd::v4i pivot = j == static_cast<std::int64_t>(c);
    const simd::v4d e = simd::select(pivot, zero, simd::exp_nonpositive(load4(Z + c * 4) - tj));
    store4(Z + c * 4, e);
    T += e;
  }
  const simd::v4d S = 1.0 + T;
  const simd::v4d at_pivot = simd::splat(1.0) / S;
  for (std::ptrdiff_t c = 0; c < C; ++c) {
    const simd::v4i pivot = j == static_cast<std::int64_t>(c);
    store4(Z + c * 4, simd::select(pivot, at_pivot, load4(Z + c * 4) / S));
  }
  return T;
}

// link_row for four rows (labels y, weights s): Z (C, 4) becomes s times the residuals; returns
// the rows' weighted losses s (logsumexp(z) - z_y).
GRADSTEP_INLINE simd::v4d link4_rows(double* Z, std::ptrdiff_t C, const std::int64_t y[4],
                                     simd::v4d s) {
  simd::v4i lead;
  simd::v4d top;
  leaders4(Z, C, lead, top);
  const simd::v4i yv = {y[0], y[1], y[2], y[3]};
  const simd::v4d zy = {Z[y[0] * 4], Z[y[1] * 4 + 1], Z[y[2] * 4 + 2], Z[y[3] * 4 + 3]};
  const simd::v4i label_leads = zy >= top;  // the label is the pivot when it ties for the lead
  const simd::v4i j = (label_leads & yv) | (~label_leads & lead);
  const simd::v4d tj = simd::select(label_leads, zy, top);
  const simd::v4d gap = tj - zy;
  const simd::v4d T = softmax_from4(Z, C, j, tj);
  const simd::v4d S = 1.0 + T;
  const simd::v4i label_is_pivot = j == yv;
  const simd::v4d pivot_label = (-T) / S;
  for (std::ptrdiff_t c = 0; c < C; ++c) {
    const simd::v4i label = yv == static_cast<std::int64_t>(c);
    const simd::v4d p = load4(Z + c * 4);
    // the label's entry: -T / S where it is the pivot, else p - 1
    const simd::v4d res = simd::select(label, simd::select(label_is_pivot, pivot_label, p - 1.0), p);
    store4(Z + c * 4, s * res);
  }
  return s * (gap + simd::log1p_nonnegative(T));  // the vector log1p: the C library's is scalar
}

// hess_row for four rows: Z (C, 4) becomes s p_c (u_c - sum_c' p_c' u_c') with U (C, 4).
GRADSTEP_INLINE void hess4_rows(double* Z, const double* U, std::ptrdiff_t C, simd::v4d s) {
  simd::v4i lead;
  simd::v4d top;
  leaders4(Z, C, lead, top);
  softmax_from4(Z, C, lead, top);
  simd::v4d mean = simd::splat(0.0);
  for (std::ptrdiff_t c = 0; c < C; ++c) mean += load4(Z + c * 4) * load4(U + c * 4);
  for (std::ptrdiff_t c = 0; c < C; ++c) {
    store4(Z + c * 4, s * load4(Z + c * 4) * (load4(U + c * 4) - mean));
  }
}
#endif

}  // namespace softmax
}  // namespace gradstep
