// One lbfgs run, its whole fit loop compiled: LBFGS.iterate and strong_wolfe (rules/curvature.py)
// -- or with an L1 term OWL-QN, LBFGS._owlqn and _orthant_backtrack -- and the reference driver's
// bookkeeping of a run (driver.py: divergence, stopping, stalls, history, passes), calling the
// oracle's one-pass kernel directly.
//
// Why: on a small problem the Python loop around the kernel costs ~0.15-0.2 ms per iteration
// (the driver's round, the generator, the line search, the stop test), as much as the gradient
// pass itself: GDClassifier() on digits (multinomial, 1,797 x 64, ~90 iterations) spent ~40 % of
// its fit outside the kernels, and lost to LogisticRegression() for it.
//
// It follows the reference iteration for iteration and pass for pass, its iterates equal to
// rounding, not in every bit: its dot products (dot below) are not NumPy's BLAS ddot. Near the
// optimum, where a line search decides on a loss difference of a few ulp, the two may take a
// trial more or less and part (tests/test_lbfgs_loop.py).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "curvature_run.hpp"
#include "fit.hpp"
#include "two_loop.hpp"

namespace gradstep {
namespace lbfgs_loop {

using curvature::dot;
using curvature::kEps;
using curvature::negligible;
using curvature::rounding;
constexpr double kC1 = 1e-4, kC2 = 0.9;  // curvature.WOLFE_C1, _C2
constexpr int kMaxEvals = 25;            // strong_wolfe's max_evals

// The memory of the run between calls, in curvature._Pairs' layout (Python-owned arrays):
// R = m + 1 slots, memory (2R, D) with s vectors in rows [0, R) and y vectors in [R, 2R),
// rho (R,) = 1/s'y per slot, gamma = s'y / y'y of the newest pair; ints: the free slot (head),
// the number of pairs kept (count) and whether the next iteration is the first (first); step:
// OWL-QN's next first trial (curvature.owlqn_next_trial).
struct Memory {
  double* memory = nullptr;
  double* rho = nullptr;
  double* gamma = nullptr;
  std::int64_t* ints = nullptr;  // head, count, first
  double* step = nullptr;        // (1,)
  std::ptrdiff_t m = 0;          // pairs kept (R = m + 1 slots)
};

// curvature.owlqn_next_trial: the step t a search accepted, doubled (up to lr) when it was the
// first trial t0; lr after a fresh start (the first iteration, or a restart from -pg).
inline double owlqn_next_trial(double t, double t0, double lr, bool fresh) {
  if (fresh) return lr;
  return t == t0 ? std::min(lr, 2.0 * t) : t;
}

// curvature._cubic_min; false for its None.
inline bool cubic_min(double a, double fa, double ga, double b, double fb, double gb, double* x) {
  const double d1 = ga + gb - 3.0 * (fa - fb) / (a - b);
  const double disc = d1 * d1 - ga * gb;
  if (!(disc >= 0.0)) return false;
  const double d2 = std::copysign(std::sqrt(disc), b - a);
  const double denom = gb - ga + 2.0 * d2;
  if (denom == 0.0) return false;
  *x = b - (b - a) * (gb + d2 - d1) / denom;
  return true;
}

// A trial point of the line search: (t, f, slope, point, gradient) as strong_wolfe keeps them.
struct Trial {
  double t = 0.0, f = 0.0, s = 0.0;
  std::vector<double> q, g;
};

// The loss and gradient at a point: `oracle(q, g)` returns the loss (L2 term included) and
// writes the gradient (intercept entries zeroed when the fit has none); each call is one pass.
template <class Oracle>
class Run {
 public:
  // l1 > 0: OWL-QN on the objective loss + l1 ||w||_1 over the parameters penalized marks (D,
  // nonzero for the coefficients, never an intercept); st.loss then holds that objective and
  // st.grad the smooth gradient, as in the reference driver.
  Run(Oracle& oracle, const RunSpec& spec, FitState& st, Memory mem, double lr, double* passes,
      std::ptrdiff_t D, double l1 = 0.0, const std::uint8_t* penalized = nullptr)
      : oracle_(oracle), spec_(spec), st_(st), mem_(mem), lr_(lr), passes_(passes), D_(D),
        l1_(l1), penalized_(penalized) {}

  // Up to n_steps iterations of run 0 while it is running.
  void iterate(std::int64_t n_steps) {
    for (std::int64_t i = 0; i < n_steps && st_.status[0] == kRunning; ++i) {
      if (l1_ > 0.0) {
        owlqn_iteration();
      } else {
        iteration();
      }
    }
  }

 private:
  std::size_t size() const { return static_cast<std::size_t>(D_); }
  std::ptrdiff_t slots() const { return mem_.m + 1; }

