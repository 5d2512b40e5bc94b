// The vector types of the kernel: a Quad of four doubles, its loads (float32 widened on the way)
// and multiply-adds, written once for both compiled versions of the kernel (block_kernel.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) || defined(__clang__)
#define GRADSTEP_INLINE inline __attribute__((always_inline))
#define GRADSTEP_RESTRICT __restrict
#elif defined(_MSC_VER)
#define GRADSTEP_INLINE __forceinline
#define GRADSTEP_RESTRICT __restrict
#else
#define GRADSTEP_INLINE inline
#define GRADSTEP_RESTRICT
#endif

namespace gradstep {
namespace simd {

constexpr int kLanes = 4;  // independent partial sums per dot product

// Quad: the 4 partial sums of one dot product, added as (l0 + l1) + (l2 + l3) at the end. GCC and
// Clang get it as one 32-byte vector: one register in the AVX2 version, two 16-byte halves in the
// baseline (the compiler splits it), because their auto-vectorizer turns a plain
// multi-accumulator loop into an in-order reduction with scalar adds. Other compilers get four
// scalars. Defining GRADSTEP_SCALAR forces the plain variant.
#if (defined(__GNUC__) || defined(__clang__)) && !defined(GRADSTEP_SCALAR)
#define GRADSTEP_VECTOR_EXT 1
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
struct Quad {
  v4d v;
};
GRADSTEP_INLINE void load(Quad& q, const double* p) { std::memcpy(&q.v, p, sizeof q.v); }
// Element by element, not __builtin_convertvector: GCC 12 lowers that as two 2-wide conversions
// (the upper half through the stack in the kernel's loops, ~6 instructions a load), where this
// form is one vcvtps2pd from memory in the AVX versions and the same two cvtps2pd as before in
// the baseline. With axpy4's Quad loop for one run: the float32 gradient, 1M x 100, 1 thread,
// Zen 3, 56-59 -> 41-46 ms (float64 84-90 -> 75-77 ms: the Quad loop).
GRADSTEP_INLINE void load(Quad& q, const float* p) {
  v4f f;
  std::memcpy(&f, p, sizeof f);
  q.v = v4d{f[0], f[1], f[2], f[3]};
}
GRADSTEP_INLINE void madd(Quad& acc, const Quad& x, const Quad& w) { acc.v += x.v * w.v; }
GRADSTEP_INLINE Quad mul(const Quad& x, const Quad& w) { return Quad{x.v * w.v}; }
GRADSTEP_INLINE void add(Quad& acc, const Quad& x) { acc.v += x.v; }
GRADSTEP_INLINE void broadcast(Quad& q, double value) { q.v = v4d{value, value, value, value}; }
GRADSTEP_INLINE void store(double* p, const Quad& q) { std::memcpy(p, &q.v, sizeof q.v); }
GRADSTEP_INLINE void add_store(double* p, const Quad& q) {  // p[0 .. 4) += q
  v4d g;
  std::memcpy(&g, p, sizeof g);
  g += q.v;
  std::memcpy(p, &g, sizeof g);
}
GRADSTEP_INLINE void add_lane(Quad& acc, int lane, double value) { acc.v[lane] += value; }
GRADSTEP_INLINE double hsum(const Quad& q) { return (q.v[0] + q.v[1]) + (q.v[2] + q.v[3]); }
// (v, v, v, v) with v = *p. Avx (only where the caller is compiled for AVX; GCC on x86): one
// vbroadcastsd from memory, a load. GCC's own splat there is vmovddup + vinsertf128, whose second
// half takes a vector pipe that the multiply-adds around it need (the multinomial kernel's scores
// tile: 13 -> 9 us per 256 rows of digits, Zen 3).
template <bool Avx>
GRADSTEP_INLINE v4d splat_load(const double* p) {
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
  if constexpr (Avx) {
    v4d v;
    __asm__("vbroadcastsd %1, %0" : "=x"(v) : "m"(*p));
    return v;
  }
#endif
  return v4d{*p, *p, *p, *p};
}
// Keep (only where the caller is compiled for AVX): an empty asm that says q is changed, so that
// q stays the register it was loaded into. Without it GCC folds a load used by two multiply-adds
// into both, as memory operands: the load issued twice (dot_rows with two vectors: 10 loads per 8
// multiply-adds instead of 6). The baseline (SSE2) must not ask for it: a 32-byte vector fits no
// register there. GCC only: Clang checks the operand's size against the file's target, not the
// function's, and refuses a 32-byte "x" operand outside -mavx builds.
template <bool Keep>
GRADSTEP_INLINE void keep_in_register(Quad& q) {
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
  if constexpr (Keep) __asm__("" : "+x"(q.v));
#endif
  (void)q;
}
#else
struct Quad {
  double a[kLanes];
};
template <class T>
GRADSTEP_INLINE void load(Quad& q, const T* p) {
  for (int l = 0; l < kLanes; ++l) q.a[l] = static_cast<double>(p[l]);
}
GRADSTEP_INLINE void madd(Quad& acc, const Quad& x, const Quad& w) {
  for (int l = 0; l < kLanes; ++l) acc.a[l] += x.a[l] * w.a[l];
}
GRADSTEP_INLINE void add_lane(Quad& acc, int lane, double value) { acc.a[lane] += value; }
GRADSTEP_INLINE double hsum(const Quad& q) { return (q.a[0] + q.a[1]) + (q.a[2] + q.a[3]); }
GRADSTEP_INLINE Quad mul(const Quad& x, const Quad& w) {
  Quad p;
  for (int l = 0; l < kLanes; ++l) p.a[l] = x.a[l] * w.a[l];
  return p;
}
GRADSTEP_INLINE void add(Quad& acc, const Quad& x) {
  for (int l = 0; l < kLanes; ++l) acc.a[l] += x.a[l];
}
GRADSTEP_INLINE void broadcast(Quad& q, double value) {
  for (int l = 0; l < kLanes; ++l) q.a[l] = value;
}
GRADSTEP_INLINE void store(double* p, const Quad& q) {
  for (int l = 0; l < kLanes; ++l) p[l] = q.a[l];
}
GRADSTEP_INLINE void add_store(double* p, const Quad& q) {
  for (int l = 0; l < kLanes; ++l) p[l] += q.a[l];
}
template <bool Keep>
GRADSTEP_INLINE void keep_in_register(Quad&) {}
#endif

}  // namespace simd
}  // namespace gradstep
