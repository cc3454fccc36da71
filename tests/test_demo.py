"""`topk-certify demo --smoke`: the whole pipeline (train, certify, analyze), in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

from topk_certify.digits import SMOKE_EXAMPLES, load_digits_split  # noqa: E402
from topk_certify.formats.table import load_results  # noqa: E402

COLUMNS = ["idx", "label", "radius@1", "radius@3", "radius@5", "time"]


def run(*args, timeout=120):
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "topk_certify", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run, then a second one in the same directory."""
    out = tmp_path_factory.mktemp("demo")
    first, seconds = run("demo", "--smoke", "--out", out)
    assert first.returncode == 0, first.stderr
    mtime = os.stat(out / "model.pt").st_mtime_ns
    table = (out / "certify.tsv").read_text()
    second, seconds2 = run("demo", "--smoke", "--out", out)
    assert second.returncode == 0, second.stderr
    return {
        "out": out,
        "first": first,
        "seconds": seconds,
        "second": second,
        "seconds2": seconds2,
        "mtime": mtime,
        "table": table,
    }


def test_smoke_run_writes_everything_within_a_minute(smoke):
    out, first = smoke["out"], smoke["first"]
    assert smoke["seconds"] < 60, f"the smoke demo took {smoke['seconds']:.0f} s"
    assert "training" in first.stdout
    lines = (out / "certify.tsv").read_text().splitlines()
    assert lines[0].split("\t") == COLUMNS
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == SMOKE_EXAMPLES
    assert sorted(int(row[0]) for row in rows) == list(range(SMOKE_EXAMPLES))
    png = out / "certified_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "counts.txt").is_file()
    # it says where the files are
    for name in ("model.pt", "data.npz", "certify.tsv", "counts.txt", "certified_accuracy.png"):
        assert str(out / name) in first.stdout
    # a progress bar while sampling (tqdm on stderr)
    assert "samples" in first.stderr


def test_smoke_table_is_printed_and_sensible(smoke):
    out, first = smoke["out"], smoke["first"]
    lines = first.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["radius"])
    assert lines[start].split() == ["radius", "top-1", "top-3", "top-5"]
    at_zero = [float(v) for v in lines[start + 1].split()[1:]]
    # the table is the analysis of the file the run wrote
    res = load_results(str(out / "certify.tsv"))
    expected = [100 * np.mean(res.radius[:, m] > 0) for m in range(3)]
    assert at_zero == pytest.approx(expected, abs=0.051)
    # a model trained with noise certifies most digits, and top-k grows with k
    assert at_zero[0] > 50
    assert at_zero[0] <= at_zero[1] <= at_zero[2]
    assert np.all(res.radius[:, 0] <= res.radius[:, 1] + 1e-12)
    assert np.all(res.radius[:, 1] <= res.radius[:, 2] + 1e-12)
    assert np.mean(res.radius[:, 2] > 0.25) > 0.3


def test_second_run_reuses_the_cached_model_and_rows(smoke):
    out, second = smoke["out"], smoke["second"]
    assert "using the cached model" in second.stdout
    assert "training" not in second.stdout
    assert os.stat(out / "model.pt").st_mtime_ns == smoke["mtime"]
    assert (out / "certify.tsv").read_text() == smoke["table"]  # finished rows kept, not redone


def test_saved_model_and_data_work_with_certify(smoke, tmp_path):
    """`topk-certify certify --model DIR/model.pt --data DIR/data.npz` reproduces the demo's
    radii (same seed, n and batch size)."""
    out = smoke["out"]
    with np.load(out / "data.npz") as data:
        x, y = data["x"], data["y"]
    assert x.shape == (SMOKE_EXAMPLES, 1, 8, 8) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    _, _, x_test, y_test = load_digits_split(0)
    np.testing.assert_array_equal(x, x_test[:SMOKE_EXAMPLES])
    np.testing.assert_array_equal(y, y_test[:SMOKE_EXAMPLES])
    again = tmp_path / "again.tsv"
    done, _ = run(
        "certify",
        "--model",
        out / "model.pt",
        "--data",
        out / "data.npz",
        "--sigma",
        "0.5",
        "--k",
        "1",
        "3",
        "5",
        "--n",
        "500",
        "--batch-size",
        "1000",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "-o",
        again,
    )
    assert done.returncode == 0, done.stderr
    mine = load_results(str(again))
    demo = load_results(str(out / "certify.tsv"))
    np.testing.assert_array_equal(mine.idx, demo.idx)
    np.testing.assert_array_equal(mine.radius, demo.radius)


def test_other_settings_retrain_and_recertify(smoke, tmp_path):
    out = tmp_path / "other"
    first, _ = run("demo", "--smoke", "--out", out, "--no-progress", "--n", "200")
    assert first.returncode == 0, first.stderr
    mtime = os.stat(out / "model.pt").st_mtime_ns
    # another n: same model, but the certification starts afresh
    second, _ = run("demo", "--smoke", "--out", out, "--no-progress", "--n", "300")
    assert second.returncode == 0, second.stderr
    assert "using the cached model" in second.stdout and "resuming" not in second.stdout
    assert os.stat(out / "model.pt").st_mtime_ns == mtime
    assert "n=300" in second.stdout
    # another sigma: a new model
    third, _ = run("demo", "--smoke", "--out", out, "--no-progress", "--n", "300", "--sigma", "0.25")
    assert third.returncode == 0, third.stderr
    assert "training" in third.stdout and "sigma=0.25" in third.stdout
    assert len((out / "certify.tsv").read_text().splitlines()) == SMOKE_EXAMPLES + 1


def test_bad_options_are_one_line(tmp_path):
    for args, needle in ((["--sigma", "-1"], "--sigma"), (["--n", "0"], "--n")):
        done, _ = run("demo", "--smoke", "--out", tmp_path / "bad", "--no-progress", *args)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr
        assert "Traceback" not in done.stderr


def test_adaptive_smoke_reports_the_samples_and_time_saved(smoke, tmp_path):
    """--adaptive beside a finished fixed run: its own files, the cached model, and the
    samples and time per digit of both protocols."""
    out = tmp_path / "adaptive"
    shutil.copytree(smoke["out"], out)
    done, _ = run("demo", "--smoke", "--out", out, "--no-progress", "--adaptive")
    assert done.returncode == 0, done.stderr
    assert "using the cached model" in done.stdout
    assert (out / "certify.tsv").read_text() == smoke["table"]  # the fixed run is kept
    lines = (out / "certify_adaptive.tsv").read_text().splitlines()
    assert lines[0].split("\t") == COLUMNS[:-1] + ["n", "time"]
    res = load_results(str(out / "certify_adaptive.tsv"))
    assert res.num_examples == SMOKE_EXAMPLES
    assert np.all((res.n >= 1) & (res.n <= 500))
    assert f"samples: {int(res.n.sum()):,} in all" in done.stdout
    assert "fixed run at n = 500 draws 30,000" in done.stdout
    assert "time per digit:" in done.stdout and "ms fixed (n=500)" in done.stdout
    assert (out / "certified_accuracy_adaptive.png").is_file()
