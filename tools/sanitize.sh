#!/usr/bin/env bash
# The compiled core under AddressSanitizer + UndefinedBehaviorSanitizer: builds gradstep._core with
# -fsanitize=address,undefined (GCC or Clang) and runs the engine's tests against it.
#
#   tools/sanitize.sh                 # the engine's tests (below)
#   tools/sanitize.sh -k hessp -x     # extra pytest arguments go to the test run
#
# The editable install is left alone: the package is built into build/sanitize/stage (a build
# directory of its own, build/sanitize/build) and the tests run in build/sanitize/venv, a venv
# that sees the current environment's packages (numpy, pytest, ...) through a .pth line but not
# the editable install's import hook, with the stage first on PYTHONPATH. The script checks
# that the tests import the sanitized core.
#
# Python itself is not instrumented, so the ASan runtime must be loaded first: LD_PRELOAD of the
# compiler's libasan, and of its libstdc++ (ASan intercepts __cxa_throw; when libstdc++ is loaded
# only later, with the extension, the first C++ exception aborts in ASan's interceptor). Leak
# detection is off (the interpreter "leaks" by design at exit). Any report, ASan's or UBSan's,
# ends the run with a non-zero status (-fno-sanitize-recover); pytest captures only sys.stderr
# (--capture=sys) so that a report written to file descriptor 2 reaches the terminal.
#
# Environment: PYTHON (default: python3 on PATH, i.e. the active venv's), CXX (default g++),
# GRADSTEP_SANITIZE_DIR (default build/sanitize).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
CXX=${CXX:-g++}
OUT=${GRADSTEP_SANITIZE_DIR:-$ROOT/build/sanitize}
SAN="-fsanitize=address,undefined"
started=$(date +%s)

echo "== building the sanitized core into $OUT/stage"
CXX=$CXX "$PY" -m pip install --quiet --no-build-isolation --no-deps --no-compile --upgrade \
  --target "$OUT/stage" "$ROOT" \
  -Cbuild-dir="$OUT/build" \
  -Ccmake.build-type=RelWithDebInfo \
  "-Ccmake.define.CMAKE_CXX_FLAGS=$SAN -fno-sanitize-recover=all -fno-omit-frame-pointer" \
  "-Ccmake.define.CMAKE_SHARED_LINKER_FLAGS=$SAN"
rm -rf "$OUT/stage/bin"  # the console script: not needed
built=$(date +%s)
echo "== built in $(( built - started )) s"

echo "== a venv without the editable install's import hook: $OUT/venv"
if [ ! -x "$OUT/venv/bin/python" ]; then
  "$PY" -m venv --without-pip "$OUT/venv"
fi
site=$("$OUT/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PY" -c "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])" \
  | sort -u > "$site/gradstep-sanitize-base.pth"

LIBASAN=$("$CXX" -print-file-name=libasan.so)
LIBSTDCXX=$("$CXX" -print-file-name=libstdc++.so)
for lib in "$LIBASAN" "$LIBSTDCXX"; do
  if [ ! -e "$lib" ]; then
    echo "$lib not found (from $CXX -print-file-name)" >&2
    exit 2
  fi
done
export PYTHONPATH="$OUT/stage"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run() { LD_PRELOAD="$LIBASAN $LIBSTDCXX" "$OUT/venv/bin/python" "$@"; }

core=$(run -c "import gradstep._core as c; print(c.__file__)")
case "$core" in
  "$OUT/stage/"*) echo "== tests against $core" ;;
  *) echo "the tests would import $core, not the sanitized core in $OUT/stage" >&2; exit 2 ;;
esac

# The engine's tests: the core's contract and kernels in full, the backend and fit tests of the
# C++ backend (-k applies to every file: the two full modules are selected by name).
run -m pytest -q -p no:cacheprovider --capture=sys \
  tests/test_core_contract.py tests/test_kernels.py tests/test_backends.py tests/test_fit.py \
  -k "test_core_contract or test_kernels or cpp" "$@"

echo "== sanitizer run clean: tests $(( $(date +%s) - built )) s, total $(( $(date +%s) - started )) s"
