"""Argument parsing shared by every command: the parser, the user's-mistake exception, and the
type converters, each of which turns one string into a value or explains, in one line, what is
wrong with it."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from ..rules import RULES, SCHEDULE_PARAMS, make_schedule

T = TypeVar("T", int, float)


class UsageError(Exception):
    """A mistake in what the user asked for; main() reports it on one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with errors on ONE line of stderr (no usage block), exit code 2."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def rule_list(text: str) -> list:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("empty rule list; e.g. --rules sgd,normalized,adam")
    if names == ["all"]:
        return list(RULES)
    for name in names:
        if name not in RULES:
            raise argparse.ArgumentTypeError(
                f"unknown rule {name!r}; valid: {', '.join(RULES)} (or all)"
            )
    return list(dict.fromkeys(names))  # in the order given, each once


def lr_list(text: str) -> list:
    """Learning rates: positive numbers, 'auto' (1/L) or 'default' (the rule's own, as None)."""
    out: list = []
    for token in [t.strip() for t in text.split(",")]:
        if token.lower() in ("auto", "default"):
            out.append("auto" if token.lower() == "auto" else None)
            continue
        value = _parse(float, token)
        if value is None or not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(
                f"invalid learning rate {token!r}: give positive numbers such as 0.1 or "
                "0.01,0.1, or 'auto' (1/L) or 'default' (each rule's own)"
            )
        out.append(value)
    return out


def schedule(text: str) -> tuple:
    """NAME or NAME:param=value, e.g. inverse_time:decay=0.05 -> (name, {param: value})."""
    name, _, rest = text.strip().partition(":")
    params = {}
    for item in [i.strip() for i in rest.split(",") if i.strip()]:
        key, sep, value = item.partition("=")
        number = _parse(float, value) if sep else None
        if number is None or not math.isfinite(number):
            raise argparse.ArgumentTypeError(
                f"malformed schedule {text!r}: parameters are key=number, "
                "e.g. inverse_time:decay=0.05"
            )
        params[key.strip()] = number
    unknown = [k for k in params if k not in SCHEDULE_PARAMS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown schedule parameter {unknown[0]!r}; valid: "
            + ", ".join(f"{v}:{k}=..." for k, v in SCHEDULE_PARAMS.items())
        )
    try:
        make_schedule(name, params)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, params


def _parse(kind: Callable[[str], T], text: str) -> T | None:
    try:
        return kind(text)
    except ValueError:
        return None


def _number(kind: Callable[[str], T], ok: Callable[[T], bool], expected: str,
            name: str) -> Callable[[str], T]:
    """A converter to ``kind`` that accepts the values for which ``ok`` holds."""

    def convert(text: str) -> T:
        value = _parse(kind, text)
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    convert.__name__ = convert.__qualname__ = name
    return convert


positive_int = _number(int, lambda v: v >= 1, "a positive integer", "positive_int")
thread_count = _number(int, lambda v: 1 <= v <= 1 << 16, "an integer from 1 to 65536",
                       "thread_count")
nonneg_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0",
                       "nonneg_float")
seed = _number(int, lambda v: v >= 0, "an integer >= 0", "seed")