  // LBFGS.iterate's loop body, then driver._handle's Step or Stall.
  void iteration() {
    const double* p = st_.P;
    const double* g = st_.grad;
    const double loss = st_.loss[0];
    std::vector<double> d(size());
    direction(g, d.data());  // H g
    for (double& v : d) v = -v;
    if (!(dot(g, d.data(), D_) < 0.0)) {  // not a descent direction (rounding): restart
      clear();
      for (std::ptrdiff_t j = 0; j < D_; ++j) d[static_cast<std::size_t>(j)] = -g[j];
    }
    double sum_abs = 0.0;
    for (std::ptrdiff_t j = 0; j < D_; ++j) sum_abs += std::fabs(g[j]);
    const bool first = mem_.ints[2] != 0;
    const double t0 = first ? std::min(1.0, 1.0 / std::max(sum_abs, 1e-300)) : lr_;
    const bool retry = mem_.ints[1] > 0;
    Trial found;
    bool ok = strong_wolfe(p, loss, g, d, t0, &found);
    if (!ok && retry) {  // _lbfgs_search: a stale memory; once more along -g from 1/||g||
      for (std::ptrdiff_t j = 0; j < D_; ++j) d[static_cast<std::size_t>(j)] = -g[j];
      ok = strong_wolfe(p, loss, g, d, 1.0 / std::max(std::sqrt(dot(g, g, D_)), 1e-300), &found);
      clear();
    }
    if (!ok) {  // Stall: converged when the gradient is within a factor of tol
      stall(g);
      return;
    }
    keep_pair(p, g, found);
    mem_.ints[2] = 0;
    step(found, found.f, found.g.data());
  }

  void stall(const double* residual) { curvature::stall(spec_, st_, residual, D_); }

  // LBFGS._owlqn's loop body (Andrew and Gao 2007), then driver._handle's Step or Stall: the
  // two-loop recursion on the pseudo-gradient pg (penalty.l1_residual), the direction kept where
  // it agrees in sign with -pg, and _orthant_backtrack on the objective; the pairs are built
  // from the smooth gradients.
  void owlqn_iteration() {
    const double* p = st_.P;
    const double* g = st_.grad;
    const double objective = st_.loss[0];
    std::vector<double> pg(size()), d(size());
    residual(p, g, pg.data());
    direction(pg.data(), d.data());
    for (std::size_t j = 0; j < size(); ++j) d[j] = d[j] * pg[j] > 0.0 ? -d[j] : 0.0;
    bool restarted = !(dot(pg.data(), d.data(), D_) < 0.0);
    if (restarted) {  // nothing left of it: restart from -pg
      clear();
      for (std::size_t j = 0; j < size(); ++j) d[j] = -pg[j];
    }
    double sum_abs = 0.0;
    for (const double v : pg) sum_abs += std::fabs(v);
    const bool first = mem_.ints[2] != 0;
    const double t0 = first ? std::min(1.0, 1.0 / std::max(sum_abs, 1e-300))
                            : (restarted ? lr_ : mem_.step[0]);
    Trial found;
    double value = 0.0;
    bool ok = orthant_backtrack(p, objective, pg, d, t0, &found, &value);
    if (!ok && mem_.ints[1] > 0) {  // a stale memory: once more along -pg from 1/||pg||
      clear();
      restarted = true;
      for (std::size_t j = 0; j < size(); ++j) d[j] = -pg[j];
      const double norm = std::sqrt(dot(pg.data(), pg.data(), D_));
      ok = orthant_backtrack(p, objective, pg, d, 1.0 / std::max(norm, 1e-300), &found, &value);
    }
    if (!ok) {
      stall(pg.data());
      return;
    }
    mem_.step[0] = owlqn_next_trial(found.t, t0, lr_, first || restarted);
    keep_pair(p, g, found);
    mem_.ints[2] = 0;
    std::vector<double> r(size());
    residual(found.q.data(), found.g.data(), r.data());
    step(found, value, r.data());
  }

  // penalty.l1_residual at p (fit.hpp's, with this run's l1 and mask).
  void residual(const double* p, const double* g, double* r) const {
    detail::l1_residual(p, g, l1_, penalized_, D_, r);
  }

