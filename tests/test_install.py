"""The installed package as pip laid it out: its metadata, its compiled core, and where it is
imported from.

Two environment variables (read as scikit-build-core reads GRADSTEP_REQUIRE_CPP: empty, 0, no,
off, false are false) make the checks that only hold for some installs:

- GRADSTEP_REQUIRE_CPP=1: the C++ backend must load (CI's main install, the release wheels).
- GRADSTEP_TEST_INSTALLED=1: gradstep must come from this environment's site-packages, not from a
  source tree (CI's test of the repaired wheel, cibuildwheel's tests).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sysconfig
from pathlib import Path

import pytest

import gradstep as gs


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value.isdigit():
        return bool(int(value))
    return value not in {"", "n", "no", "off", "false", "f"}


PACKAGE_DIR = Path(gs.__file__).resolve().parent


def test_version_matches_the_installed_metadata():
    try:
        installed = importlib.metadata.version("gradstep")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gradstep is imported from a path, not installed")
    assert installed == gs.__version__


def test_ships_its_type_information():
    assert (PACKAGE_DIR / "py.typed").is_file()


@pytest.mark.skipif(not gs.backends()["cpp"], reason="no compiled core in this install")
def test_the_compiled_core_belongs_to_this_copy_of_the_package():
    import gradstep._core as core

    if _flag("GRADSTEP_TEST_INSTALLED"):  # an editable install keeps it apart from the sources
        assert Path(core.__file__).resolve().parent == PACKAGE_DIR
    assert (PACKAGE_DIR / "_core.pyi").is_file()
    assert "baseline" in core.kernels()
    assert core.kernel() in core.kernels()


def test_a_fallback_install_has_no_core_and_says_why():
    """The pure-Python wheel that the build falls back to without a compiler carries
    gradstep/_build_fallback.py (pyproject.toml, [[tool.scikit-build.overrides]]); a wheel with
    the core does not."""
    fallback = importlib.util.find_spec("gradstep._build_fallback") is not None
    avail = gs.backends()
    if avail["cpp"]:
        assert not fallback
    else:
        assert avail["why"]["cpp"]
    if fallback:
        reason = importlib.import_module("gradstep._build_fallback").REASON
        assert "C++" in reason
        assert not avail["cpp"]


@pytest.mark.skipif(not _flag("GRADSTEP_REQUIRE_CPP"), reason="GRADSTEP_REQUIRE_CPP is not set")
def test_the_cpp_backend_is_required_and_loads():
    avail = gs.backends()
    assert avail["cpp"], avail["why"].get("cpp")


@pytest.mark.skipif(not _flag("GRADSTEP_TEST_INSTALLED"),
                    reason="GRADSTEP_TEST_INSTALLED is not set")
def test_imported_from_site_packages_not_a_source_tree():
    site = {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}
    assert PACKAGE_DIR.parent in site, f"gradstep imported from {PACKAGE_DIR}, not from {site}"
