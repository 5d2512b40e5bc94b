// The logistic loss and its gradient, and the Hessian-vector product, for K runs in one pass over
// the rows of X.
//
// Per row i and active run k (weights w_k, intercept b_k, target y, weight s_ik):
//     z = x_i . w_k + b_k
//     loss_k += s_ik * (log(1 + exp(z)) - y z)
//     g_k    += s_ik * (sigmoid(z) - y) * (x_i, 1)
// then run k's loss and gradient are divided by the sum of run k's weights over the rows used (or
// by denominator[k] when a denominator is given; a run whose divisor is 0 comes back as zeros),
// and, where alpha_k != 0, the L2 term is added to the loss and to the weight part of the gradient
// (reference.loss_grad). The Hessian-vector product is the same pass with
//     h_k += s_ik * sigmoid(z) (1 - sigmoid(z)) * (x_i . v_k + v_kd) * (x_i, 1)
// divided by the sum of run k's weights, plus alpha_k (v_k[:d], 0) (reference.hessp).
//
// Layout of the work, and why:
// - Rows are cut into fixed blocks whose size depends on d only (block_rows). Each block writes its
//   partial sums and weight sums into its own slot, and the slots are then added up in block
//   order. The arithmetic is therefore the same whatever the number of threads, and so are the
//   bits of the result.
// - Inside a block, runs are taken a tile at a time (runs_per_tile): the tile's weights and
//   accumulators stay in L1 while the block's rows stream through it; the block itself is sized to
//   stay in L2 for the next tile.
// - Weights: with one weight column (or none) a block has one weight sum, shared by every run;
//   with a column per run it has one per (block, run), each computed by the task of the run's tile.
// - The work on one block and one tile is block_kernel.hpp's, which also picks the instruction
//   set at run time.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "block_kernel.hpp"
#include "block_slots.hpp"
#include "thread_pool.hpp"

namespace gradstep {

// What the kernels read. Y is (n, ky) with ky in {1, K}: run k uses column (ky == 1 ? 0 : k).
// SW is (n, ks) with ks in {0, 1, K}: ks == 0 (SW == nullptr) unit weights, ks == 1 one column
// shared by every run, ks == K column k for run k.
template <class T>
struct Dataset {
  const T* X = nullptr;
  std::ptrdiff_t n = 0;
  std::ptrdiff_t d = 0;
  const double* Y = nullptr;
  std::ptrdiff_t ky = 1;
  const double* SW = nullptr;
  std::ptrdiff_t ks = 0;

