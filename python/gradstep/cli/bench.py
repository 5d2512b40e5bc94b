"""``gradstep bench``: one loss+gradient pass and one fit per backend, timed against NumPy (the
measurements themselves are in ``gradstep.bench``)."""

from __future__ import annotations

import os

from . import _args
from ._args import UsageError


def add_bench(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time one loss+gradient pass and one fit per backend against NumPy",
        description="Time one loss+gradient pass and one whole fit (full-batch Adam) for each "
        "available backend and for plain NumPy, with the time of one X @ w as the floor "
        "(reading X once). Prints seconds, GB/s of X read, the ratio to the floor and the "
        "speed-up over NumPy; NumPy's BLAS is limited to the same threads.",
    )
    p.add_argument("--n", type=_args.positive_int, default=200_000,
                   help="rows (default: %(default)s)")
    p.add_argument("--d", type=_args.positive_int, default=100,
                   help="features (default: %(default)s)")
    p.add_argument("--k", type=_args.positive_int, default=1,
                   help="runs sharing each pass over X (default: %(default)s)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--threads", type=_args.thread_count, nargs="+", default=None, metavar="N",
                   help="one table per thread count (default: all cores)")
    p.add_argument("--fit-iter", type=_args.positive_int, default=20, metavar="N",
                   help="iterations of the timed fit (default: %(default)s)")
    p.add_argument("--repeat", type=_args.positive_int, default=5,
                   help="timed repeats; the median is shown (default: %(default)s)")
    p.add_argument("--backend", choices=("cpp", "numba", "numpy"), nargs="+", default=None,
                   help="backends to time (default: every available one)")
    p.set_defaults(func=cmd_bench, parser=p)


def cmd_bench(args) -> int:
    import gradstep as gs

    from .. import bench

    found = gs.backends()
    missing = [b for b in (args.backend or []) if not found[b]]
    if missing:
        why = found["why"]
        reason = why.get(missing[0], "") if isinstance(why, dict) else ""
        raise UsageError(f"backend {missing[0]!r} is not available: {reason}")
    gib = args.n * args.d * (4 if args.dtype == "float32" else 8) / 2**30
    available = _available_gib()
    if available is not None and gib > 0.8 * available:
        raise UsageError(
            f"--n {args.n} x --d {args.d} {args.dtype} needs {gib:.3g} GiB for X alone, and this "
            f"machine has {available:.3g} GiB available; choose a smaller --n or --d")
    print(f"gradstep bench: X {args.n} x {args.d} {args.dtype} ({gib:.2f} GiB), K={args.k}; "
          f"{bench.machine_description()}")
    for threads in args.threads or [os.cpu_count() or 1]:
        rows, blas = bench.run(args.n, args.d, args.k, args.dtype, threads, args.fit_iter,
                               args.repeat, args.backend)
        print()
        print(bench.format_table(rows, f"threads={threads}; NumPy BLAS: {blas}"))
    return 0


def _available_gib() -> float | None:
    """Memory available now, in GiB (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None
