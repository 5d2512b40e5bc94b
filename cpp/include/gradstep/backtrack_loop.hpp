// One armijo, bb or newton run, its whole fit loop compiled: Armijo.iterate (with an L1 term
// Armijo._proximal, proximal gradient with Beck and Teboulle's backtracking), BB.iterate (its
// probe for lr=None, the non-monotone window, _bb_step), Newton.iterate (its truncated CG over
// Hessian-vector products, Newton._cg) and their _backtrack (rules/curvature.py), and the
// reference driver's bookkeeping of a run (curvature_run.hpp), calling the oracle's one-pass
// kernels directly.
//
// Why: on a small problem the Python round around a pass costs several times the pass (breast
// cancer, 569 x 30: ~55 us of Python around a ~12 us pass), and these rules take many passes:
// gradstep compare's armijo run there is 997 passes, its newton run 92.
//
// It follows the reference iteration for iteration and pass for pass, its iterates equal to
// rounding (its dot products are curvature::dot's, not NumPy's BLAS ddot); near the optimum a
// line search deciding on a rounding-level difference may take a trial more or less
// (tests/test_backtrack_loop.py).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "curvature_run.hpp"
#include "fit.hpp"

namespace gradstep {
namespace backtrack_loop {

using curvature::dot;

// Which rule's iteration the loop runs: the binding sets it from loop.kind.
enum class Kind { armijo, bb, newton };

// The rule's constants (rules.curvature.Armijo's, BB's or Newton's fields), in
// driver.CompiledCurvatureDriver's params array: lr (bb: NaN for lr=None, the probe), c1, shrink,
// grow (armijo), variant (bb: 0 long, 1 short, 2 alternate), window (bb), cg_tol, max_cg
// (newton).
struct Rule {
  Kind kind = Kind::armijo;
  double lr = 1.0;
  double c1 = 1e-4;
  double shrink = 0.5;
  double grow = 2.0;
  int variant = 0;
  std::int64_t window = 10;
  double cg_tol = 0.1;
  std::int64_t max_cg = 50;
};
constexpr std::ptrdiff_t kParams = 8;
constexpr int kLong = 0, kAlternate = 2;

// The run's state between calls (Python-owned arrays): reals [0] the next first trial step t,
// [1] the smooth loss at st.P (armijo with L1: the generator's own loss, which st.loss holds
// with the L1 term added), [2, 2 + window) bb's last losses (a ring); ints [0] started, [1] bb's
// steps taken (k), [2] losses in the ring, [3] the ring's next slot.
struct Memory {
  double* reals = nullptr;
  std::int64_t* ints = nullptr;
};
constexpr std::ptrdiff_t kReals = 2, kInts = 4;

// oracle(p, g) returns the loss at p and writes its gradient; hessp(p, v, hv) writes the
// Hessian at p times v (newton); each call is one pass.
template <class Oracle, class Hessp>
class Run {
 public:
  // l1 > 0 (armijo only): the proximal steps on loss + l1 ||w||_1 over the parameters penalized
  // marks; st.loss then holds that objective and st.grad the smooth gradient.
  Run(Oracle& oracle, Hessp& hessp, const RunSpec& spec, FitState& st, const Rule& rule,
      Memory mem, double* passes, std::ptrdiff_t D, double l1 = 0.0,
      const std::uint8_t* penalized = nullptr)
      : oracle_(oracle), hessp_(hessp), spec_(spec), st_(st), rule_(rule), mem_(mem),
        passes_(passes), D_(D), l1_(l1), penalized_(penalized), q_(size()), gq_(size()),
        step_(size()), d_(size()), work_(size()) {}

  // Up to n_steps iterations of run 0 while it is running (bb's probe, at the start, is no
  // iteration: it only sets the first step).
  void iterate(std::int64_t n_steps) {
    if (!mem_.ints[0] && st_.status[0] == kRunning) start();
    for (std::int64_t i = 0; i < n_steps && st_.status[0] == kRunning; ++i) {
      if (l1_ > 0.0) {
        proximal_iteration();
      } else if (rule_.kind == Kind::newton) {
        newton_iteration();
      } else {
        iteration();
      }
    }
  }

 private:
  std::size_t size() const { return static_cast<std::size_t>(D_); }
  double* ring() const { return mem_.reals + kReals; }

