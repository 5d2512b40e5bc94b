// The logistic loss and its gradient for K runs in one pass over the rows of X.
//
// Per row i and active run k (weights w_k, intercept b_k, target y, weight s):
//     z = x_i . w_k + b_k
//     loss_k += s * (log(1 + exp(z)) - y z)
//     g_k    += s * (sigmoid(z) - y) * (x_i, 1)
// then loss and gradient are divided by the sum of the weights of the rows used, and the L2 term
// (alpha != 0 only) is added to the loss and to the weight part of the gradient (reference.loss_grad).
//
// Layout of the work, and why:
// - Rows are cut into fixed blocks whose size depends on d only (block_rows). Each block writes its
//   partial loss, gradient and weight sum into its own slot, and the slots are then added up in
//   block order. The arithmetic is therefore the same whatever the number of threads, and so are
//   the bits of the result.
// - Inside a block, runs are taken a tile at a time (runs_per_tile): the tile's weights and gradient
//   accumulators stay in L1 while the block's rows stream through it; the block itself is sized
//   to stay in L2 for the next tile.
// - The work on one block and one tile is block_kernel.hpp's, which also picks the instruction
//   set at run time.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "block_kernel.hpp"
#include "thread_pool.hpp"

namespace gradstep {

// What the kernel reads. Y is (n, ky) with ky in {1, K}: run k uses column (ky == 1 ? 0 : k).
// sw == nullptr means unit weights.
template <class T>
struct Dataset {
  const T* X = nullptr;
  std::ptrdiff_t n = 0;
  std::ptrdiff_t d = 0;
  const double* Y = nullptr;
  std::ptrdiff_t ky = 1;
  const double* sw = nullptr;
};

// Rows x features x runs below which a gradient stays on the calling thread: about 0.15 ms of
// single-thread work, while waking a sleeping worker was measured at 5 to 70 us (more in a VM).
// Mini-batches of the usual sizes stay below it. The result is the same either way.
constexpr double kMinParallelWork = 2.0e5;

// Rows per block: about 256 KiB of float64 data, so a block stays in L2 while each run tile reads
// it; at least 64 rows so the per-block bookkeeping (zeroing and adding a slot) stays negligible.
// A multiple of 4, the row group. Depends on d only, never on the number of threads.
inline std::ptrdiff_t block_rows(std::ptrdiff_t d) {
  const std::ptrdiff_t rows = std::clamp<std::ptrdiff_t>(32768 / std::max<std::ptrdiff_t>(d, 1),
                                                         64, 4096);
  return rows / 4 * 4;
}

// Runs per tile: their weights and gradient accumulators take about 24 KiB, inside L1.
inline std::ptrdiff_t runs_per_tile(std::ptrdiff_t D) {
  return std::max<std::ptrdiff_t>(1, 24576 / (16 * std::max<std::ptrdiff_t>(D, 1)));
}

namespace detail {

constexpr std::ptrdiff_t kLineDoubles = 8;  // a 64-byte cache line

// Doubles per run in a block's slot: the gradient (D), then the loss, rounded up to whole cache
// lines so that threads working on neighbouring run tiles never write the same line.
inline std::ptrdiff_t run_stride(std::ptrdiff_t D) {
  return (D + 1 + kLineDoubles - 1) / kLineDoubles * kLineDoubles;
}

inline double* align_to_line(double* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t line = kLineDoubles * sizeof(double);
  return reinterpret_cast<double*>((address + line - 1) / line * line);
}

}  // namespace detail

// The loss and gradient of K runs over all rows or a list of rows, with its scratch space.
// One engine serves every gradient of a fit, so the scratch is allocated once.
template <class T>
class GradientEngine {
 public:
  GradientEngine(const Dataset<T>& data, std::ptrdiff_t n_runs) : data_(data), K_(n_runs) {}

