// The learning-rate schedules and the step rules: rules.schedule_value and each rule's reference
// update (rules.py), formula for formula, in the same order of operations, so that the compiled
// loop follows the NumPy specification to the last few bits.
//
// One function per rule, all with the same signature (StepFn), its step_scale for the proximal L1
// step (ScaleFn), and ONE table, kRules, that maps a rule's code to its name and functions: the fit
// loops dispatch through it (rule_step, rule_scale), the bindings validate codes with it
// (valid_rule) and gradstep._core.rule_codes() returns it. Adding a compiled first-order rule
// means writing its step_* and scale_* functions and adding one line to kRules; the code must be
// the `code` of the rule's class in rules.py.
//
// The hyper table layout (rules.HYPER_*) and the schedule codes are the other half of the contract
// with the Python layer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>

namespace gradstep {

// Schedule codes (the `code` of each schedule class in rules.py).
enum ScheduleCode : std::int64_t {
  kConstant = 0,
  kInverseTime = 1,
  kInversePower = 2,
  kExponential = 3,
  kCosine = 4,
};

// Columns of the hyper table (rules.HYPER_*).
constexpr std::ptrdiff_t kHyperLr = 0, kHyperSched = 1, kHyperA = 2, kHyperB = 3, kHyperEps = 4;
constexpr std::ptrdiff_t kNHyper = 5;

// Optimizer slots per run (state.N_SLOTS): momentum v | adagrad G | rmsprop v | adadelta E, D |
// adam m, v.
constexpr std::ptrdiff_t kNSlots = 2;

inline bool valid_schedule(std::int64_t code) { return code >= kConstant && code <= kCosine; }

// The schedule's learning rate at update t = 1, 2, ... (rules.schedule_value).
inline double schedule_value(std::int64_t code, double lr, double param, std::int64_t t,
                             std::int64_t total_updates) {
  switch (code) {
    case kInverseTime:
      return lr / (1.0 + param * static_cast<double>(t - 1));
    case kInversePower:
      return lr / std::pow(static_cast<double>(t), param);
    case kExponential:
      return lr * std::pow(param, static_cast<double>(t - 1));
    case kCosine: {
      const double progress = static_cast<double>(std::min<std::int64_t>(t - 1, total_updates)) /
                              static_cast<double>(std::max<std::int64_t>(total_updates, 1));
      const double pi = 3.141592653589793;  // math.pi
      return lr * (1.0 + std::cos(pi * progress)) / 2.0;
    }
    default:  // kConstant; the bindings reject unknown codes before a fit starts
      return lr;
  }
}

// What one update of one run sees: its row of the hyper table, the schedule's value lr_t, the
// update counter t (already incremented for this update: Adam's bias correction uses it), the
// gradient g (D,), and what it advances in place: the parameters p (D,) and the slots
// (kNSlots * D: slot s of the run is slots + s * D).
struct StepArgs {
  const double* hyper;
  double lr_t;
  std::int64_t t;
  const double* g;
  double* p;
  double* slots;
  std::ptrdiff_t D;
};

using StepFn = void (*)(const StepArgs&);

// ---- the rules (DESIGN.md's table; hyper a, b, eps as rules.py fills them) ---------------------

// p -= lr g
inline void step_sgd(const StepArgs& s) {
  for (std::ptrdiff_t j = 0; j < s.D; ++j) s.p[j] -= s.lr_t * s.g[j];
}

// v = mu v + g; p -= lr v   (mu = a)
inline void step_momentum(const StepArgs& s) {
  const double a = s.hyper[kHyperA];
  double* v = s.slots;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    v[j] = a * v[j] + s.g[j];
    s.p[j] -= s.lr_t * v[j];
  }
}

// v = mu v + g; p -= lr (g + mu v)   (mu = a)
inline void step_nesterov(const StepArgs& s) {
  const double a = s.hyper[kHyperA];
  double* v = s.slots;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    v[j] = a * v[j] + s.g[j];
    s.p[j] -= s.lr_t * (s.g[j] + a * v[j]);
  }
}