  // The generator's start: armijo's first trial is lr; bb's is lr, or (lr=None) 1/L estimated
  // along -g from a probe point (one pass, no step taken); its window holds the starting loss.
  void start() {
    mem_.ints[0] = 1;
    const double* p = st_.P;
    const double* g = st_.grad;
    double t = rule_.lr;
    if (rule_.kind == Kind::bb && std::isnan(rule_.lr)) {
      const double gnorm = std::sqrt(dot(g, g, D_));
      const double h = 1e-4 * std::max(1.0, std::sqrt(dot(p, p, D_))) / std::max(gnorm, 1e-300);
      for (std::size_t j = 0; j < size(); ++j) q_[j] = p[j] - h * g[j];
      oracle_(q_.data(), gq_.data());
      passes_[0] += 1.0;
      for (std::size_t j = 0; j < size(); ++j) step_[j] = gq_[j] - g[j];
      const double dg = std::sqrt(dot(step_.data(), step_.data(), D_));
      t = dg > 0.0 && std::isfinite(dg) ? h * gnorm / dg : 1.0;
    }
    mem_.reals[0] = t;
    if (l1_ > 0.0) {  // the generator works on the smooth loss (st.loss holds the objective)
      mem_.reals[1] = st_.loss[0] - l1_ * detail::l1_norm(p, penalized_, D_);
    }
    if (rule_.kind == Kind::bb) {
      ring()[0] = st_.loss[0];
      mem_.ints[1] = 0;
      mem_.ints[2] = 1;
      mem_.ints[3] = 1 % rule_.window;
    }
  }

  // _backtrack from st.P along -g, then armijo's next first trial (t grow) or bb's (_bb_step).
  void iteration() {
    const double* g = st_.grad;
    const double loss = st_.loss[0];
    double f_ref = loss;  // armijo: monotone; bb: the largest of the window's losses
    if (rule_.kind == Kind::bb) f_ref = *std::max_element(ring(), ring() + mem_.ints[2]);
    for (std::size_t j = 0; j < size(); ++j) d_[j] = -g[j];
    double t = mem_.reals[0], fq = 0.0;
    if (!backtrack(f_ref, rule_.c1, rule_.kind == Kind::bb ? 0.5 : rule_.shrink, &t, &fq)) {
      curvature::stall(spec_, st_, g, D_);
      return;
    }
    double next = t * rule_.grow;
    if (rule_.kind == Kind::bb) {  // s = q - p, y = g(q) - g, before the step overwrites p and g
      for (std::size_t j = 0; j < size(); ++j) work_[j] = gq_[j] - g[j];
      next = bb_step(work_, t);
      ring()[mem_.ints[3]] = fq;
      mem_.ints[3] = (mem_.ints[3] + 1) % rule_.window;
      mem_.ints[2] = std::min(mem_.ints[2] + 1, rule_.window);
    }
    curvature::take_step(spec_, st_, passes_[0], D_, q_.data(), gq_.data(), t, fq, gq_.data());
    mem_.reals[0] = next;
  }

  // Newton.iterate's loop body: the truncated CG direction, then _backtrack along it from lr.
  void newton_iteration() {
    const double* g = st_.grad;
    cg();
    double t = rule_.lr, fq = 0.0;
    if (!backtrack(st_.loss[0], 1e-4, 0.5, &t, &fq)) {
      curvature::stall(spec_, st_, g, D_);
      return;
    }
    curvature::take_step(spec_, st_, passes_[0], D_, q_.data(), gq_.data(), t, fq, gq_.data());
  }

  // Newton._cg: d_ = truncated CG on H d = -g from d = 0, stopped when ||H d + g|| <=
  // min(cg_tol, sqrt(||g||)) ||g||, after max_cg products, or on a direction of non-positive
  // curvature (then -g if it is the first).
  void cg() {
    const double* p = st_.P;
    const double* g = st_.grad;
    const double gnorm = std::sqrt(dot(g, g, D_));
    const double target = std::min(rule_.cg_tol, std::sqrt(gnorm)) * gnorm;
    if (cg_.size() != 3 * size()) cg_.resize(3 * size());  // newton's only: made at its first
    double* const r = cg_.data();
    double* const dir = r + D_;
    double* const hv = dir + D_;
    for (std::size_t j = 0; j < size(); ++j) {
      d_[j] = 0.0;
      r[j] = -g[j];
    }
    std::copy(r, r + D_, dir);
    double rr = dot(r, r, D_);
    for (std::int64_t j = 0; j < rule_.max_cg; ++j) {
      hessp_(p, dir, hv);
      passes_[0] += 1.0;
      const double curvature = dot(dir, hv, D_);
      if (!(curvature > 0.0)) {
        if (j == 0) {
          for (std::size_t u = 0; u < size(); ++u) d_[u] = -g[u];
        }
        return;
      }
      const double step = rr / curvature;
      for (std::size_t u = 0; u < size(); ++u) {
        d_[u] += step * dir[u];
        r[u] -= step * hv[u];
      }
      const double rr_new = dot(r, r, D_);
      if (std::sqrt(rr_new) <= target) return;
      for (std::size_t u = 0; u < size(); ++u) dir[u] = r[u] + (rr_new / rr) * dir[u];
      rr = rr_new;
    }
  }