  // Weight column of run k (only when ks > 0).
  std::ptrdiff_t weight_column(std::ptrdiff_t k) const { return ks == 1 ? 0 : k; }
};

// Rows x features x runs below which a gradient stays on the calling thread: about 0.15 ms of
// single-thread work, while waking a sleeping worker was measured at 5 to 70 us (more in a VM).
// The result is the same either way.
constexpr double kMinParallelWork = 2.0e5;

// The same threshold for calls that come back to back (a fit loop's consecutive steps): the pool's
// workers are still spinning from the previous call (thread_pool.hpp, kSpin), so handing them a
// share costs ~1 us, not a wake-up, and a 256-row mini-batch of 100 features (~26,000) is worth
// sharing.
constexpr double kMinBackToBackWork = 1.0e4;

// Rows per block: about 256 KiB of float64 data, so a block stays in L2 while each run tile reads
// it; at least 64 rows so the per-block bookkeeping (zeroing and adding a slot) stays negligible.
// A multiple of 4, the row group. Depends on d only, never on the number of threads.
inline std::ptrdiff_t block_rows(std::ptrdiff_t d) {
  const std::ptrdiff_t rows = std::clamp<std::ptrdiff_t>(32768 / std::max<std::ptrdiff_t>(d, 1),
                                                         64, 4096);
  return rows / 4 * 4;
}

// Blocks a call with few rows (a mini-batch, a small data set) is cut into, so that
// its rows can be shared among threads; blocks of such a call have at least 64 rows.
constexpr std::ptrdiff_t kSmallCallBlocks = 4;

// Rows per block of a call over `used` rows of an engine with small blocks (set_small_blocks):
// block_rows(d), except that a call over fewer than kSmallCallBlocks of those blocks is cut into
// up to kSmallCallBlocks equal blocks (a multiple of 4 rows, at least 64). Depends on d and used
// only, never on the number of threads. Other engines keep block_rows(d): cutting their calls too
// changed the rounding of every small full-batch call, and with it the path of ill-conditioned
// L-BFGS runs (GDClassifierCV on breast cancer: 268 -> 326 rounds, by chance) and the compiled
// lbfgs loop's agreement with the reference driver, which computes the same gradients through
// loss_grad.
inline std::ptrdiff_t call_block_rows(std::ptrdiff_t d, std::ptrdiff_t used) {
  const std::ptrdiff_t rows = block_rows(d);
  if (used >= kSmallCallBlocks * rows) return rows;
  const std::ptrdiff_t share = (used + kSmallCallBlocks - 1) / kSmallCallBlocks;
  return std::clamp<std::ptrdiff_t>((share + 3) / 4 * 4, 64, rows);
}

// Runs per tile: their weights and gradient accumulators take about 24 KiB, inside L1; from 8
// runs on, a multiple of 8, the block kernel's run chunk (block_kernel.hpp, run_chunks), so that
// 16 runs at d = 100 are two chunks and not a chunk plus 7 runs taken in pairs. The AVX-512
// kernel's chunks are 16 runs, whose weights and sums take twice the room: its tiles get 48 KiB
// (the L1 of the cores that have AVX-512 holds 32 to 48 KiB). A run's bits do not depend on its
// tile: chunks of 8 or 16 runs compute each run alike (lane = run).
inline std::ptrdiff_t runs_per_tile(std::ptrdiff_t D) {
  const std::ptrdiff_t bytes = current_kernel() == Kernel::avx512 ? 49152 : 24576;
  const std::ptrdiff_t fit = std::max<std::ptrdiff_t>(1, bytes / (16 * std::max<std::ptrdiff_t>(D, 1)));
  return fit >= 8 ? fit / 8 * 8 : fit;
}

namespace detail {

// Doubles per run in a block's slot: the gradient (D), then the loss, rounded up to whole cache
// lines so that threads working on neighbouring run tiles never write the same line.
inline std::ptrdiff_t run_stride(std::ptrdiff_t D) { return whole_lines(D + 1); }

// Scratch doubles that are not initialized (std::vector value-initializes): grown, never shrunk.
class Scratch {
 public:
  double* at_least(std::size_t n) {
    if (n > size_) {
      data_.reset(new double[n]);
      size_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<double[]> data_;
  std::size_t size_ = 0;
};

}  // namespace detail

// Whether every one of the n values at p is 0.0 or 1.0 (NaN and infinity are not): the 0/1
// target check, one pass over fixed chunks on up to n_threads threads. Every chunk is read in
// full (no early exit): the loop has no branch and vectorizes.
inline bool all_zero_one(const double* p, std::ptrdiff_t n, int n_threads) {
  constexpr std::ptrdiff_t kChunk = std::ptrdiff_t{1} << 16;
  const std::ptrdiff_t n_chunks = (n + kChunk - 1) / kChunk;
  std::vector<unsigned char> ok(detail::to_size(n_chunks), 1);
  auto task = [&](std::ptrdiff_t c) {
    const std::ptrdiff_t end = std::min(n, (c + 1) * kChunk);
    int good = 1;
    for (std::ptrdiff_t i = c * kChunk; i < end; ++i) good &= (p[i] == 0.0) | (p[i] == 1.0);
    ok[detail::to_size(c)] = static_cast<unsigned char>(good);
  };
  run_tasks(n_chunks > 1 && n_threads > 1 ? &ThreadPool::instance() : nullptr, n_chunks, n_threads,
            task);
  return std::all_of(ok.begin(), ok.end(), [](unsigned char g) { return g != 0; });
}

// The loss and gradient, and the Hessian-vector product, of K runs over all rows or a list of
// rows, with their scratch space. One engine serves every call of a fit, so the scratch is
// allocated once.
template <class T>
class GradientEngine {
 public:
  GradientEngine(const Dataset<T>& data, std::ptrdiff_t n_runs) : data_(data), K_(n_runs) {}

  // Tells the engine that its calls come back to back (a compiled fit loop's steps), so that
  // smaller calls are shared among threads (kMinBackToBackWork). The results do not change.
  void set_back_to_back(bool back_to_back) { back_to_back_ = back_to_back; }

  // Cuts calls over few rows into up to kSmallCallBlocks blocks (call_block_rows), so that a
  // mini-batch can be shared among threads. Changes the rounding of such calls (their blocks),
  // never their dependence on the number of threads (none).
  void set_small_blocks(bool small_blocks) { small_blocks_ = small_blocks; }