  // curvature._orthant_backtrack: halve t until the objective at q = p + t d, projected onto p's
  // orthant (sign(p), or at a zero the sign of -pg: a coefficient that would cross 0 stops at
  // 0), decreases enough; false when the step becomes negligible. *value: the objective at q.
  bool orthant_backtrack(const double* p, double objective, const std::vector<double>& pg,
                         const std::vector<double>& d, double t, Trial* out, double* value) {
    std::vector<double> orthant(size());
    for (std::ptrdiff_t j = 0; j < D_; ++j) {
      const auto u = static_cast<std::size_t>(j);
      orthant[u] = p[j] != 0.0 ? detail::sign(p[j]) : -detail::sign(pg[u]);
    }
    Trial here;
    here.g.resize(size());
    std::vector<double> slope_q(size());
    while (true) {
      point(p, t, d.data(), here.q);
      for (std::ptrdiff_t j = 0; j < D_; ++j) {
        const auto u = static_cast<std::size_t>(j);
        if (penalized_[j] && detail::sign(here.q[u]) != orthant[u]) here.q[u] = 0.0;
      }
      if (negligible_from(here.q, p)) return false;  // step_ = q - p
      here.f = oracle_(here.q.data(), here.g.data());
      passes_[0] += 1.0;
      const double v = detail::objective(here.f, l1_, here.q.data(), penalized_, D_);
      if (std::isfinite(v)) {
        for (std::ptrdiff_t j = 0; j < D_; ++j) {
          const auto u = static_cast<std::size_t>(j);
          slope_q[u] = here.g[u] + (penalized_[j] ? l1_ * orthant[u] : 0.0);
        }
        const double slope0 = dot(pg.data(), step_.data(), D_);
        // curvature._sufficient_decrease at t = 1 along the step, f_ref = f0 = objective
        if (v <= objective + kC1 * slope0 ||
            (v <= objective + rounding(objective) &&
             dot(slope_q.data(), step_.data(), D_) <= (1.0 - 2.0 * kC1) * -slope0)) {
          here.t = t;
          *out = std::move(here);
          *value = v;
          return true;
        }
      }
      t *= 0.5;
    }
  }

  // _Pairs.apply: H g by the two-loop recursion over the pairs, oldest first.
  void direction(const double* g, double* out) {
    const std::int64_t count = mem_.ints[1];
    if (count == 0) {
      std::copy(g, g + D_, out);
      return;
    }
    const std::ptrdiff_t R = slots(), head = mem_.ints[0];
    order_.resize(static_cast<std::size_t>(R));
    for (std::ptrdiff_t c = 0; c < R; ++c) order_[static_cast<std::size_t>(c)] = (head + c) % R;
    alphas_.resize(static_cast<std::size_t>(R));
    two_loop_rows(g, 1, D_, mem_.memory, R, order_.data(), mem_.rho, mem_.gamma, R - count,
                  alphas_.data(), out);
  }

  void clear() {  // _Pairs.clear
    std::fill(mem_.rho, mem_.rho + slots(), 0.0);
    mem_.gamma[0] = 1.0;
    mem_.ints[1] = 0;
  }

  // LBFGS.iterate: the pair (q - p, g(q) - g) into the free slot, kept when s'y > EPS y'y.
  void keep_pair(const double* p, const double* g, const Trial& found) {
    const std::ptrdiff_t R = slots(), head = mem_.ints[0];
    double* s = mem_.memory + head * D_;
    double* y = mem_.memory + (R + head) * D_;
    for (std::ptrdiff_t j = 0; j < D_; ++j) {
      const auto u = static_cast<std::size_t>(j);
      s[j] = found.q[u] - p[j];
      y[j] = found.g[u] - g[j];
    }
    const double sy = dot(s, y, D_), yy = dot(y, y, D_);
    if (sy > kEps * yy) {  // _Pairs.keep
      mem_.rho[head] = 1.0 / sy;
      mem_.gamma[0] = sy / yy;
      mem_.ints[0] = (head + 1) % R;
      mem_.ints[1] = std::min<std::int64_t>(mem_.ints[1] + 1, mem_.m);
    }
  }

  // driver._handle's Step (curvature::take_step) to the trial found.
  void step(const Trial& found, double objective, const double* residual) {
    curvature::take_step(spec_, st_, passes_[0], D_, found.q.data(), found.g.data(), found.t,
                         objective, residual);
  }

  // One pass at p + t d: the trial's point, loss and gradient.
  void evaluate(Trial& trial, const double* d) {
    trial.f = oracle_(trial.q.data(), trial.g.data());
    passes_[0] += 1.0;
    trial.s = std::isfinite(trial.f) ? dot(trial.g.data(), d, D_)
                                     : std::numeric_limits<double>::quiet_NaN();
    if (!std::isfinite(trial.f)) trial.f = std::numeric_limits<double>::infinity();
  }

  void point(const double* p, double t, const double* d, std::vector<double>& q) const {
    q.resize(size());
    for (std::ptrdiff_t j = 0; j < D_; ++j) q[static_cast<std::size_t>(j)] = p[j] + t * d[j];
  }