  // curvature._backtrack from st.P along d_ (against f_ref; f0 = st.loss): t shrunk from *t
  // until the sufficient decrease holds, the trial in q_ and gq_, its loss in *fq; false when
  // the step becomes negligible. A non-finite trial loss counts as too long.
  bool backtrack(double f_ref, double c1, double shrink, double* t_io, double* fq) {
    const double* p = st_.P;
    const double f0 = st_.loss[0];
    const double slope = dot(st_.grad, d_.data(), D_);
    double t = *t_io;
    while (true) {
      for (std::size_t j = 0; j < size(); ++j) {
        q_[j] = p[j] + t * d_[j];
        step_[j] = q_[j] - p[j];
      }
      if (curvature::negligible(step_, p)) return false;
      *fq = oracle_(q_.data(), gq_.data());
      passes_[0] += 1.0;
      if (std::isfinite(*fq) && sufficient_decrease(*fq, t, f_ref, f0, slope, c1)) break;
      t *= shrink;
    }
    *t_io = t;
    return true;
  }

  // curvature._sufficient_decrease along d_: f <= f_ref + c1 t g.d, or where the loss
  // difference is lost in rounding, g(q).d <= (1 - 2 c1) |g.d|.
  bool sufficient_decrease(double f, double t, double f_ref, double f0, double slope,
                           double c1) const {
    if (f <= f_ref + c1 * t * slope) return true;
    return f <= f0 + curvature::rounding(f0) &&
           dot(gq_.data(), d_.data(), D_) <= (1.0 - 2.0 * c1) * -slope;
  }

  // _bb_step with s = step_ (q - p), y, after k + 1 steps; t_used when s'y <= 0.
  double bb_step(const std::vector<double>& y, double t_used) {
    mem_.ints[1] += 1;
    const std::int64_t k = mem_.ints[1];
    const double sy = dot(step_.data(), y.data(), D_);
    if (!(sy > 0.0)) return t_used;
    const bool long_step = rule_.variant == kLong || (rule_.variant == kAlternate && k % 2 == 1);
    const double t = long_step ? dot(step_.data(), step_.data(), D_) / sy
                               : sy / dot(y.data(), y.data(), D_);
    return std::min(std::max(t, 1e-30), 1e30);
  }

  // Armijo._proximal's loop body: q = soft_threshold(p - t g, t l1), t shrunk until
  // _prox_decrease holds (or the step is negligible: a stall); the next first trial is t grow.
  void proximal_iteration() {
    const double* p = st_.P;
    const double* g = st_.grad;
    const double loss = mem_.reals[1];
    double t = mem_.reals[0];
    double fq = 0.0;
    while (true) {
      for (std::ptrdiff_t j = 0; j < D_; ++j) {
        const auto u = static_cast<std::size_t>(j);
        double w = p[j] - t * g[j];
        if (penalized_[j]) w = detail::sign(w) * std::max(std::fabs(w) - t * l1_, 0.0);
        q_[u] = w;
        step_[u] = w - p[j];
      }
      if (curvature::negligible(step_, p)) {
        detail::l1_residual(p, g, l1_, penalized_, D_, work_.data());
        curvature::stall(spec_, st_, work_.data(), D_);
        return;
      }
      fq = oracle_(q_.data(), gq_.data());
      passes_[0] += 1.0;
      if (std::isfinite(fq) && prox_decrease(loss, g, fq, t)) break;
      t *= rule_.shrink;
    }
    detail::l1_residual(q_.data(), gq_.data(), l1_, penalized_, D_, work_.data());
    const double objective = detail::objective(fq, l1_, q_.data(), penalized_, D_);
    curvature::take_step(spec_, st_, passes_[0], D_, q_.data(), gq_.data(), t, objective,
                         work_.data());
    mem_.reals[1] = fq;
    mem_.reals[0] = t * rule_.grow;
  }

  // curvature._prox_decrease with step = step_ (q - p): f(q) <= f0 + g0.step + ||step||^2/(2t),
  // or where f's difference is lost in rounding, (g(q) - g0).step <= ||step||^2 / t.
  bool prox_decrease(double f0, const double* g0, double f, double t) {
    const double ss = dot(step_.data(), step_.data(), D_);
    if (f <= f0 + dot(g0, step_.data(), D_) + ss / (2.0 * t)) return true;
    if (!(f <= f0 + curvature::rounding(f0))) return false;
    for (std::size_t j = 0; j < size(); ++j) work_[j] = gq_[j] - g0[j];
    return dot(work_.data(), step_.data(), D_) <= ss / t;
  }

  Oracle& oracle_;
  Hessp& hessp_;
  const RunSpec& spec_;
  FitState& st_;
  Rule rule_;
  Memory mem_;
  double* passes_;
  std::ptrdiff_t D_;
  double l1_;
  const std::uint8_t* penalized_;
  std::vector<double> q_, gq_, step_, d_;  // the trial point, its gradient, q - p, direction
  // one D-vector's scratch between calls: bb's y = g(q) - g, the L1 residual, prox_decrease's
  // g(q) - g0 (never two at once); newton's CG vectors r, dir and H dir, made at its first CG
  std::vector<double> work_, cg_;
};

}  // namespace backtrack_loop
}  // namespace gradstep
