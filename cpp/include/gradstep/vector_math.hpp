// The link function on a vector of 4 or 8 doubles at once: log(1 + exp(z)) and sigmoid(z), with
// an exp and a log1p that vectorize (the C library's are scalar calls, and were measured at
// about 30 ns per row, more than the rest of a 100-feature row).
//
// Accuracy, without -ffast-math (every operation is an IEEE one, in a fixed order):
// - exp(x), x <= 0: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so that n ln2_hi is exact),
//   exp(r) by its Taylor polynomial of degree 13 (truncation below 5e-18 relative), then scaled by
//   2^n in two exact halves so that results in the subnormal range round once. Error within 1 ulp.
// - log1p(e), 0 <= e <= 1: u = 1 + e rounded and c = e - (u - 1) its rounding error (exact);
//   log(u) from u = 2^k m, m in [sqrt(2)/2, sqrt(2)), log(m) = f - f^2/2 + s (f^2/2 + R(s^2)) with
//   f = m - 1, s = f / (2 + f) and R the classic minimax polynomial of degree 7 in s^2 (error below
//   2^-58.45, Cody and Waite's method as in fdlibm), then log1p(e) = log(u) + c / u. Error within
//   1 ulp.
// tests/test_kernels.py (test_vector_link_*) checks exp and log1p through gradstep._core.link,
// against long double: at most 2 ulp over the whole range, special values included;
// tests/test_trust.py checks the kernel's loss, residual and Hessian weight (link4,
// hess_weight4) against mpmath, through the kernels and through gradstep._core.link_terms.
// Against the C library the link differs by a few 1e-16 relative, far inside the 1e-9 agreement
// of the backends.
#pragma once

#include <cstdint>
#include <cstring>

#include "simd.hpp"