  bool negligible_from(const std::vector<double>& q, const double* p) {
    step_.resize(size());
    for (std::ptrdiff_t j = 0; j < D_; ++j) {
      step_[static_cast<std::size_t>(j)] = q[static_cast<std::size_t>(j)] - p[j];
    }
    return negligible(step_, p);
  }

  // curvature._sufficient_decrease with f_ref = f0.
  static bool sufficient_decrease(const Trial& here, double f, double f0, double slope0) {
    if (f <= f0 + kC1 * here.t * slope0) return true;
    return f <= f0 + rounding(f0) && here.s <= (1.0 - 2.0 * kC1) * -slope0;
  }

  // curvature.strong_wolfe (Nocedal & Wright, Alg. 3.5/3.6) from p along d, first trial t;
  // false for its None.
  bool strong_wolfe(const double* p, double f0, const double* g0, const std::vector<double>& dv,
                    double t, Trial* out) {
    const double* d = dv.data();
    const double slope0 = dot(g0, d, D_);
    // The start (t = 0) keeps no point or gradient: only its t, f and slope are read (a trial is
    // returned only with t > 0, and the zoom reads t, f and slope alone).
    Trial prev;
    prev.t = 0.0;
    prev.f = f0;
    prev.s = slope0;
    Trial lo, hi;
    bool bracketed = false;
    for (int i = 0; i < kMaxEvals; ++i) {
      Trial here;
      here.t = t;
      point(p, t, d, here.q);
      if (negligible_from(here.q, p)) return false;
      here.g.resize(size());
      evaluate(here, d);
      const bool finite = std::isfinite(here.f);
      const double f = here.f;
      const bool decrease = finite && sufficient_decrease(here, f, f0, slope0);
      if (!decrease || (i > 0 && f >= prev.f + rounding(f0))) {
        lo = std::move(prev);
        hi = std::move(here);
        bracketed = true;
        break;
      }
      if (std::fabs(here.s) <= -kC2 * slope0) {
        *out = std::move(here);
        return true;
      }
      if (here.s >= 0.0) {
        lo = std::move(here);
        hi = std::move(prev);
        bracketed = true;
        break;
      }
      double guess = 0.0;
      const bool has_guess = cubic_min(prev.t, prev.f, prev.s, t, f, here.s, &guess);
      prev = std::move(here);
      t = std::min(std::max(has_guess ? guess : 2.0 * t, 1.1 * t), 10.0 * t);
    }
    if (!bracketed) return false;
    // zoom: lo satisfies sufficient decrease with the lowest loss so far, hi brackets it
    for (int i = 0; i < kMaxEvals; ++i) {
      const double ta = lo.t, fa = lo.f, sa = lo.s;
      const double tb = hi.t, fb = hi.f, sb = hi.s;
      const double width = std::fabs(tb - ta);
      double guess = 0.0;
      const bool has_guess = std::isfinite(fb) && cubic_min(ta, fa, sa, tb, fb, sb, &guess);
      const double low_end = std::min(ta, tb), high_end = std::max(ta, tb);
      if (!has_guess || !(low_end + 0.1 * width <= guess && guess <= high_end - 0.1 * width)) {
        guess = 0.5 * (ta + tb);
      }
      Trial here;
      here.t = guess;
      point(p, guess, d, here.q);
      step_.resize(size());
      for (std::ptrdiff_t j = 0; j < D_; ++j) step_[static_cast<std::size_t>(j)] = (tb - ta) * d[j];
      if (negligible(step_, p) || negligible_from(here.q, p)) break;
      here.g.resize(size());
      evaluate(here, d);
      const bool finite = std::isfinite(here.f);
      const double f = here.f;
      const bool decrease = finite && sufficient_decrease(here, f, f0, slope0);
      if (!decrease || f >= fa + rounding(f0)) {
        hi = std::move(here);
        continue;
      }
      if (std::fabs(here.s) <= -kC2 * slope0) {
        *out = std::move(here);
        return true;
      }
      if (here.s * (tb - ta) >= 0.0) hi = std::move(lo);
      lo = std::move(here);
    }
    if (lo.t > 0.0 && lo.f < f0) {  // sufficient decrease without the curvature condition
      *out = std::move(lo);
      return true;
    }
    return false;
  }

  Oracle& oracle_;
  const RunSpec& spec_;
  FitState& st_;
  Memory mem_;
  double lr_;
  double* passes_;
  std::ptrdiff_t D_;
  double l1_;
  const std::uint8_t* penalized_;
  std::vector<std::int64_t> order_;
  std::vector<double> alphas_, step_;
};

}  // namespace lbfgs_loop
}  // namespace gradstep
