"""Checks of rule and schedule parameters, with messages that name the parameter."""

from __future__ import annotations

import math


def check_finite_nonneg(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_positive(name: str, value: object) -> None:
    check_finite_nonneg(name, value)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_lr(lr: object) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(
            f"lr must be a positive finite number (or 'auto'), got {lr!r}; "
            "try lr=0.1 or lr='auto'"
        )


def check_fraction(name: str, value: object) -> None:
    """0 <= value < 1 (momentum and moment decay rates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_open_unit(name: str, value: object) -> None:
    """0 < value < 1 (line-search constants)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
