"""Speed of `certify_counts` on synthetic counts, against the paper's per-example algorithm.

`run_benchmark` draws realistic count rows from a seed (a dominant label, a long tail),
times `certify_counts` on all of them (one warm-up call, then the best of `repeat` calls),
and, when scipy is importable, times the paper authors' algorithm (`_paper_baseline`: scalar
scipy Beta quantiles, bisection to 1e-5 in [0, 10]) one example at a time on the first
`baseline_rows` rows in the same run, so their ratio is measured under one machine load. It
also checks that the two agree on those rows. numpy only; scipy is optional.

    from topk_certify.benchmark import run_benchmark
    print(run_benchmark(num_classes=10, k=3, n=100_000, rows=100_000).format())
"""

from __future__ import annotations

import json
import math
import numbers
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

__all__ = ["BenchmarkReport", "run_benchmark", "synthetic_counts", "BASELINE_CAP", "TOLERANCE"]

BOUND = "simuem"  # the paper's bounds, the only ones the baseline implements
# The baseline bisects [0, 10] down to an interval of at most 1e-5 and keeps its lower end;
# on top of that its scipy quantiles and ours may differ in the last bits.
BASELINE_CAP = 10.0
TOLERANCE = 2e-5
ROUNDING = 1e-9
# Rows the baseline runs before a time budget may stop it, so its mean is not one row's.
MIN_BASELINE_ROWS = 10
WARMUP_ROWS = 1000
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class BenchmarkReport:
    """What `run_benchmark` measured. Times are per example (one count row).

    Attributes:
        num_classes, k, n, rows, sigma, alpha, seed, repeat: the settings of the run.
        threads: the rayon pool size asked for; None = the default pool of this process.
        pool: the pool in words (how many threads, and why).
        seconds: best of `repeat` wall-clock seconds of one `certify_counts` call on all rows.
        us_per_example: microseconds per example (seconds / rows * 1e6).
        examples_per_second: 1e6 / us_per_example.
        certified_fraction: share of the rows with a radius > 0.
        baseline_rows: rows the baseline ran (0 when it did not run).
        baseline_us_per_example: the baseline's mean microseconds per example, or None.
        ratio: baseline_us_per_example / us_per_example, or None.
        max_deviation: max |ours - baseline| over the baseline's rows where ours < 10, or None.
        disagreements: baseline rows outside the tolerance (see `TOLERANCE`), or None.
        notes: sentences on what was left out and why (no scipy, no baseline rows).
    """

    num_classes: int
    k: int
    n: int
    rows: int
    sigma: float
    alpha: float
    seed: int
    repeat: int
    threads: Optional[int]
    pool: str
    seconds: float
    us_per_example: float
    examples_per_second: float
    certified_fraction: float
    baseline_rows: int = 0
    baseline_us_per_example: Optional[float] = None
    ratio: Optional[float] = None
    max_deviation: Optional[float] = None
    disagreements: Optional[int] = None
    notes: Tuple[str, ...] = ()

    @property
    def agrees(self) -> bool:
        """False only when the baseline ran and some row disagrees with certify_counts."""
        return not self.disagreements

    def format(self) -> str:
        """The report as printed by `topk-certify bench`."""
        lines = [
            f"certify_counts: C = {self.num_classes}, k = {self.k}, n = {self.n:,}, sigma = {self.sigma:g}, "
            f"alpha = {self.alpha:g}, bound = {BOUND}",
            f"{self.rows:,} synthetic rows (seed {self.seed}), {100 * self.certified_fraction:.1f}% certified; "
            f"threads: {self.pool}",
            f"  certify_counts  {self.us_per_example:12,.3f} us/example  {self.examples_per_second:14,.0f} examples/s"
            f"  (best of {self.repeat})",
        ]
        if self.baseline_us_per_example is not None and self.ratio is not None:
            lines.append(
                f"  paper (scipy)   {self.baseline_us_per_example:12,.3f} us/example  "
                f"{1e6 / self.baseline_us_per_example:14,.1f} examples/s  (mean of {self.baseline_rows:,} rows)"
            )
            lines.append(f"  ratio           {self.ratio:12,.0f}x  (paper / certify_counts, measured in this run)")
            verdict = "ok" if self.agrees else f"FAIL: {self.disagreements} rows disagree"
            lines.append(
                f"  agreement: max |ours - paper| = {self.max_deviation:.2e} where ours < {BASELINE_CAP:g} "
                f"(allowed {TOLERANCE:g}) over {self.baseline_rows:,} rows: {verdict}"
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def run_benchmark(
    num_classes: int,
    k: int,
    n: int,
    rows: int,
    threads: Optional[int] = None,
    baseline_rows: int = 100,
    alpha: float = 0.001,
    sigma: float = 0.25,
    seed: int = 0,
    repeat: int = 5,
    baseline_seconds: Optional[float] = None,
) -> BenchmarkReport:
    """Times `certify_counts` (top-`k` of `num_classes` labels, `n` samples a row) on `rows`
    synthetic rows drawn from `seed`, and the paper's algorithm on the first `baseline_rows`
    of them (when scipy is importable; 0 skips it), in this one run.

    threads: the size of rayon's pool; None uses this process's default pool. A pool cannot
        be resized once started, so a given size is timed in a child process started with
        RAYON_NUM_THREADS set (the start itself is not timed).
    baseline_seconds: stop the baseline once this much time has passed (after at least
        10 rows, or all of them when fewer); None runs all `baseline_rows`.
    """
    num_classes = _check_int("num_classes", num_classes, minimum=2)
    k = _check_int("k", k, minimum=1)
    if k >= num_classes:
        raise ValueError(f"k must be below num_classes (1 <= k < {num_classes}), got {k}")
    n = _check_int("n", n, minimum=1, maximum=INT64_MAX)
    rows = _check_int("rows", rows, minimum=1)
    if threads is not None:
        threads = _check_int("threads", threads, minimum=1, allowed="None or an int >= 1")
    baseline_rows = _check_int("baseline_rows", baseline_rows, minimum=0)
    alpha = _check_real("alpha", alpha, "a number in the open interval (0, 1)", lambda v: 0.0 < v < 1.0)
    sigma = _check_real("sigma", sigma, "a finite positive number", lambda v: math.isfinite(v) and v > 0)
    seed = _check_int("seed", seed, minimum=0)
    repeat = _check_int("repeat", repeat, minimum=1)
    if baseline_seconds is not None:
        baseline_seconds = _check_real(
            "baseline_seconds",
            baseline_seconds,
            "None or a finite positive number",
            lambda v: math.isfinite(v) and v > 0,
        )

    counts, labels = synthetic_counts(np.random.default_rng(seed), rows, num_classes, n)
    seconds, radii = _timed_certify(counts, labels, [k], sigma, alpha, threads, repeat)
    radii = radii[:, 0]
    us = seconds / rows * 1e6
    report = BenchmarkReport(
        num_classes=num_classes,
        k=k,
        n=n,
        rows=rows,
        sigma=sigma,
        alpha=alpha,
        seed=seed,
        repeat=repeat,
        threads=threads,
        pool=_pool_words(threads),
        seconds=seconds,
        us_per_example=us,
        examples_per_second=1e6 / us,
        certified_fraction=float(np.count_nonzero(radii > 0)) / rows,
    )
    return _with_baseline(report, counts, labels, radii, baseline_rows, baseline_seconds)


def _with_baseline(
    report: BenchmarkReport,
    counts: np.ndarray,
    labels: np.ndarray,
    radii: np.ndarray,
    baseline_rows: int,
    baseline_seconds: Optional[float],
) -> BenchmarkReport:
    """`report` with the paper's algorithm timed and compared on the first `baseline_rows`
    rows, or with a note saying why it did not run."""
    if baseline_rows == 0:
        return replace(report, notes=("baseline_rows = 0: the paper's algorithm was not run, so there is no ratio",))
    try:
        from . import _paper_baseline

        _paper_baseline.scipy_stats()
    except ImportError as exc:
        note = f"scipy is not importable ({exc}): the paper's algorithm was not run, so there is no ratio"
        return replace(report, notes=(note,))

    notes = []
    rows = report.rows
    take = min(baseline_rows, rows)
    if take < baseline_rows:
        notes.append(f"the baseline ran on all {rows:,} rows (baseline_rows = {baseline_rows:,} is more)")
    base_radii, base_seconds = _time_baseline(
        _paper_baseline.paper_radius,
        counts[:take],
        labels[:take],
        report.k,
        report.sigma,
        report.alpha,
        baseline_seconds,
    )
    if len(base_radii) < take:
        notes.append(f"the baseline stopped after {len(base_radii):,} rows (baseline_seconds = {baseline_seconds:g})")
    base_us = base_seconds / len(base_radii) * 1e6
    max_dev, bad = check_agreement(radii[: len(base_radii)], base_radii)
    return replace(
        report,
        baseline_rows=len(base_radii),
        baseline_us_per_example=base_us,
        ratio=base_us / report.us_per_example,
        max_deviation=max_dev,
        disagreements=bad,
        notes=tuple(notes),
    )


def synthetic_counts(
    rng: np.random.Generator, rows: int, num_classes: int, n: int, tail_spread: Optional[float] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Count rows of a plausible classifier under noise, and the label to certify in each:
    (int64 (rows, num_classes), int64 (rows,)).

    The top label's probability is mostly in 0.5-0.99 (75% of rows), sometimes in 0.99-0.99999
    (15%), sometimes below 0.5 (10%). The rest of the mass spreads over the other labels with
    log-normal weights (log-sd `tail_spread`, by default 1.5 up to 10 labels and 3 above: a
    long tail, most labels with zero counts at C = 1000). The certified label is the argmax
    of the counts in 80% of rows, the runner-up in 10%, a uniformly random label in 10%.
    """
    if tail_spread is None:
        tail_spread = 1.5 if num_classes <= 10 else 3.0
    kind = rng.random(rows)
    p_top = np.where(
        kind < 0.10,
        rng.uniform(0.15, 0.5, rows),
        np.where(kind < 0.85, 0.5 + 0.49 * rng.beta(2.0, 1.5, rows), 1.0 - 10.0 ** rng.uniform(-5.0, -2.0, rows)),
    )
    tail = np.exp(tail_spread * rng.standard_normal((rows, num_classes - 1)))
    tail *= ((1.0 - p_top) / tail.sum(axis=1))[:, None]
    probs = np.concatenate([p_top[:, None], tail], axis=1)
    # The top label at a random position in each row.
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


def check_agreement(ours: np.ndarray, baseline: np.ndarray) -> Tuple[float, int]:
    """(max |ours - baseline| where ours < 10, rows outside the tolerance). Where ours >= 10
    the baseline, capped at 10, must be within the tolerance of 10."""
    ours = np.asarray(ours, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    below = ours < BASELINE_CAP
    dev = np.abs(ours[below] - baseline[below])
    max_dev = float(dev.max()) if dev.size else 0.0
    bad = int(np.count_nonzero(~(dev <= TOLERANCE + ROUNDING)))
    bad += int(np.count_nonzero(~(baseline[~below] >= BASELINE_CAP - TOLERANCE - ROUNDING)))
    bad += int(np.count_nonzero(~np.isfinite(ours)))
    return max_dev, bad


# ----------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------


def _timed_certify(
    counts: np.ndarray,
    labels: np.ndarray,
    ks: List[int],
    sigma: float,
    alpha: float,
    threads: Optional[int],
    repeat: int = 5,
) -> Tuple[float, np.ndarray]:
    """(best seconds of `repeat` certify_counts calls on all rows after a warm-up, radii (E, len(ks)))
    in a rayon pool of `threads` threads (None: this process's pool)."""
    if threads is None:
        return _time_here(counts, labels, ks, sigma, alpha, repeat)
    return _time_in_child(counts, labels, ks, sigma, alpha, threads, repeat)


def _time_here(
    counts: np.ndarray, labels: np.ndarray, ks: List[int], sigma: float, alpha: float, repeat: int
) -> Tuple[float, np.ndarray]:
    from .stats import certify_counts

    warm = min(len(labels), WARMUP_ROWS)
    certify_counts(counts[:warm], labels[:warm], k=ks, sigma=sigma, alpha=alpha, bound=BOUND)
    best, radii = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        radii = certify_counts(counts, labels, k=ks, sigma=sigma, alpha=alpha, bound=BOUND)
        best = min(best, time.perf_counter() - start)
    assert radii is not None  # repeat >= 1: run_benchmark checks it, the child gets it from there
    return best, radii


def _time_in_child(
    counts: np.ndarray, labels: np.ndarray, ks: List[int], sigma: float, alpha: float, threads: int, repeat: int
) -> Tuple[float, np.ndarray]:
    """_time_here in a new interpreter whose rayon pool has `threads` threads."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(threads)
    # The child must import this same copy of the package.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="topk-certify-bench-") as tmp:
        np.save(os.path.join(tmp, "counts.npy"), counts)
        np.save(os.path.join(tmp, "labels.npy"), labels)
        job = json.dumps(dict(dir=tmp, ks=list(ks), sigma=sigma, alpha=alpha, repeat=repeat))
        code = "import sys; from topk_certify.benchmark import _child_main; _child_main(sys.argv[1])"
        done = subprocess.run([sys.executable, "-c", code, job], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise RuntimeError(f"the benchmark's child process (RAYON_NUM_THREADS={threads}) failed: {last}")
        seconds = float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
        radii = np.load(os.path.join(tmp, "radii.npy"))
    return seconds, radii


def _child_main(job_json: str) -> None:
    job = json.loads(job_json)
    counts = np.load(os.path.join(job["dir"], "counts.npy"))
    labels = np.load(os.path.join(job["dir"], "labels.npy"))
    seconds, radii = _time_here(counts, labels, job["ks"], job["sigma"], job["alpha"], job["repeat"])
    np.save(os.path.join(job["dir"], "radii.npy"), radii)
    print(json.dumps({"seconds": seconds}))


def _time_baseline(
    paper_radius: Callable[[np.ndarray, Any, int, float, float], float],
    counts: np.ndarray,
    labels: np.ndarray,
    k: int,
    sigma: float,
    alpha: float,
    budget_s: Optional[float],
) -> Tuple[np.ndarray, float]:
    """(the baseline's radii, its total seconds) row by row, after one untimed warm-up row."""
    paper_radius(counts[0], labels[0], k, sigma, alpha)
    radii = []
    start = time.perf_counter()
    for row, label in zip(counts, labels):
        radii.append(paper_radius(row, label, k, sigma, alpha))
        if budget_s is not None and len(radii) >= MIN_BASELINE_ROWS and time.perf_counter() - start >= budget_s:
            break
    return np.array(radii, dtype=float), time.perf_counter() - start


def _pool_words(threads: Optional[int]) -> str:
    if threads is not None:
        return f"{threads} (a child process with RAYON_NUM_THREADS={threads})"
    env = os.environ.get("RAYON_NUM_THREADS")
    if env:
        return f"rayon's default pool, RAYON_NUM_THREADS={env}"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"rayon's default pool, one thread per usable CPU ({usable} usable)"


def describe_platform() -> str:
    """One line: Python, numpy, scipy (if any) and topk_certify versions."""
    from . import __version__

    try:
        import scipy

        scipy_version = scipy.__version__
    except ImportError:
        scipy_version = "not installed"
    return (
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy_version}, topk_certify {__version__}"
    )


# ----------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------


def _check_int(
    name: str, value: Any, minimum: int, maximum: Optional[int] = None, allowed: Optional[str] = None
) -> int:
    allowed = allowed or (f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


def _check_real(name: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    number = float(value)
    if not ok(number):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number