  // loss (K,) and G (K, D = d + 1, intercept last) at the weights P (K, D) over the rows
  // rows[0 .. n_rows) (rows == nullptr: all n rows), for the runs with active[k] != 0; the others
  // come back as zeros. alpha (K,) is each run's L2 strength. Run k's sums are divided by the
  // weight of the rows used for run k, or by denominator[k] when denominator is not nullptr; a run
  // whose divisor is 0 comes back as zeros.
  void compute(const double* P, const double* alpha, const std::int64_t* rows,
               std::ptrdiff_t n_rows, const std::uint8_t* active, int n_threads, double* loss,
               double* G, const double* denominator = nullptr) {
    const std::ptrdiff_t d = data_.d, D = d + 1, S = detail::run_stride(D);
    std::fill(loss, loss + K_, 0.0);
    std::fill(G, G + K_ * D, 0.0);
    const std::ptrdiff_t used = rows ? n_rows : data_.n;
    if (!select_runs(active) || used == 0) return;
    sweep(false, P, nullptr, rows, used, n_threads, denominator == nullptr);

    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    for (std::ptrdiff_t c = 0; c < m; ++c) {
      const std::ptrdiff_t k = runs_[detail::to_size(c)];
      const double total = denominator ? denominator[k] : totals_[detail::to_size(c)];
      if (total == 0.0) continue;  // a run whose divisor is 0 comes back as zeros
      const double* a = acc_.data() + c * S;
      double* g = G + k * D;
      for (std::ptrdiff_t j = 0; j < D; ++j) g[j] = a[j] / total;
      loss[k] = a[D] / total;
      const double ak = alpha[k];
      if (ak != 0.0) {  // with alpha == 0 the penalty is not computed at all
        const double* w = P + k * D;
        double sq = 0.0;
        for (std::ptrdiff_t j = 0; j < d; ++j) sq += w[j] * w[j];
        loss[k] += 0.5 * ak * sq;
        for (std::ptrdiff_t j = 0; j < d; ++j) g[j] += ak * w[j];
      }
    }
  }

  // HV (K, D): the Hessian of each active run's loss at P[k] times V[k], over all rows; the
  // others, and runs whose weights sum to 0, come back as zeros.
  void hessp(const double* P, const double* V, const double* alpha, const std::uint8_t* active,
             int n_threads, double* HV) {
    const std::ptrdiff_t d = data_.d, D = d + 1, S = detail::run_stride(D);
    std::fill(HV, HV + K_ * D, 0.0);
    if (!select_runs(active) || data_.n == 0) return;
    sweep(true, P, V, nullptr, data_.n, n_threads, true);

    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    for (std::ptrdiff_t c = 0; c < m; ++c) {
      const std::ptrdiff_t k = runs_[detail::to_size(c)];
      const double total = totals_[detail::to_size(c)];
      if (total == 0.0) continue;
      const double* a = acc_.data() + c * S;
      const double* v = V + k * D;
      double* h = HV + k * D;
      const double ak = alpha[k];
      for (std::ptrdiff_t j = 0; j < d; ++j) h[j] = a[j] / total + ak * v[j];
      h[d] = a[d] / total;
    }
  }

 private:
  // runs_ = the active runs, in run order; false when there is none.
  bool select_runs(const std::uint8_t* active) {
    runs_.clear();
    for (std::ptrdiff_t k = 0; k < K_; ++k) {
      if (active[k]) runs_.push_back(k);
    }
    return !runs_.empty();
  }