namespace gradstep {
namespace simd {

#if defined(GRADSTEP_VECTOR_EXT)

typedef std::int64_t v4i __attribute__((vector_size(32)));
typedef std::int64_t v8i __attribute__((vector_size(64)));

// The functions below are templates over the vector type V: v4d (the AVX2 kernels) or 8 doubles
// (the AVX-512 kernel's 512-bit registers). Every lane goes through the same IEEE operations in
// the same order whatever the width, so both give the same bits.
template <std::size_t Bytes>
struct LaneBits;  // the int64 vector of a double vector's size
template <>
struct LaneBits<32> {
  typedef v4i type;
};
template <>
struct LaneBits<64> {
  typedef v8i type;
};
template <class V>
using bits_t = typename LaneBits<sizeof(V)>::type;

template <class V>
GRADSTEP_INLINE V splat_as(double a) {
  if constexpr (sizeof(V) == 32) {
    return V{a, a, a, a};
  } else {
    return V{a, a, a, a, a, a, a, a};
  }
}
template <class I>
GRADSTEP_INLINE I splat_bits(std::int64_t a) {
  if constexpr (sizeof(I) == 32) {
    return I{a, a, a, a};
  } else {
    return I{a, a, a, a, a, a, a, a};
  }
}
GRADSTEP_INLINE v4d splat(double a) { return splat_as<v4d>(a); }
template <class V>
GRADSTEP_INLINE bits_t<V> bits(V a) {
  bits_t<V> b;
  std::memcpy(&b, &a, sizeof b);
  return b;
}
template <class V>
GRADSTEP_INLINE V from_bits(bits_t<V> b) {
  V a;
  std::memcpy(&a, &b, sizeof a);
  return a;
}
GRADSTEP_INLINE v4d from_bits(v4i b) { return from_bits<v4d>(b); }
// mask ? a : b, mask lanes all ones or all zeros (a vector comparison)
template <class V>
GRADSTEP_INLINE V select(bits_t<V> mask, V a, V b) {
  return from_bits<V>((mask & bits(a)) | (~mask & bits(b)));
}

// exp(x) for x <= 0 (x > 0 is not used); NaN stays NaN, -inf gives 0.
template <class V>
GRADSTEP_INLINE V exp_nonpositive(V x) {
  const V lowest = splat_as<V>(-746.0);  // exp(-746) rounds to 0
  x = select(x < lowest, lowest, x);  // a NaN compares false and stays
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const V t = x * splat_as<V>(1.4426950408889634) + splat_as<V>(shifter);
  const V n = t - splat_as<V>(shifter);
  const V r = (x - n * splat_as<V>(6.93147180369123816490e-01)) -
              n * splat_as<V>(1.90821492927058770002e-10);
  // Taylor series of exp(r) to degree 13: the terms from r^4 on by Estrin's scheme (their sum is
  // scaled by r^4 <= 0.0145, so its rounding hardly shows) and the last four by Horner, whose
  // final steps set the accuracy as in a plain Horner. The dependent chain is 9 multiply-adds long
  // instead of 14 (the link of K runs is bound by such chains: link4 20.0 vs 21.1 ns, Zen 3).
  const V r2 = r * r;
  const V r4 = r2 * r2;
  const V a4 = splat_as<V>(1.0 / 24.0) + r * splat_as<V>(1.0 / 120.0);
  const V a6 = splat_as<V>(1.0 / 720.0) + r * splat_as<V>(1.0 / 5040.0);
  const V a8 = splat_as<V>(1.0 / 40320.0) + r * splat_as<V>(1.0 / 362880.0);
  const V a10 = splat_as<V>(1.0 / 3628800.0) + r * splat_as<V>(1.0 / 39916800.0);
  const V a12 = splat_as<V>(1.0 / 479001600.0) + r * splat_as<V>(1.0 / 6227020800.0);
  const V q = (a4 + r2 * a6) + r4 * ((a8 + r2 * a10) + r4 * a12);
  V p = q * r + splat_as<V>(1.0 / 6.0);
  p = p * r + splat_as<V>(0.5);
  p = p * r + splat_as<V>(1.0);
  p = p * r + splat_as<V>(1.0);
  // 2^n as two factors 2^n1 and 2^n2 with n1 = floor(n / 2), both normal for n >= -1076
  const bits_t<V> ni = bits(t) - bits(splat_as<V>(shifter));
  const bits_t<V> n1 = ni >> 1;
  const bits_t<V> n2 = ni - n1;
  const V s1 = from_bits<V>((n1 + 1023) << 52);
  const V s2 = from_bits<V>((n2 + 1023) << 52);
  return p * s1 * s2;
}

// log(2^k (1 + f)) for f = m - 1, m in [sqrt(2)/2, sqrt(2)): s = f / (2 + f), log(m) = f -
// f^2/2 + s (f^2/2 + R(s^2)), R the minimax polynomial of degree 7 in s^2 (fdlibm's method, see
// the top of this file), and k ln2 added in two parts.
template <class V>
GRADSTEP_INLINE V log_reduced(V f, V k) {
  const V s = f / (splat_as<V>(2.0) + f);
  const V z = s * s;
  const V w = z * z;
  const V t1 = w * (splat_as<V>(3.999999999940941908e-01) +
                    w * (splat_as<V>(2.222219843214978396e-01) +
                         w * splat_as<V>(1.531383769920937332e-01)));
  const V t2 = z * (splat_as<V>(6.666666666666735130e-01) +
                    w * (splat_as<V>(2.857142874366239149e-01) +
                         w * (splat_as<V>(1.818357216161805012e-01) +
                              w * splat_as<V>(1.479819860511658591e-01))));
  const V R = t2 + t1;
  const V hfsq = splat_as<V>(0.5) * f * f;
  const V log_u = k * splat_as<V>(6.93147180369123816490e-01) -
                  ((hfsq - (s * (hfsq + R) + k * splat_as<V>(1.90821492927058770002e-10))) - f);
  return log_u;
}

// log1p(e) for 0 <= e <= 1, given u = 1 + e (rounded) and inv = 1 / u: the correction c / u is
// taken as c * inv (c is u's rounding error, below 2^-53 u: the product's extra rounding does not
// show). link4 divides its residual by the same u. NaN stays NaN.
template <class V>
GRADSTEP_INLINE V log1p_unit(V e, V u, V inv) {
  const V one = splat_as<V>(1.0);
  const V c = e - (u - one);  // u + c == 1 + e exactly
  // u in [1, 2]: k = 1 and m = u / 2 above sqrt(2), else k = 0 and m = u; f = m - 1 exactly
  const bits_t<V> high = u > splat_as<V>(1.4142135623730951);
  const V k = select(high, one, splat_as<V>(0.0));
  const V m = select(high, u * splat_as<V>(0.5), u);
  const V f = m - one;
  const V log_u = log_reduced(f, k);
  return log_u + c * inv;
}

// log1p(e) for 0 <= e <= 1; NaN stays NaN.
template <class V>
GRADSTEP_INLINE V log1p_unit(V e) {
  const V u = splat_as<V>(1.0) + e;
  return log1p_unit(e, u, splat_as<V>(1.0) / u);
}

// log1p(t) for t >= 0 (the softmax link's T, the other classes' sum, in [0, C - 1]), as
// log1p_unit for any exponent: u = 1 + t rounded and c its rounding error (exact: Fast2Sum with
// the larger of 1 and t first), u = 2^k m with m in [sqrt(2)/2, sqrt(2)) taken from u's bits, then
// log(m) and log1p(t) = k ln2 + log(m) + c / u as there. Error within 1 ulp, as log1p_unit's. NaN
// stays NaN and +inf gives +inf (selected, not computed from the bits).
template <class V>
GRADSTEP_INLINE V log1p_nonnegative(V t) {
  const V one = splat_as<V>(1.0);
  const V u = one + t;
  const V c = select(t > one, one - (u - t), t - (u - one));
  const bits_t<V> ub = bits(u);
  const std::int64_t mantissa = 0x000FFFFFFFFFFFFFLL;
  const V mu = from_bits<V>((ub & splat_bits<bits_t<V>>(mantissa)) | bits(one));  // [1, 2)
  const bits_t<V> high = mu > splat_as<V>(1.4142135623730951);
  const V m = select(high, mu * splat_as<V>(0.5), mu);
  // k = u's exponent (+ 1 where m was halved), as a double: 2^52 + e read back, minus 2^52
  const bits_t<V> e = (ub >> 52) - 1023 + (high & 1);
  const V two52 = splat_as<V>(4503599627370496.0);
  const V k = from_bits<V>(e + bits(two52)) - two52;
  const V f = m - one;
  const V log_u = log_reduced(f, k);
  const V finite = log_u + c / u;
  return select(t < splat_as<V>(1.0e300), finite, t);  // NaN and +inf (and t beyond 1e300) as given
}

template <class V>
GRADSTEP_INLINE V abs4(V z) {
  const std::int64_t no_sign = 0x7FFFFFFFFFFFFFFFLL;
  return from_bits<V>(bits(z) & splat_bits<bits_t<V>>(no_sign));
}

// The kernel's link for four rows with 0/1 targets y, as link1 (block_kernel.hpp) for one: with
// e = exp(-|z|) and q = 1 - y,
//   loss     = log(1 + exp(z)) - y z = (max(z, 0) - y z) + log1p(e)
//   residual = sigmoid(z) - y        = (z >= 0 ? q - y e : q e - y) / (1 + e)
// For y in {0, 1}, max(z, 0) - y z is 0 or |z| exactly and one of the two products in each
// bracket of the residual is exactly 0, so nothing cancels: the loss is the sum of two
// non-negative terms and the residual an exact numerator times the rounded 1 / (1 + e), within
// 1 ulp (for y = 1 and z >> 0 it is -e / (1 + e), not 1 / (1 + e) - 1, which is 0 from z = 37
// on). Both within a few ulp for every finite z. A NaN z gives NaN. (The reciprocal, shared with
// the log1p's correction, saves one of three divisions: 20-21.7 -> 18.6 ns per call, Zen 3.)
template <class V>
GRADSTEP_INLINE void link4(V z, V y, V& loss, V& residual) {
  const V zero = splat_as<V>(0.0), one = splat_as<V>(1.0);
  const V e = exp_nonpositive(-abs4(z));
  const V u = one + e;
  const V inv = one / u;  // one division for the log1p's correction and the residual
  loss = (select(z > zero, z, zero) - y * z) + log1p_unit(e, u, inv);  // NaN z: NaN through y z
  const V q = one - y;
  residual = select(z >= zero, q - y * e, q * e - y) * inv;
}

// sigmoid(z) (1 - sigmoid(z)) for four z, as e / (1 + e)^2 with e = exp(-|z|): the same for z and
// -z, and never 1 - sigmoid(z) (which is 0 from z = 37 on). The Hessian-vector product's weight.
template <class V>
GRADSTEP_INLINE V hess_weight4(V z) {
  const V e = exp_nonpositive(-abs4(z));
  const V o = splat_as<V>(1.0) + e;
  return e / (o * o);
}

// log(1 + exp(z)) and sigmoid(z) for four z (gradstep._core.link: the accuracy tests of exp and
// log1p above), as log1pexp_sigmoid does for one.
template <class V>
GRADSTEP_INLINE void log1pexp_sigmoid4(V z, V& log1pexp, V& sigmoid) {
  const V zero = splat_as<V>(0.0);
  const V e = exp_nonpositive(-abs4(z));
  log1pexp = select(z > zero, z, zero) + log1p_unit(e);  // a NaN z gives NaN through log1p
  sigmoid = select(z >= zero, splat_as<V>(1.0), e) / (splat_as<V>(1.0) + e);
}

#endif  // GRADSTEP_VECTOR_EXT

}  // namespace simd
}  // namespace gradstep
