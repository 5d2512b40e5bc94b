#!/usr/bin/env bash
# The README's per-CPU tables on another machine (a lent many-core one, say), in one command:
# builds gradstep from this tree into a scratch folder with the interpreter's own build tools (no
# network: scikit-build-core, pybind11, NumPy, scikit-learn, SciPy, Numba, threadpoolctl must be
# installed), runs the kernel tests on that CPU, then benchmarks/targets.py, `gradstep bench` at
# 1, 2, 4, ... cores and benchmarks/kernel_compare.py. Each step's output is also written to
# $OUT_DIR (default: bench-out) as it comes, so a run cut short keeps what it finished.
#
#   tools/lent_machine_bench.sh            # full sizes (about 7 minutes on a 16-core Xeon)
#   QUICK=1 tools/lent_machine_bench.sh    # small sizes: checks the script
#
# PYTHON picks the interpreter (default python3). OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset
# for this script only: they slow NumPy, the baseline every table compares against.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-bench-out}
SITE=${SITE:-/tmp/gradstep-site}
mkdir -p "$OUT_DIR"
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export PYTHONUNBUFFERED=1 GRADSTEP_REQUIRE_CPP=1

step() {  # step NAME COMMAND...: runs COMMAND, its output to the screen and $OUT_DIR/NAME.txt
  local name=$1
  shift
  echo "=== $name: $* ($(date -u +%T))"
  "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
}

{
  lscpu
  echo
  "$PYTHON" --version
  c++ --version | head -1
  git log -1 --format='commit %h %s' 2>/dev/null
} > "$OUT_DIR/machine.txt" 2>&1
grep -E "Model name|^CPU\(s\)|Thread|L1d|L2|L3" "$OUT_DIR/machine.txt"

start=$(date +%s)
step build "$PYTHON" -m pip install -q --no-build-isolation --no-deps --no-cache-dir \
  --upgrade --target "$SITE" . || exit 1
echo "build: $(( $(date +%s) - start )) s"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import gradstep._core as c; print('kernels', c.kernels(), 'default', c.kernel())" \
  || exit 1

threads=$(nproc)
list=1
for t in 2 4 8 16 32 64; do
  if (( t <= threads )); then list="$list $t"; fi
done
if [[ -n "${QUICK:-}" ]]; then
  n=20000 quick=--quick
else
  n=1000000 quick=
fi

# The kernel tests (bit-identical kernels, the vector link's accuracy) on this CPU first: a table
# from a kernel that fails them would mean nothing.
step kernel_tests "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_kernels.py
step targets "$PYTHON" benchmarks/targets.py $quick
step bench "$PYTHON" -m gradstep bench --n "$n" --d 100 --threads $list --backend cpp numba \
  --repeat 5 --fit-iter 10
step kernel_compare "$PYTHON" benchmarks/kernel_compare.py --n "$n"
echo "total: $(( $(date +%s) - start )) s"
