// The learning-rate schedules and the update of each step rule: rules.schedule_value and
// reference.step, formula for formula, in the same order of operations, so that the compiled
// loop follows the NumPy specification to the last few bits.
//
// Codes (rules.RULE_CODES / rules.SCHEDULES) and the hyper table layout (rules.HYPER_*) are the
// contract with the Python layer; valid_rule / valid_schedule let the bindings reject an unknown
// code before a fit touches any state.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace gradstep {

// Rule codes (rules.RULE_CODES).
enum RuleCode : std::int64_t {
  kSgd = 0,
  kMomentum = 1,
  kNesterov = 2,
  kNormalized = 3,
  kAdaGrad = 4,
  kRMSProp = 5,
  kAdaDelta = 6,
  kAdam = 7,
};

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

inline bool valid_rule(std::int64_t code) { return code >= kSgd && code <= kAdam; }
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

// One update of one run (reference.step), in place on p (D,) and slots (kNSlots * D).
// g is the run's gradient (D,), lr_t the schedule's value, t the update counter (already
// incremented for this update: Adam's bias correction uses it).
inline void apply_step(std::int64_t rule, const double* hyper_row, double lr_t, std::int64_t t,
                       const double* g, double* p, double* slots, std::ptrdiff_t D) {
  const double a = hyper_row[kHyperA], b = hyper_row[kHyperB], eps = hyper_row[kHyperEps];
  double* s0 = slots;
  double* s1 = slots + D;
  switch (rule) {
    case kSgd:
      for (std::ptrdiff_t j = 0; j < D; ++j) p[j] -= lr_t * g[j];
      break;
    case kMomentum:
      for (std::ptrdiff_t j = 0; j < D; ++j) {
        s0[j] = a * s0[j] + g[j];
        p[j] -= lr_t * s0[j];
      }
      break;
    case kNesterov:
      for (std::ptrdiff_t j = 0; j < D; ++j) {
        s0[j] = a * s0[j] + g[j];
        p[j] -= lr_t * (g[j] + a * s0[j]);
      }
      break;
    case kNormalized: {
      // No step where g == 0 (its direction is undefined); otherwise a step of length lr_t.
      double sq = 0.0;
      for (std::ptrdiff_t j = 0; j < D; ++j) sq += g[j] * g[j];
      const double norm = std::sqrt(sq);
      if (norm > 0.0) {
        const double denom = std::max(norm, eps);
        for (std::ptrdiff_t j = 0; j < D; ++j) p[j] -= lr_t * g[j] / denom;
      }
      break;
    }
    case kAdaGrad:
      for (std::ptrdiff_t j = 0; j < D; ++j) {
        s0[j] += g[j] * g[j];
        p[j] -= lr_t * g[j] / (std::sqrt(s0[j]) + eps);
      }
      break;
    case kRMSProp:
      for (std::ptrdiff_t j = 0; j < D; ++j) {
        s0[j] = a * s0[j] + (1.0 - a) * g[j] * g[j];
        p[j] -= lr_t * g[j] / (std::sqrt(s0[j]) + eps);
      }
      break;
    case kAdaDelta:
      for (std::ptrdiff_t j = 0; j < D; ++j) {
        s0[j] = a * s0[j] + (1.0 - a) * g[j] * g[j];
        const double delta = std::sqrt(s1[j] + eps) / std::sqrt(s0[j] + eps) * g[j];
        s1[j] = a * s1[j] + (1.0 - a) * delta * delta;
        p[j] -= lr_t * delta;
      }
      break;
    case kAdam: {
      const double c1 = 1.0 - std::pow(a, static_cast<double>(t));
      const double c2 = 1.0 - std::pow(b, static_cast<double>(t));
      for (std::ptrdiff_t j = 0; j < D; ++j) {
        s0[j] = a * s0[j] + (1.0 - a) * g[j];
        s1[j] = b * s1[j] + (1.0 - b) * g[j] * g[j];
        const double m_hat = s0[j] / c1;
        const double v_hat = s1[j] / c2;
        p[j] -= lr_t * m_hat / (std::sqrt(v_hat) + eps);
      }
      break;
    }
    default:  // the bindings reject unknown codes before a fit starts
      break;
  }
}

}  // namespace gradstep
