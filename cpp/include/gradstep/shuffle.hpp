// The mini-batch shuffle, bit for bit the generator of state.py (shuffle_keys / shuffle_order).
//
// Why this generator: every backend must walk the same path, so the order of the rows in epoch e
// is a pure function of (seed, e, n) that NumPy, Numba and C++ compute identically: the row i gets
// the key splitmix64(seed + (e * n + i + 1) * GOLDEN) in wrapping uint64 arithmetic, and the rows
// are sorted by key with a stable sort (a tie needs a 64-bit collision; it keeps row order, as
// np.argsort(kind="stable") does).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

namespace gradstep {

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr std::uint64_t kMix1 = 0xBF58476D1CE4E5B9ULL;
constexpr std::uint64_t kMix2 = 0x94D049BB133111EBULL;

// The finalizer of splitmix64 (unsigned arithmetic wraps, as NumPy's uint64 does).
inline std::uint64_t splitmix64_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

inline std::uint64_t shuffle_key(std::uint64_t seed, std::uint64_t epoch, std::uint64_t n,
                                 std::uint64_t i) {
  const std::uint64_t counter = epoch * n + (i + 1);
  return splitmix64_mix(seed + counter * kGolden);
}

// Fills order (size n) with the row order of epoch `epoch`; keys is scratch, resized to n.
inline void shuffle_order(std::ptrdiff_t n, std::uint64_t seed, std::uint64_t epoch,
                          std::vector<std::uint64_t>& keys, std::vector<std::int64_t>& order) {
  const auto un = static_cast<std::uint64_t>(n);
  keys.resize(static_cast<std::size_t>(n));
  order.resize(static_cast<std::size_t>(n));
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    keys[static_cast<std::size_t>(i)] = shuffle_key(seed, epoch, un, static_cast<std::uint64_t>(i));
  }
  std::iota(order.begin(), order.end(), std::int64_t{0});
  const std::uint64_t* k = keys.data();
  std::stable_sort(order.begin(), order.end(),
                   [k](std::int64_t a, std::int64_t b) { return k[a] < k[b]; });
}

}  // namespace gradstep