  // loss (K,) and G (K, D = d + 1, intercept last) at the weights P (K, D) over the rows
  // rows[0 .. n_rows) (rows == nullptr: all n rows), for the runs with active[k] != 0; the
  // others come back as zeros, as does everything when the weights of the rows used sum to 0.
  // The sums are divided by the weight of the rows used, or by `denominator` when it is > 0
  // (mini-batches with sample weights: see run_minibatch).
  void compute(const double* P, double alpha, const std::int64_t* rows, std::ptrdiff_t n_rows,
               const std::uint8_t* active, int n_threads, double* loss, double* G,
               double denominator = 0.0) {
    const std::ptrdiff_t d = data_.d, D = d + 1, S = detail::run_stride(D);
    std::fill(loss, loss + K_, 0.0);
    std::fill(G, G + K_ * D, 0.0);
    runs_.clear();
    for (std::ptrdiff_t k = 0; k < K_; ++k) {
      if (active[k]) runs_.push_back(k);
    }
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    const std::ptrdiff_t used = rows ? n_rows : data_.n;
    if (m == 0 || used == 0) return;

    const std::ptrdiff_t B = block_rows(d);
    const std::ptrdiff_t n_blocks = (used + B - 1) / B;
    const std::ptrdiff_t tile = runs_per_tile(D);
    const std::ptrdiff_t n_tiles = (m + tile - 1) / tile;
    const std::ptrdiff_t slot = m * S;
    // Blocks are processed in waves whose slots take at most ~32 MiB; the fold below adds the
    // slots in block order whatever the wave size, so the wave size never changes the result.
    const std::ptrdiff_t wave = std::clamp<std::ptrdiff_t>(
        (std::ptrdiff_t{32} << 20) / static_cast<std::ptrdiff_t>(sizeof(double) * slot), 1,
        n_blocks);
    partial_.resize(static_cast<std::size_t>(wave * slot + detail::kLineDoubles));
    // slots start on a cache line, so two threads never write the same line
    double* const partial = detail::align_to_line(partial_.data());
    wsum_.resize(static_cast<std::size_t>(wave));
    acc_.assign(static_cast<std::size_t>(slot), 0.0);
    double total = 0.0;

    const double work = static_cast<double>(used) * static_cast<double>(D) * static_cast<double>(m);
    const int participants = work >= kMinParallelWork ? std::max(1, n_threads) : 1;
    ThreadPool* pool = participants > 1 ? &ThreadPool::instance() : nullptr;

    for (std::ptrdiff_t b0 = 0; b0 < n_blocks; b0 += wave) {
      const std::ptrdiff_t nw = std::min(wave, n_blocks - b0);
      auto task = [&](std::ptrdiff_t id) {
        const std::ptrdiff_t bi = id / n_tiles, ti = id % n_tiles;
        const std::ptrdiff_t start = (b0 + bi) * B;
        const std::ptrdiff_t count = std::min(B, used - start);
        const std::ptrdiff_t c0 = ti * tile, c1 = std::min(m, c0 + tile);
        const BlockJob<T> job{data_.X, data_.d, data_.Y, data_.ky, data_.sw, P, runs_.data(),
                              rows ? rows + start : nullptr, start, count, c0, c1, S,
                              partial + bi * slot};
        run_block_kernel(job);
        if (ti == 0) wsum_[static_cast<std::size_t>(bi)] = weight_sum(rows, start, count);
      };
      if (pool) {
        pool->parallel_for(nw * n_tiles, participants, task);
      } else {
        for (std::ptrdiff_t id = 0; id < nw * n_tiles; ++id) task(id);
      }
      for (std::ptrdiff_t bi = 0; bi < nw; ++bi) {  // block order: the same sum for any threads
        total += wsum_[static_cast<std::size_t>(bi)];
        const double* GRADSTEP_RESTRICT part = partial + bi * slot;
        double* GRADSTEP_RESTRICT acc = acc_.data();
        for (std::ptrdiff_t c = 0; c < slot; ++c) acc[c] += part[c];
      }
    }
    if (total == 0.0) return;
    if (denominator > 0.0) total = denominator;

    for (std::ptrdiff_t c = 0; c < m; ++c) {
      const std::ptrdiff_t k = runs_[static_cast<std::size_t>(c)];
      const double* a = acc_.data() + c * S;
      double* g = G + k * D;
      for (std::ptrdiff_t j = 0; j < D; ++j) g[j] = a[j] / total;
      loss[k] = a[D] / total;
      if (alpha != 0.0) {  // with alpha == 0 the penalty is not computed at all
        const double* w = P + k * D;
        double sq = 0.0;
        for (std::ptrdiff_t j = 0; j < d; ++j) sq += w[j] * w[j];
        loss[k] += 0.5 * alpha * sq;
        for (std::ptrdiff_t j = 0; j < d; ++j) g[j] += alpha * w[j];
      }
    }
  }

 private:
  double weight_sum(const std::int64_t* rows, std::ptrdiff_t start, std::ptrdiff_t count) const {
    if (data_.sw == nullptr) return static_cast<double>(count);
    double s = 0.0;
    for (std::ptrdiff_t p = 0; p < count; ++p) {
      s += data_.sw[rows ? rows[start + p] : start + p];
    }
    return s;
  }

  Dataset<T> data_;
  std::ptrdiff_t K_;
  std::vector<std::ptrdiff_t> runs_;  // the active runs, in run order
  std::vector<double> partial_;       // one slot of m * run_stride(D) per block of the current wave
  std::vector<double> wsum_;          // the weight sum of each block of the current wave
  std::vector<double> acc_;           // the running sum of the slots, in block order
};

}  // namespace gradstep
