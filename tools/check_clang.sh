#!/usr/bin/env bash
# Compiles the C++ core (cpp/src/module.cpp) with Clang and the CI's warning flags as errors, then
# checks that the opt-in AVX-512 kernel really is 512-bit code. CI builds with GCC only; this is
# the check for the Clang builds (macOS wheels, users with CXX=clang++), whose attribute handling
# differs: Clang once dropped the AVX-512 entry points' whole target attribute over
# prefer-vector-width (block_kernel.hpp, GRADSTEP_TARGET_AVX512), which left that kernel baseline
# code and broke -Werror builds.
#
#   tools/check_clang.sh            # CXX if it is a Clang, else `python -m ziglang c++`
#
# PYTHON picks the interpreter whose headers, pybind11 and (when CXX is not a Clang) ziglang are
# used; ziglang, a Clang in a wheel, is pip-installed into its environment when missing. Takes
# about 3.5 minutes on 2 cores. (zig's runtime answers 0 to __builtin_cpu_supports, so a module
# built this way runs only the baseline kernel: this script checks the build, not the dispatch.)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
if [[ -n "${CXX:-}" ]] && "$CXX" --version 2>/dev/null | grep -qi clang; then
  compiler=("$CXX")
  target=()
else
  if ! "$PYTHON" -c "import ziglang" 2>/dev/null; then
    echo "check_clang: pip install ziglang (a Clang toolchain in a wheel)" >&2
    "$PYTHON" -m pip install --quiet ziglang >&2
  fi
  compiler=("$PYTHON" -m ziglang c++)
  target=(-target x86_64-linux-gnu.2.17)
fi
"${compiler[@]}" --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail

include=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
pybind11=$("$PYTHON" -c "import pybind11; print(pybind11.get_include())")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The flags of CMakeLists.txt (Release, GRADSTEP_WERROR=ON).
"${compiler[@]}" "${target[@]}" -std=c++17 -O3 -DNDEBUG -fPIC -shared -fvisibility=hidden \
  -Wall -Wextra -Wconversion -Wsign-conversion -Wno-psabi -Werror \
  -Icpp/include -isystem "$include" -isystem "$pybind11" cpp/src/module.cpp -o "$out/_core.so"
echo "check_clang: module.cpp compiled without a warning"

if ! command -v objdump >/dev/null 2>&1 || ! command -v nm >/dev/null 2>&1; then
  echo "check_clang: no objdump/nm here; the 512-bit check is skipped"
  exit 0
fi
symbol=$(nm "$out/_core.so" | awk '/block_tile_avx512IdE/ && !found {print $3; found = 1}')
if [[ -z "$symbol" ]]; then
  echo "check_clang: block_tile_avx512<double> not found in the module" >&2
  exit 1
fi
zmm=$(objdump -d --no-show-raw-insn --disassemble="$symbol" "$out/_core.so" | grep -c zmm || true)
echo "check_clang: block_tile_avx512<double> has $zmm instructions on zmm registers"
if [[ "$zmm" -eq 0 ]]; then
  echo "check_clang: the AVX-512 kernel was compiled without 512-bit vectors" >&2
  exit 1
fi
