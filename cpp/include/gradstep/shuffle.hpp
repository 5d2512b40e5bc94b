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

// Fills order (size n) with the row order of epoch `epoch`; keys is scratch.
//
// The sort is an LSD radix sort of (key, row) pairs, 11 bits of the key per pass: each pass is
// stable, so rows with equal keys keep their order, exactly as the stable comparison sort of the
// specification, in 6 linear passes instead of n log n comparisons (std::stable_sort was a third
// of a mini-batch epoch at 200,000 rows).
inline void shuffle_order(std::ptrdiff_t n, std::uint64_t seed, std::uint64_t epoch,
                          std::vector<std::uint64_t>& keys, std::vector<std::int64_t>& order) {
  const auto un = static_cast<std::uint64_t>(n);
  const auto size = static_cast<std::size_t>(n);
  keys.resize(2 * size);  // the keys, then the keys of the other buffer
  order.resize(2 * size);
  std::uint64_t* key_a = keys.data();
  std::uint64_t* key_b = keys.data() + size;
  std::int64_t* row_a = order.data();
  std::int64_t* row_b = order.data() + size;
  for (std::size_t i = 0; i < size; ++i) {
    key_a[i] = shuffle_key(seed, epoch, un, static_cast<std::uint64_t>(i));
    row_a[i] = static_cast<std::int64_t>(i);
  }
  constexpr int kBits = 11;
  constexpr std::size_t kBuckets = std::size_t{1} << kBits;
  std::vector<std::size_t> count(kBuckets);
  for (int shift = 0; shift < 64; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (std::size_t i = 0; i < size; ++i) ++count[(key_a[i] >> shift) & (kBuckets - 1)];
    std::size_t total = 0;
    for (std::size_t b = 0; b < kBuckets; ++b) {
      const std::size_t c = count[b];
      count[b] = total;
      total += c;
    }
    for (std::size_t i = 0; i < size; ++i) {
      const std::size_t at = count[(key_a[i] >> shift) & (kBuckets - 1)]++;
      key_b[at] = key_a[i];
      row_b[at] = row_a[i];
    }
    std::swap(key_a, key_b);
    std::swap(row_a, row_b);
  }
  // after an even number of passes the sorted rows are back in the first half
  order.resize(size);
}

}  // namespace gradstep
