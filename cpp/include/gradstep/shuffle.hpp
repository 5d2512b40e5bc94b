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
// The keys are uniform 64-bit numbers, so a bucket sort on their top bits (about four rows per
// bucket) followed by an insertion sort of each bucket on the whole key sorts them in linear time.
// Both steps are stable, so rows with equal keys keep their order, exactly as the stable
// comparison sort of the specification (std::stable_sort was a third of a mini-batch epoch at
// 200,000 rows; an LSD radix sort in 6 passes took 9 ms, this 4 ms).
inline void shuffle_order(std::ptrdiff_t n, std::uint64_t seed, std::uint64_t epoch,
                          std::vector<std::uint64_t>& keys, std::vector<std::int64_t>& order) {
  const auto un = static_cast<std::uint64_t>(n);
  const auto size = static_cast<std::size_t>(n);
  auto key_of = [&](std::size_t i) {  // recomputed, not stored: 8 bytes per row less at the peak
    return shuffle_key(seed, epoch, un, static_cast<std::uint64_t>(i));
  };
  int bits = 1;  // about four rows per bucket
  while (bits < 24 && (std::size_t{4} << bits) < size) ++bits;
  const int shift = 64 - bits;
  const std::size_t n_buckets = std::size_t{1} << bits;
  std::vector<std::size_t> end(n_buckets + 1, 0);  // end[b + 1]: count, then the end of bucket b
  keys.resize(size);  // the keys in sorted order
  order.resize(size);
  for (std::size_t i = 0; i < size; ++i) ++end[(key_of(i) >> shift) + 1];
  for (std::size_t b = 1; b <= n_buckets; ++b) end[b] += end[b - 1];
  for (std::size_t i = 0; i < size; ++i) {  // rows in order: each bucket is in row order
    const std::uint64_t k = key_of(i);
    const std::size_t at = end[k >> shift]++;  // end[b] runs from the start of b to its end
    keys[at] = k;
    order[at] = static_cast<std::int64_t>(i);
  }
  std::size_t begin = 0;
  for (std::size_t b = 0; b < n_buckets; ++b) {  // stable insertion sort of bucket b
    for (std::size_t i = begin + 1; i < end[b]; ++i) {
      const std::uint64_t k = keys[i];
      const std::int64_t row = order[i];
      std::size_t j = i;
      for (; j > begin && keys[j - 1] > k; --j) {
        keys[j] = keys[j - 1];
        order[j] = order[j - 1];
      }
      keys[j] = k;
      order[j] = row;
    }
    begin = end[b];
  }
}

// ---- shuffle="blocks" (state.shuffle_order_blocks, whose comment is the specification) --------
// Blocks of `block` consecutive rows in a shuffled order, grouped into windows of
// kShuffleWindow rows whose rows are ordered by the row shuffle's keys.
constexpr std::ptrdiff_t kShuffleWindow = 1024;  // state.SHUFFLE_WINDOW
constexpr std::uint64_t kBlockSeedTag = 0x5851F42D4C957F2DULL;  // state.BLOCK_SEED_TAG

// state.block_seed: the block order's own seed.
inline std::uint64_t block_seed(std::uint64_t seed) { return splitmix64_mix(seed ^ kBlockSeedTag); }

// Scratch of shuffle_order_blocks, kept across epochs (no allocation per epoch).
struct BlockShuffle {
  std::vector<std::int64_t> blocks;  // the block order of the current epoch
  std::vector<std::uint64_t> block_keys, keys, sorted_keys;
  std::vector<std::int64_t> sorted_rows;
  std::vector<std::size_t> end;
};

// Stable sort of rows[0, m) by keys[0, m) (uniform 64-bit keys): the bucket and insertion sort of
// shuffle_order on stored keys. A window has at most kShuffleWindow rows, so this is linear and
// in cache; std::sort of 1024 pairs per window was about half an epoch's arithmetic.
inline void sort_by_uniform_keys(std::uint64_t* keys, std::int64_t* rows, std::size_t m,
                                 BlockShuffle& s) {
  if (m < 2) return;
  int bits = 1;  // about four rows per bucket
  while (bits < 24 && (std::size_t{4} << bits) < m) ++bits;
  const int shift = 64 - bits;
  const std::size_t n_buckets = std::size_t{1} << bits;
  s.end.assign(n_buckets + 1, 0);
  s.sorted_keys.resize(m);
  s.sorted_rows.resize(m);
  for (std::size_t i = 0; i < m; ++i) ++s.end[(keys[i] >> shift) + 1];
  for (std::size_t b = 1; b <= n_buckets; ++b) s.end[b] += s.end[b - 1];
  for (std::size_t i = 0; i < m; ++i) {
    const std::size_t at = s.end[keys[i] >> shift]++;
    s.sorted_keys[at] = keys[i];
    s.sorted_rows[at] = rows[i];
  }
  std::size_t begin = 0;
  for (std::size_t b = 0; b < n_buckets; ++b) {
    for (std::size_t i = begin + 1; i < s.end[b]; ++i) {
      const std::uint64_t k = s.sorted_keys[i];
      const std::int64_t row = s.sorted_rows[i];
      std::size_t j = i;
      for (; j > begin && s.sorted_keys[j - 1] > k; --j) {
        s.sorted_keys[j] = s.sorted_keys[j - 1];
        s.sorted_rows[j] = s.sorted_rows[j - 1];
      }
      s.sorted_keys[j] = k;
      s.sorted_rows[j] = row;
    }
    begin = s.end[b];
  }
  std::copy(s.sorted_rows.begin(), s.sorted_rows.begin() + static_cast<std::ptrdiff_t>(m), rows);
}

// Fills order (size n) with the block order of epoch `epoch` (blocks of `block` >= 1 rows) and
// s.blocks with the block order itself (the C++ loop prefetches the rows block by block).
inline void shuffle_order_blocks(std::ptrdiff_t n, std::uint64_t seed, std::uint64_t epoch,
                                 std::ptrdiff_t block, BlockShuffle& s,
                                 std::vector<std::int64_t>& order) {
  const std::ptrdiff_t n_blocks = (n + block - 1) / block;
  const std::ptrdiff_t per_window = std::max<std::ptrdiff_t>(1, kShuffleWindow / block);
  shuffle_order(n_blocks, block_seed(seed), epoch, s.block_keys, s.blocks);
  order.resize(static_cast<std::size_t>(n));
  s.keys.resize(static_cast<std::size_t>(std::min(n, per_window * block)));
  const auto un = static_cast<std::uint64_t>(n);
  std::ptrdiff_t pos = 0;
  for (std::ptrdiff_t w = 0; w < n_blocks; w += per_window) {
    const std::ptrdiff_t begin = pos;
    for (std::ptrdiff_t j = w; j < std::min(w + per_window, n_blocks); ++j) {
      const std::int64_t first = s.blocks[static_cast<std::size_t>(j)] * block;
      const std::int64_t last = std::min<std::int64_t>(first + block, n);
      for (std::int64_t row = first; row < last; ++row, ++pos) {
        order[static_cast<std::size_t>(pos)] = row;
        s.keys[static_cast<std::size_t>(pos - begin)] =
            shuffle_key(seed, epoch, un, static_cast<std::uint64_t>(row));
      }
    }
    sort_by_uniform_keys(s.keys.data(), order.data() + begin, static_cast<std::size_t>(pos - begin),
                         s);
  }
}

}  // namespace gradstep
