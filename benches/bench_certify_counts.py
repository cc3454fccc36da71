"""Speed of `topk_certify.certify_counts` against the paper's per-example Python code.

Run from the repository root:

    python benches/bench_certify_counts.py          # full run (about a minute)
    python benches/bench_certify_counts.py --quick  # short run

For each configuration (C labels, top-k; n = 100,000 samples, sigma = 0.25, alpha = 0.001,
simuem bounds) it draws realistic Monte Carlo count rows, times the baseline of
`_paper_baseline.paper_radius` (the authors' algorithm: C scalar Beta quantiles, bisection to
1e-5 in [0, 10]) one example at a time for a few seconds, and times `certify_counts` on many
rows at once (best of several runs), all in this one process. It prints the seconds per example
of both, their ratio and the target ratio, and checks that the two agree on every example the
baseline ran: |ours - baseline| <= 2e-5 (plus rounding) where ours < 10; where ours >= 10 the
baseline, capped at 10, must be within 2e-5 of 10. Exits 1 when they disagree.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import scipy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paper_baseline import paper_radius  # noqa: E402

N_SAMPLES = 100_000
SIGMA = 0.25
ALPHA = 0.001
# The baseline bisects [0, 10] down to an interval of at most 1e-5 and keeps its lower end.
BASELINE_CAP = 10.0
TOLERANCE = 2e-5
ROUNDING = 1e-9

# (C, k, rows for certify_counts, rows for --quick, target ratio)
CONFIGS = [
    (10, 3, 100_000, 20_000, 5_000),
    (1000, 5, 20_000, 4_000, 50_000),
]


def make_counts(rng, rows, num_classes, n, tail_spread):
    """Count rows of a plausible classifier under noise, and the label to certify in each.

    The top label's probability is mostly in 0.5-0.99 (75% of rows), sometimes in 0.99-0.99999
    (15%), sometimes below 0.5 (10%). The rest of the mass spreads over the other labels with
    log-normal weights (log-sd `tail_spread`: a wide spread gives a long tail, most labels
    with zero counts at C = 1000). The certified label is the argmax of the counts in 80% of
    rows, the runner-up in 10%, a uniformly random label in 10%.
    """
    kind = rng.random(rows)
    p_top = np.where(
        kind < 0.10,
        rng.uniform(0.15, 0.5, rows),
        np.where(kind < 0.85, 0.5 + 0.49 * rng.beta(2.0, 1.5, rows),
                 1.0 - 10.0 ** rng.uniform(-5.0, -2.0, rows)),
    )
    tail = np.exp(tail_spread * rng.standard_normal((rows, num_classes - 1)))
    tail *= ((1.0 - p_top) / tail.sum(axis=1))[:, None]
    probs = np.concatenate([p_top[:, None], tail], axis=1)
    # Put the top label at a random position in each row.
    shift = rng.integers(num_classes, size=rows)
    cols = (np.arange(num_classes)[None, :] - shift[:, None]) % num_classes
    probs = np.take_along_axis(probs, cols, axis=1)
    probs /= probs.sum(axis=1, keepdims=True)
    counts = np.ascontiguousarray(rng.multinomial(n, probs), dtype=np.int64)

    order = np.argsort(counts, axis=1)
    labels = order[:, -1].copy()
    pick = rng.random(rows)
    runner_up = pick < 0.10
    labels[runner_up] = order[runner_up, -2]
    random_label = pick >= 0.90
    labels[random_label] = rng.integers(num_classes, size=int(random_label.sum()))
    return counts, np.ascontiguousarray(labels, dtype=np.int64)


def time_baseline(counts, labels, k, budget_s, min_rows):
    """Run the baseline row by row until `budget_s` seconds have passed (at least `min_rows`)."""
    radii = []
    start = time.perf_counter()
    for row, label in zip(counts, labels):
        radii.append(paper_radius(row, label, k, SIGMA, ALPHA))
        if len(radii) >= min_rows and time.perf_counter() - start >= budget_s:
            break
    elapsed = time.perf_counter() - start
    return np.array(radii), elapsed / len(radii)


def radii_of(result):
    """The radii of a `certify_counts` result (an array, or an object holding one)."""
    for name in ("radius", "radii"):
        if hasattr(result, name):
            return np.asarray(getattr(result, name), dtype=float)
    return np.asarray(result, dtype=float)


def time_ours(certify_counts, counts, labels, k, repeats):
    """Best of `repeats` timed calls on all rows (after one warm-up call), and the radii."""
    certify_counts(counts[:1000], labels[:1000], k=k, sigma=SIGMA, alpha=ALPHA, bound="simuem")
    best = np.inf
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = certify_counts(counts, labels, k=k, sigma=SIGMA, alpha=ALPHA, bound="simuem")
        best = min(best, time.perf_counter() - start)
    return radii_of(result), best / len(labels)


def check_agreement(ours, baseline):
    """Max deviation where ours < 10, and the number of examples outside the tolerance."""
    ours = ours[: len(baseline)]
    below = ours < BASELINE_CAP
    dev = np.abs(ours[below] - baseline[below])
    max_dev = float(dev.max()) if dev.size else 0.0
    bad = int(np.count_nonzero(~(dev <= TOLERANCE + ROUNDING)))
    # Where ours reaches the cap the baseline must have climbed to within 2e-5 of it.
    bad += int(np.count_nonzero(~(baseline[~below] >= BASELINE_CAP - TOLERANCE - ROUNDING)))
    bad += int(np.count_nonzero(~np.isfinite(ours)))
    return max_dev, bad


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
    parser.add_argument("--baseline-seconds", type=float, default=None,
                        help="seconds of baseline per configuration (default 7, --quick 1)")
    args = parser.parse_args(argv)
    budget_s = args.baseline_seconds or (1.0 if args.quick else 7.0)
    repeats = 3 if args.quick else 7

    try:
        import topk_certify
        from topk_certify import certify_counts
        import_error = None
        ours_version = topk_certify.__version__
    except (ImportError, AttributeError) as exc:  # extension not built: time the baseline only
        certify_counts, import_error, ours_version = None, exc, "not importable"

    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, topk_certify {ours_version}")
    print(threads_line())
    print(f"n = {N_SAMPLES:,}, sigma = {SIGMA}, alpha = {ALPHA}, bound = simuem, "
          f"baseline ~{budget_s:g} s per configuration, ours best of {repeats}"
          + (" (--quick)" if args.quick else ""))
    print()

    rng = np.random.default_rng(args.seed)
    rows_out = []
    failed = False
    for num_classes, k, rows, quick_rows, target in CONFIGS:
        rows = quick_rows if args.quick else rows
        tail_spread = 1.5 if num_classes <= 10 else 3.0
        counts, labels = make_counts(rng, rows, num_classes, N_SAMPLES, tail_spread)
        config = f"C={num_classes}, k={k}"

        base_radii, base_s = time_baseline(counts, labels, k, budget_s, min_rows=10)
        line = {"config": config, "base_rows": len(base_radii), "base_s": base_s,
                "certified": int(np.count_nonzero(base_radii > 0)), "target": target}
        if certify_counts is not None:
            ours_radii, ours_s = time_ours(certify_counts, counts, labels, k, repeats)
            if ours_radii.shape != (rows,):
                print(f"{config}: certify_counts returned shape {ours_radii.shape}, "
                      f"expected ({rows},)")
                failed = True
                continue
            max_dev, bad = check_agreement(ours_radii, base_radii)
            line.update(ours_rows=rows, ours_s=ours_s, ratio=base_s / ours_s,
                        max_dev=max_dev, bad=bad)
            failed |= bad > 0
        rows_out.append(line)

    header = (f"{'config':<14}{'baseline s/ex':>15}{'ours s/ex':>12}{'ratio':>11}"
              f"{'target':>9}{'aim (2x)':>10}{'met':>5}   {'rows base/ours':>15}")
    print(header)
    print("-" * len(header))
    for line in rows_out:
        if "ratio" in line:
            met = "yes" if line["ratio"] >= line["target"] else "no"
            print(f"{line['config']:<14}{line['base_s']:>15.3e}{line['ours_s']:>12.3e}"
                  f"{line['ratio']:>10,.0f}x{line['target']:>8,}x{2 * line['target']:>9,}x"
                  f"{met:>5}   {line['base_rows']:>7,}/{line['ours_rows']:,}")
        else:
            print(f"{line['config']:<14}{line['base_s']:>15.3e}{'-':>12}{'-':>11}"
                  f"{line['target']:>8,}x{2 * line['target']:>9,}x{'-':>5}   "
                  f"{line['base_rows']:>7,}/-")
    print()
    print(f"agreement on the baseline's examples (|ours - baseline| <= {TOLERANCE:g} where "
          f"ours < {BASELINE_CAP:g}):")
    for line in rows_out:
        if "max_dev" in line:
            verdict = "ok" if line["bad"] == 0 else f"FAIL: {line['bad']} examples disagree"
            print(f"  {line['config']:<14} max deviation {line['max_dev']:.2e} over "
                  f"{line['base_rows']:,} examples ({line['certified']:,} with R > 0): {verdict}")
    if import_error is not None:
        print(f"  not checked: topk_certify.certify_counts is not importable ({import_error})")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
