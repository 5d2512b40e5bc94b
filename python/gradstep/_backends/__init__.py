"""The three backends behind one contract (see state.py), and how "auto" picks one."""

from __future__ import annotations

import importlib
from types import ModuleType

ORDER = ("cpp", "numba", "numpy")
_MODULES = {"cpp": ".cpp", "numba": ".numba", "numpy": ".reference"}
_loaded: dict[str, ModuleType] = {}
_why_missing: dict[str, str] = {}


def _load(name: str) -> ModuleType | None:
    if name in _loaded:
        return _loaded[name]
    if name in _why_missing:
        return None
    try:
        module = importlib.import_module(_MODULES[name], __name__)
    except ImportError as exc:  # the compiled core was not built, or numba is not installed
        _why_missing[name] = _explain(name, exc)
        return None
    _loaded[name] = module
    return module


def _explain(name: str, exc: ImportError) -> str:
    if name == "cpp":
        try:  # written into the wheel only by the pure-Python fallback install (pyproject.toml)
            return str(importlib.import_module("gradstep._build_fallback").REASON)
        except ImportError:
            pass
        return (
            f"the compiled core gradstep._core could not be imported ({exc}); "
            "build it with `pip install .` from the source tree (needs a C++17 compiler)"
        )
    return f"numba could not be imported ({exc}); install it with `pip install numba`"


def available() -> dict[str, object]:
    """{"cpp": bool, "numba": bool, "numpy": True, "why": {name: reason}} for the missing ones."""
    found = {name: _load(name) is not None for name in ORDER}
    return {**found, "why": {n: _why_missing[n] for n in ORDER if not found[n]}}


def get(backend: str) -> tuple[str, ModuleType]:
    """(name, module) for a backend name or "auto"; a clear ValueError when it cannot be had."""
    if backend == "auto":
        for name in ORDER:
            module = _load(name)
            if module is not None:
                return name, module
    if backend not in ORDER:
        raise ValueError(
            f"unknown backend {backend!r}; valid: 'auto', {', '.join(map(repr, ORDER))}"
        )
    module = _load(backend)
    if module is None:
        raise ValueError(
            f"backend {backend!r} is not available: {_why_missing[backend]}; "
            "use backend='auto' to take the fastest one that is"
        )
    return backend, module
