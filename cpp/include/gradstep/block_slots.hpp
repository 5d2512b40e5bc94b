// What the block-summing engines share: each run's divisor and the runs worth computing (the
// dense multinomial and CSR engines), and the slots the blocks sum into (those and the dense
// logistic engine).
//
// Every engine cuts its rows into fixed blocks, lets each block sum into its own slot (whole cache
// lines, so that two threads never write the same line), and adds the slots in block order, in
// waves of a few blocks: the result has the same bits for any number of threads and any wave.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace gradstep {
namespace detail {

constexpr std::ptrdiff_t kLineDoubles = 8;  // a 64-byte cache line

inline std::size_t to_size(std::ptrdiff_t n) { return static_cast<std::size_t>(n); }

// n doubles rounded up to whole cache lines.
inline std::ptrdiff_t whole_lines(std::ptrdiff_t n) {
  return (n + kLineDoubles - 1) / kLineDoubles * kLineDoubles;
}

inline double* align_to_line(double* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t line = kLineDoubles * sizeof(double);
  return reinterpret_cast<double*>((address + line - 1) / line * line);
}

// Blocks per wave (one slot each): 1 on one thread, 2 per participant otherwise, so that a thread
// that finishes early has a block to take.
inline std::ptrdiff_t wave_blocks(std::ptrdiff_t n_blocks, int participants) {
  return std::min<std::ptrdiff_t>(n_blocks, participants == 1 ? 1 : 2 * participants);
}

// totals (K,) = each run's divisor: denominator[k] when one is given, else run k's weight of the
// rows used (rows[0 .. used), or the first `used` rows when rows is nullptr), each weight column
// summed in row order. SW (n, ks): ks == 0 unit weights, ks == 1 one column for every run, else a
// column per run. classes > 1 (the CSR engine's multinomial runs): K counts every run's classes,
// run r's class c is run r C + c, and SW's column r (ks > 1) is run r's, which each of its classes
// takes.
inline void run_divisors(std::vector<double>& totals, std::ptrdiff_t K, const double* denominator,
                         const double* SW, std::ptrdiff_t ks, const std::int64_t* rows,
                         std::ptrdiff_t used, std::ptrdiff_t classes = 1) {
  if (denominator) {
    totals.assign(denominator, denominator + K);
    return;
  }
  totals.assign(to_size(K), 0.0);
  if (ks == 0) {
    std::fill(totals.begin(), totals.end(), static_cast<double>(used));
    return;
  }
  for (std::ptrdiff_t p = 0; p < used; ++p) {
    const double* sw = SW + (rows ? static_cast<std::ptrdiff_t>(rows[p]) : p) * ks;
    for (std::ptrdiff_t c = 0; c < ks; ++c) totals[to_size(c)] += sw[c];
  }
  if (ks == 1) std::fill(totals.begin() + 1, totals.end(), totals[0]);
  // downwards, so that totals[k / C] (k / C < k) is read before it is overwritten
  if (ks > 1 && classes > 1) {
    for (std::ptrdiff_t k = K - 1; k > 0; --k) totals[to_size(k)] = totals[to_size(k / classes)];
  }
}

// runs = the active runs whose divisor is not 0, in run order; false when there is none.
inline bool select_runs(std::vector<std::ptrdiff_t>& runs, const std::uint8_t* active,
                        const std::vector<double>& totals, std::ptrdiff_t K) {
  runs.clear();
  for (std::ptrdiff_t k = 0; k < K; ++k) {
    if (active[k] && totals[to_size(k)] != 0.0) runs.push_back(k);
  }
  return !runs.empty();
}

}  // namespace detail
}  // namespace gradstep
