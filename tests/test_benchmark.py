"""`topk_certify.benchmark`: argument checks, a report that adds up, the paper's baseline
agreeing with certify_counts, and a run without scipy. No test asserts a speed."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest

import topk_certify
from topk_certify import benchmark
from topk_certify.benchmark import check_agreement, run_benchmark, synthetic_counts

SMALL = dict(num_classes=10, k=3, n=10_000, rows=500)


def _small(**changes):
    return {**SMALL, **changes}


@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(num_classes=1), ValueError, r"num_classes must be an int >= 2, got 1"),
        (dict(num_classes=10.0), TypeError, r"num_classes must be an int >= 2, got float"),
        (dict(num_classes=True), TypeError, r"num_classes must be an int >= 2, got bool"),
        (dict(k=0), ValueError, r"k must be an int >= 1, got 0"),
        (dict(k=10), ValueError, r"k must be below num_classes \(1 <= k < 10\), got 10"),
        (dict(k=[1, 2]), TypeError, r"k must be an int"),
        (dict(n=0), ValueError, r"n must be an int in \[1, 9223372036854775807\], got 0"),
        (dict(n=2**63), ValueError, r"n must be an int in \[1, "),
        (dict(rows=0), ValueError, r"rows must be an int >= 1, got 0"),
        (dict(threads=0), ValueError, r"threads must be None or an int >= 1, got 0"),
        (dict(threads="2"), TypeError, r"threads must be None or an int >= 1, got str"),
        (dict(baseline_rows=-1), ValueError, r"baseline_rows must be an int >= 0, got -1"),
        (dict(alpha=0.0), ValueError, r"alpha must be a number in the open interval \(0, 1\), got 0.0"),
        (dict(alpha=1), ValueError, r"alpha must be a number in the open interval \(0, 1\)"),
        (dict(alpha="0.01"), TypeError, r"alpha must be a number"),
        (dict(sigma=0.0), ValueError, r"sigma must be a finite positive number, got 0.0"),
        (dict(sigma=float("inf")), ValueError, r"sigma must be a finite positive number, got inf"),
        (dict(sigma=None), TypeError, r"sigma must be a finite positive number, got NoneType"),
        (dict(seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
        (dict(seed=1.5), TypeError, r"seed must be an int >= 0, got float"),
        (dict(repeat=0), ValueError, r"repeat must be an int >= 1, got 0"),
        (dict(baseline_seconds=0.0), ValueError, r"baseline_seconds must be None or a finite positive number"),
    ],
)
def test_bad_arguments_are_named(changes, error, message):
    with pytest.raises(error, match=message):
        run_benchmark(**_small(**changes))


def test_numpy_integers_are_accepted():
    report = run_benchmark(
        num_classes=np.int64(5), k=np.int32(2), n=np.uint16(1000), rows=np.int64(50), baseline_rows=0, repeat=1
    )
    assert (report.num_classes, report.k, report.n, report.rows) == (5, 2, 1000, 50)
    assert all(type(v) is int for v in (report.num_classes, report.k, report.n, report.rows))


def test_report_numbers_are_positive_and_consistent():
    pytest.importorskip("scipy")
    report = run_benchmark(**_small(), baseline_rows=20, repeat=2, seed=5, alpha=0.01, sigma=0.5)
    assert (report.num_classes, report.k, report.n, report.rows) == (10, 3, 10_000, 500)
    assert (report.alpha, report.sigma, report.seed, report.repeat, report.threads) == (0.01, 0.5, 5, 2, None)
    assert report.seconds > 0 and report.us_per_example > 0 and report.examples_per_second > 0
    assert report.us_per_example == pytest.approx(report.seconds / report.rows * 1e6, rel=1e-12)
    assert report.examples_per_second == pytest.approx(1e6 / report.us_per_example, rel=1e-12)
    assert 0.0 < report.certified_fraction <= 1.0
    assert report.baseline_rows == 20
    assert report.baseline_us_per_example > 0
    assert report.ratio == pytest.approx(report.baseline_us_per_example / report.us_per_example, rel=1e-12)
    assert report.disagreements == 0 and report.agrees
    assert 0.0 <= report.max_deviation <= benchmark.TOLERANCE
    assert report.notes == ()
    text = report.format()
    assert f"{report.us_per_example:,.3f} us/example" in text
    assert f"{report.ratio:,.0f}x" in text
    assert "(mean of 20 rows)" in text and ": ok" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.ratio = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("num_classes, k, rows", [(10, 3, 60), (2, 1, 40), (1000, 5, 4)])
def test_baseline_radii_agree_with_certify_counts(num_classes, k, rows):
    """The paper's bisection keeps the lower end of an interval of at most 1e-5 in [0, 10]:
    it is at most 1e-5 below the exact radius, never above it (beyond rounding)."""
    pytest.importorskip("scipy")
    from topk_certify._paper_baseline import paper_radius

    counts, labels = synthetic_counts(np.random.default_rng(11), rows, num_classes, 100_000)
    ours = topk_certify.certify_counts(counts, labels, k=k, sigma=0.25, alpha=0.001)
    base = np.array([paper_radius(row, label, k, 0.25, 0.001) for row, label in zip(counts, labels)])
    assert (ours > 0).any()
    assert np.all(ours < benchmark.BASELINE_CAP)
    gap = ours - base
    assert gap.min() >= -1e-9, gap.min()
    assert gap.max() <= 1e-5 + 1e-9, gap.max()
    np.testing.assert_array_equal(ours == 0, base == 0)
    # And run_benchmark, on the same seed, checks the same rows the same way.
    report = run_benchmark(num_classes, k, 100_000, rows, baseline_rows=rows, seed=11, repeat=1)
    assert report.baseline_rows == rows and report.disagreements == 0
    assert report.max_deviation == pytest.approx(float(np.abs(gap).max()), rel=1e-12, abs=1e-15)


def test_check_agreement_counts_rows_outside_the_tolerance():
    ours = np.array([1.0, 0.5, 12.0, 11.0, 0.0])
    base = np.array([1.0 - 9e-6, 0.5 - 3e-5, 10.0 - 1e-5, 9.9, 0.0])
    max_dev, bad = check_agreement(ours, base)
    assert max_dev == pytest.approx(3e-5)
    assert bad == 2  # 0.5 is 3e-5 off; 11.0's baseline should have climbed to ~10
    assert check_agreement(ours[[0, 2, 4]], base[[0, 2, 4]])[1] == 0


def test_synthetic_counts_are_rows_of_n_from_the_seed():
    counts, labels = synthetic_counts(np.random.default_rng(3), 400, 20, 5000)
    assert counts.shape == (400, 20) and counts.dtype == np.int64 and labels.dtype == np.int64
    np.testing.assert_array_equal(counts.sum(axis=1), 5000)
    assert labels.min() >= 0 and labels.max() < 20
    top = counts.max(axis=1)
    assert np.median(top / 5000) > 0.5  # a dominant label in most rows
    assert 0.6 < np.mean(labels == counts.argmax(axis=1)) < 0.95  # mostly the argmax, not always
    again, again_labels = synthetic_counts(np.random.default_rng(3), 400, 20, 5000)
    np.testing.assert_array_equal(counts, again)
    np.testing.assert_array_equal(labels, again_labels)


def test_without_scipy_there_is_no_ratio_and_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    report = run_benchmark(**_small(), baseline_rows=10, repeat=1)
    assert report.us_per_example > 0
    assert report.ratio is None and report.baseline_us_per_example is None and report.baseline_rows == 0
    assert report.max_deviation is None and report.disagreements is None and report.agrees
    assert len(report.notes) == 1 and "scipy is not importable" in report.notes[0]
    text = report.format()
    assert "paper (scipy)" not in text and "x  (paper / certify_counts" not in text
    assert "note: scipy is not importable" in text
    assert "scipy not installed" in benchmark.describe_platform()


def test_package_imports_without_scipy():
    code = (
        "import sys; sys.modules['scipy'] = None; sys.modules['scipy.stats'] = None\n"
        "import topk_certify, topk_certify.benchmark, topk_certify._paper_baseline, topk_certify.cli.bench\n"
        "try:\n    topk_certify._paper_baseline.paper_radius([5, 5], 0, 1, 0.25, 0.001)\n"
        "except ImportError:\n    print('ImportError only when called')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ImportError only when called"


def test_baseline_rows_zero_skips_the_baseline():
    report = run_benchmark(**_small(), baseline_rows=0, repeat=1)
    assert report.ratio is None and report.baseline_rows == 0
    assert report.notes == ("baseline_rows = 0: the paper's algorithm was not run, so there is no ratio",)


def test_threads_runs_in_a_pool_of_that_size_with_the_same_radii(monkeypatch):
    counts, labels = synthetic_counts(np.random.default_rng(2), 300, 10, 10_000)
    here_s, here = benchmark._timed_certify(counts, labels, [1, 3], 0.25, 0.001, None, 1)
    envs = []
    real_run = subprocess.run

    def recording_run(cmd, **kwargs):
        envs.append(kwargs.get("env"))
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(benchmark.subprocess, "run", recording_run)
    child_s, child = benchmark._timed_certify(counts, labels, [1, 3], 0.25, 0.001, 1, 1)
    assert len(envs) == 1 and envs[0]["RAYON_NUM_THREADS"] == "1"
    assert here_s > 0 and child_s > 0
    assert child.shape == (300, 2)
    np.testing.assert_array_equal(child, here)
    report = run_benchmark(**_small(), threads=1, baseline_rows=0, repeat=1)
    assert report.threads == 1 and "RAYON_NUM_THREADS=1" in report.pool


def _bench_parser():
    from topk_certify.cli import bench as cli_bench

    parser = argparse.ArgumentParser(prog="topk-certify")
    bench = parser.add_subparsers(dest="command").add_parser(cli_bench.NAME)
    cli_bench.add_arguments(bench)
    bench.set_defaults(handler=cli_bench.run)
    return parser


def test_cli_bench_prints_the_report(capsys):
    pytest.importorskip("scipy")
    args = _bench_parser().parse_args(
        ["bench", "--classes", "6", "--k", "2", "--n", "2000", "--rows", "300", "--baseline-rows", "5", "--seed", "4"]
    )
    assert (args.classes, args.k, args.n, args.rows, args.threads, args.baseline_rows, args.seed) == (
        6,
        2,
        2000,
        300,
        None,
        5,
        4,
    )
    args.handler(args)
    out = capsys.readouterr().out
    assert out.startswith("python ")
    assert "C = 6, k = 2, n = 2,000" in out and "300 synthetic rows (seed 4)" in out
    assert "us/example" in out and "(mean of 5 rows)" in out and "ratio" in out


@pytest.mark.parametrize("flag, value", [("--classes", "1"), ("--k", "0"), ("--threads", "0"), ("--rows", "x")])
def test_cli_bench_refuses_bad_flags(flag, value, capsys):
    with pytest.raises(SystemExit) as exited:
        _bench_parser().parse_args(["bench", flag, value])
    assert exited.value.code == 2
    assert f"argument {flag}: expected an int" in capsys.readouterr().err


def test_a_failing_child_process_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(benchmark.sys, "executable", shutil.which("false") or "/bin/false")
    with pytest.raises(RuntimeError, match=r"child process \(RAYON_NUM_THREADS=2\) failed: exit code 1"):
        run_benchmark(**_small(), threads=2, baseline_rows=0, repeat=1)