// p -= lr g / max(|g|, eps); no step where g == 0 (its direction is undefined)
inline void step_normalized(const StepArgs& s) {
  const double eps = s.hyper[kHyperEps];
  double sq = 0.0;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) sq += s.g[j] * s.g[j];
  const double norm = std::sqrt(sq);
  if (norm > 0.0) {
    const double denom = std::max(norm, eps);
    for (std::ptrdiff_t j = 0; j < s.D; ++j) s.p[j] -= s.lr_t * s.g[j] / denom;
  }
}

// G += g^2; p -= lr g / (sqrt(G) + eps)
inline void step_adagrad(const StepArgs& s) {
  const double eps = s.hyper[kHyperEps];
  double* G = s.slots;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    G[j] += s.g[j] * s.g[j];
    s.p[j] -= s.lr_t * s.g[j] / (std::sqrt(G[j]) + eps);
  }
}

// v = rho v + (1 - rho) g^2; p -= lr g / (sqrt(v) + eps)   (rho = a)
inline void step_rmsprop(const StepArgs& s) {
  const double a = s.hyper[kHyperA], eps = s.hyper[kHyperEps];
  double* v = s.slots;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    v[j] = a * v[j] + (1.0 - a) * s.g[j] * s.g[j];
    s.p[j] -= s.lr_t * s.g[j] / (std::sqrt(v[j]) + eps);
  }
}

// E = rho E + (1 - rho) g^2; d = sqrt(D + eps) / sqrt(E + eps) g; D = rho D + (1 - rho) d^2;
// p -= lr d   (rho = a)
inline void step_adadelta(const StepArgs& s) {
  const double a = s.hyper[kHyperA], eps = s.hyper[kHyperEps];
  double* E = s.slots;
  double* Dsq = s.slots + s.D;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    E[j] = a * E[j] + (1.0 - a) * s.g[j] * s.g[j];
    const double delta = std::sqrt(Dsq[j] + eps) / std::sqrt(E[j] + eps) * s.g[j];
    Dsq[j] = a * Dsq[j] + (1.0 - a) * delta * delta;
    s.p[j] -= s.lr_t * delta;
  }
}

// m, v moments (betas a, b), bias-corrected at update t; p -= lr m_hat / (sqrt(v_hat) + eps)
inline void step_adam(const StepArgs& s) {
  const double a = s.hyper[kHyperA], b = s.hyper[kHyperB], eps = s.hyper[kHyperEps];
  double* m = s.slots;
  double* v = s.slots + s.D;
  const double c1 = 1.0 - std::pow(a, static_cast<double>(s.t));
  const double c2 = 1.0 - std::pow(b, static_cast<double>(s.t));
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    m[j] = a * m[j] + (1.0 - a) * s.g[j];
    v[j] = b * v[j] + (1.0 - b) * s.g[j] * s.g[j];
    const double m_hat = m[j] / c1;
    const double v_hat = v[j] / c2;
    s.p[j] -= s.lr_t * m_hat / (std::sqrt(v_hat) + eps);
  }
}

// ---- the step per unit of direction, for the proximal L1 step (rules.py's step_scale) ----------
// out (D,) = the step the next update takes per unit of the direction it steps along, computed
// with the same arguments just BEFORE that update (the slots not yet advanced): the fit loops
// then soft-threshold the coefficients by out * l1 (fit.hpp, take_step).

using ScaleFn = void (*)(const StepArgs&, double* out);

inline void scale_fill(const StepArgs& s, double value, double* out) {
  std::fill(out, out + s.D, value);
}

// sgd: lr
inline void scale_sgd(const StepArgs& s, double* out) { scale_fill(s, s.lr_t, out); }