  // Runs the gradient (or, with hess, the Hessian-vector) block kernel on every (block, tile) of
  // the `used` rows and the runs runs_, and leaves in acc_ the sum of the blocks' slots, in block
  // order, and, with need_totals, in totals_ (one per run of runs_) the weight of the rows used.
  void sweep(bool hess, const double* P, const double* V, const std::int64_t* rows,
             std::ptrdiff_t used, int n_threads, bool need_totals) {
    const std::ptrdiff_t d = data_.d, D = d + 1, S = detail::run_stride(D);
    const auto m = static_cast<std::ptrdiff_t>(runs_.size());
    const bool per_run = data_.ks > 1;
    const std::ptrdiff_t n_sums = per_run ? m : 1;  // weight sums per block

    const std::ptrdiff_t B = small_blocks_ ? call_block_rows(d, used) : block_rows(d);
    const std::ptrdiff_t n_blocks = (used + B - 1) / B;
    const std::ptrdiff_t tile = runs_per_tile(D);
    const std::ptrdiff_t n_tiles = (m + tile - 1) / tile;
    const std::ptrdiff_t slot = m * S;
    // Blocks are processed in waves whose slots take at most ~32 MiB; the fold below adds the
    // slots in block order whatever the wave size, so the wave size never changes the result.
    const std::ptrdiff_t wave = std::clamp<std::ptrdiff_t>(
        (std::ptrdiff_t{32} << 20) / static_cast<std::ptrdiff_t>(sizeof(double)) / slot, 1,
        n_blocks);
    // Not zeroed here: each block kernel zeroes its own slot (all of it, padding included) before
    // adding to it, so a fresh buffer's pages are first touched by the threads that fill them,
    // in parallel, instead of by a serial memset (2.5 MB at 1M x 100: ~1 ms of a 10 ms pass).
    // Slots start on a cache line, so two threads never write the same line.
    double* const partial = detail::align_to_line(
        partial_.at_least(detail::to_size(wave * slot + detail::kLineDoubles)));
    wsum_.assign(detail::to_size(wave * n_sums), 0.0);
    acc_.assign(detail::to_size(slot), 0.0);
    double shared_total = 0.0;
    totals_.assign(detail::to_size(m), 0.0);

    // the Hessian-vector product takes two dot products per row and run
    const double work = static_cast<double>(used) * static_cast<double>(D) *
                        static_cast<double>(m) * (hess ? 2.0 : 1.0);
    const double min_work = back_to_back_ ? kMinBackToBackWork : kMinParallelWork;
    const int participants = n_blocks * n_tiles > 1 && work >= min_work ? std::max(1, n_threads) : 1;
    ThreadPool* pool = participants > 1 ? &ThreadPool::instance() : nullptr;
    const bool rowwise =  // RowOrder
        rowwise_rows(used * d * static_cast<std::ptrdiff_t>(sizeof(T)), sizeof(T));

    for (std::ptrdiff_t b0 = 0; b0 < n_blocks; b0 += wave) {
      const std::ptrdiff_t nw = std::min(wave, n_blocks - b0);
      auto task = [&](std::ptrdiff_t id) {
        const std::ptrdiff_t bi = id / n_tiles, ti = id % n_tiles;
        const std::ptrdiff_t start = (b0 + bi) * B;
        const std::ptrdiff_t count = std::min(B, used - start);
        const std::ptrdiff_t c0 = ti * tile, c1 = std::min(m, c0 + tile);
        const std::int64_t* block_rows_at = rows ? rows + start : nullptr;
        const BlockJob<T> job{data_.X, data_.d, data_.Y, data_.ky, data_.SW, data_.ks,
                              P, V, runs_.data(), block_rows_at, start, count, c0, c1, S,
                              partial + bi * slot, rowwise};
        if (hess) {
          run_hessp_kernel(job);
        } else {
          run_block_kernel(job);
        }
        if (!need_totals) return;
        double* ws = wsum_.data() + bi * n_sums;
        if (per_run) {
          weight_sums(block_rows_at, start, count, c0, c1, ws);
        } else if (ti == 0) {
          ws[0] = weight_sum(block_rows_at, start, count);
        }
      };
      run_tasks(pool, nw * n_tiles, participants, task);
      for (std::ptrdiff_t bi = 0; bi < nw; ++bi) {  // block order: the same sum for any threads
        const double* ws = wsum_.data() + bi * n_sums;
        if (per_run) {
          for (std::ptrdiff_t c = 0; c < m; ++c) totals_[detail::to_size(c)] += ws[c];
        } else {
          shared_total += ws[0];
        }
        const double* GRADSTEP_RESTRICT part = partial + bi * slot;
        double* GRADSTEP_RESTRICT acc = acc_.data();
        for (std::ptrdiff_t c = 0; c < slot; ++c) acc[c] += part[c];
      }
      if (per_run) std::fill(wsum_.begin(), wsum_.end(), 0.0);
    }
    if (!per_run) std::fill(totals_.begin(), totals_.end(), shared_total);
  }

  // The shared weight of `count` rows from start (or rows[0 .. count)), in row order.
  double weight_sum(const std::int64_t* rows, std::ptrdiff_t start, std::ptrdiff_t count) const {
    if (data_.SW == nullptr) return static_cast<double>(count);
    double s = 0.0;
    for (std::ptrdiff_t p = 0; p < count; ++p) s += data_.SW[rows ? rows[p] : start + p];
    return s;
  }

  // ws[c] += the weight of the same rows for run runs_[c], c in [c0, c1): each in row order.
  void weight_sums(const std::int64_t* rows, std::ptrdiff_t start, std::ptrdiff_t count,
                   std::ptrdiff_t c0, std::ptrdiff_t c1, double* ws) const {
    const std::ptrdiff_t ks = data_.ks;
    const std::ptrdiff_t* runs = runs_.data();
    for (std::ptrdiff_t p = 0; p < count; ++p) {
      const double* sw = data_.SW + (rows ? static_cast<std::ptrdiff_t>(rows[p]) : start + p) * ks;
      for (std::ptrdiff_t c = c0; c < c1; ++c) ws[c] += sw[runs[c]];
    }
  }

  Dataset<T> data_;
  std::ptrdiff_t K_;
  bool back_to_back_ = false;         // see set_back_to_back
  bool small_blocks_ = false;         // see set_small_blocks
  std::vector<std::ptrdiff_t> runs_;  // the active runs, in run order
  detail::Scratch partial_;           // one slot of m * run_stride(D) per block of the current wave
  std::vector<double> wsum_;          // the weight sum(s) of each block of the current wave
  std::vector<double> acc_;           // the running sum of the slots, in block order
  std::vector<double> totals_;        // each run's weight of the rows used
};

}  // namespace gradstep
