"""Speed of `topk_certify.certify_counts` against the paper's per-example Python code.

Run from the repository root:

    python benches/bench_certify_counts.py          # full run (about a minute)
    python benches/bench_certify_counts.py --quick  # short run

For each configuration (C labels, top-k; n = 100,000 samples, sigma = 0.25, alpha = 0.001,
simuem bounds) `topk_certify.benchmark.run_benchmark` draws realistic Monte Carlo count rows,
times the baseline `topk_certify._paper_baseline.paper_radius` (the authors' algorithm: C
scalar Beta quantiles, bisection to 1e-5 in [0, 10]) one example at a time for a few seconds,
and times `certify_counts` on many rows at once (best of several runs), all in this one
process. It prints the seconds per example of both, their ratio and the target ratio, and
checks that the two agree on every example the baseline ran: |ours - baseline| <= 2e-5 (plus
rounding) where ours < 10; where ours >= 10 the baseline, capped at 10, must be within 2e-5
of 10. Exits 1 when they disagree. `topk-certify bench` runs one configuration.
"""

import argparse
import os
import sys

N_SAMPLES = 100_000
SIGMA = 0.25
ALPHA = 0.001

# (C, k, rows for certify_counts, rows for --quick, target ratio)
CONFIGS = [
    (10, 3, 100_000, 20_000, 5_000),
    (1000, 5, 20_000, 4_000, 50_000),
]


def threads_line():
    cpus = os.cpu_count()
    parts = [f"os.cpu_count() = {cpus} (rayon's default thread count"]
    if hasattr(os, "sched_getaffinity"):
        parts.append(f"; usable by this process: {len(os.sched_getaffinity(0))}")
    parts.append(")")
    env = os.environ.get("RAYON_NUM_THREADS")
    if env:
        parts.append(f", RAYON_NUM_THREADS = {env} overrides it")
    return "".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer rows and repeats)")
    parser.add_argument("--seed", type=int, default=20200426, help="seed of the count rows")
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=None,
        help="seconds of baseline per configuration (default 7, --quick 1)",
    )
    args = parser.parse_args(argv)
    budget_s = args.baseline_seconds or (1.0 if args.quick else 7.0)
    repeats = 3 if args.quick else 7

    try:
        from topk_certify.benchmark import BASELINE_CAP, TOLERANCE, describe_platform, run_benchmark
    except ImportError as exc:
        print(f"topk_certify is not importable ({exc}); build it first (make test-python)")
        return 1

    print(describe_platform())
    print(threads_line())
    print(
        f"n = {N_SAMPLES:,}, sigma = {SIGMA}, alpha = {ALPHA}, bound = simuem, "
        f"baseline ~{budget_s:g} s per configuration, ours best of {repeats}" + (" (--quick)" if args.quick else "")
    )
    print()

    reports = []
    for num_classes, k, rows, quick_rows, target in CONFIGS:
        rows = quick_rows if args.quick else rows
        report = run_benchmark(
            num_classes,
            k,
            N_SAMPLES,
            rows,
            baseline_rows=rows,
            alpha=ALPHA,
            sigma=SIGMA,
            seed=args.seed,
            repeat=repeats,
            baseline_seconds=budget_s,
        )
        reports.append((report, target))

    header = (
        f"{'config':<14}{'baseline s/ex':>15}{'ours s/ex':>12}{'ratio':>11}"
        f"{'target':>9}{'aim (2x)':>10}{'met':>5}   {'rows base/ours':>15}"
    )
    print(header)
    print("-" * len(header))
    for report, target in reports:
        config = f"C={report.num_classes}, k={report.k}"
        ours_s = report.us_per_example * 1e-6
        if report.ratio is not None:
            met = "yes" if report.ratio >= target else "no"
            print(
                f"{config:<14}{report.baseline_us_per_example * 1e-6:>15.3e}{ours_s:>12.3e}"
                f"{report.ratio:>10,.0f}x{target:>8,}x{2 * target:>9,}x"
                f"{met:>5}   {report.baseline_rows:>7,}/{report.rows:,}"
            )
        else:
            print(
                f"{config:<14}{'-':>15}{ours_s:>12.3e}{'-':>11}"
                f"{target:>8,}x{2 * target:>9,}x{'-':>5}   {'-':>7}/{report.rows:,}"
            )
    print()
    print(f"agreement on the baseline's examples (|ours - baseline| <= {TOLERANCE:g} where ours < {BASELINE_CAP:g}):")
    for report, _ in reports:
        config = f"C={report.num_classes}, k={report.k}"
        if report.max_deviation is not None:
            verdict = "ok" if report.agrees else f"FAIL: {report.disagreements} examples disagree"
            certified = int(round(report.certified_fraction * report.rows))
            print(
                f"  {config:<14} max deviation {report.max_deviation:.2e} over "
                f"{report.baseline_rows:,} examples: {verdict} ({certified:,} of all "
                f"{report.rows:,} rows with R > 0)"
            )
        for note in report.notes:
            print(f"  {config:<14} note: {note}")
    failed = any(not report.agrees or report.ratio is None for report, _ in reports)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