// momentum and nesterov: lr / (1 - mu), the step per unit of gradient once the velocity has
// settled (v = g / (1 - mu))
inline void scale_momentum(const StepArgs& s, double* out) {
  scale_fill(s, s.lr_t / (1.0 - s.hyper[kHyperA]), out);
}

// normalized: lr / max(|g|, eps), 0 where g == 0
inline void scale_normalized(const StepArgs& s, double* out) {
  double sq = 0.0;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) sq += s.g[j] * s.g[j];
  const double norm = std::sqrt(sq);
  scale_fill(s, norm > 0.0 ? s.lr_t / std::max(norm, s.hyper[kHyperEps]) : 0.0, out);
}

// adagrad: lr / (sqrt(G + g^2) + eps), G as the update leaves it
inline void scale_adagrad(const StepArgs& s, double* out) {
  const double eps = s.hyper[kHyperEps];
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    out[j] = s.lr_t / (std::sqrt(s.slots[j] + s.g[j] * s.g[j]) + eps);
  }
}

// rmsprop: lr / (sqrt(v) + eps), v as the update leaves it
inline void scale_rmsprop(const StepArgs& s, double* out) {
  const double a = s.hyper[kHyperA], eps = s.hyper[kHyperEps];
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    const double v = a * s.slots[j] + (1.0 - a) * s.g[j] * s.g[j];
    out[j] = s.lr_t / (std::sqrt(v) + eps);
  }
}

// adadelta: lr sqrt(D + eps) / sqrt(E + eps), E as the update leaves it, D as it reads it
inline void scale_adadelta(const StepArgs& s, double* out) {
  const double a = s.hyper[kHyperA], eps = s.hyper[kHyperEps];
  const double* Dsq = s.slots + s.D;
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    const double E = a * s.slots[j] + (1.0 - a) * s.g[j] * s.g[j];
    out[j] = s.lr_t * std::sqrt(Dsq[j] + eps) / std::sqrt(E + eps);
  }
}

// adam: lr / (sqrt(v_hat) + eps) per unit of m_hat, v_hat as the update leaves it
inline void scale_adam(const StepArgs& s, double* out) {
  const double b = s.hyper[kHyperB], eps = s.hyper[kHyperEps];
  const double* v = s.slots + s.D;
  const double c2 = 1.0 - std::pow(b, static_cast<double>(s.t));
  for (std::ptrdiff_t j = 0; j < s.D; ++j) {
    const double v_hat = (b * v[j] + (1.0 - b) * s.g[j] * s.g[j]) / c2;
    out[j] = s.lr_t / (std::sqrt(v_hat) + eps);
  }
}

// ---- the table: the one place a compiled rule is registered -----------------------------------

struct Rule {
  const char* name;   // the rule's name in rules.py
  std::int64_t code;  // the `code` of its class in rules.py
  StepFn step;
  ScaleFn scale;      // its step_scale, for the proximal L1 step
};

inline constexpr Rule kRules[] = {
    {"sgd", 0, step_sgd, scale_sgd},
    {"momentum", 1, step_momentum, scale_momentum},
    {"nesterov", 2, step_nesterov, scale_momentum},
    {"normalized", 3, step_normalized, scale_normalized},
    {"adagrad", 4, step_adagrad, scale_adagrad},
    {"rmsprop", 5, step_rmsprop, scale_rmsprop},
    {"adadelta", 6, step_adadelta, scale_adadelta},
    {"adam", 7, step_adam, scale_adam},
};

// The step function of a rule code, or nullptr for a code no compiled rule has.
inline StepFn rule_step(std::int64_t code) {
  for (const Rule& r : kRules) {
    if (r.code == code) return r.step;
  }
  return nullptr;
}

// The step_scale function of a rule code, or nullptr for a code no compiled rule has.
inline ScaleFn rule_scale(std::int64_t code) {
  for (const Rule& r : kRules) {
    if (r.code == code) return r.scale;
  }
  return nullptr;
}

inline bool valid_rule(std::int64_t code) { return rule_step(code) != nullptr; }

}  // namespace gradstep
