"""End-to-end tests of `topk-certify predict`: its rows against predict_batch, abstentions,
resume after a kill, refusals (other settings, a certify run's files, k >= C), analyze on its
output, and torchrun. It shares certify's job, so what certify's tests check of that job
(locking, atomic files, model failures) is not repeated here."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import topk_certify  # noqa: E402
from topk_certify.cli.errors import EXIT_TERMINATED, Terminated  # noqa: E402
from topk_certify.cli.main import _interrupted  # noqa: E402
from topk_certify.formats.predictions import COLUMNS, load_predictions  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = str(HERE / "cli_models.py")
NUM = 12
# n = 300 at alpha = 0.001 and sigma = 0.5: some of these examples are answered, some abstain.
BASE = ["--sigma", "0.5", "--n", "300", "--batch-size", "250", "--seed", "3", "--no-progress"]


def cli(*args, env=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "topk_certify", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def torchrun(*args, timeout=240):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Inputs of the cli_models.Linear classifier and its clean labels, with two labels
    changed so that some sets miss the true label."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM, 1, 4, 4)).astype(np.float32)
    from cli_models import Linear

    with torch.no_grad():
        y = Linear()(torch.from_numpy(x)).argmax(1).numpy()
    y[[1, 5]] = (y[[1, 5]] + 2) % 5
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x=x, y=y)
    return path, x, y


def read_table(path):
    lines = Path(path).read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def without_time(path):
    return [row[:4] for row in read_table(path)[1]]


def expected_rows(x, y, indices, k, **keywords):
    """(idx, label, predict, correct) as predict_batch gives them on the same noise."""
    from cli_models import Linear

    res = topk_certify.predict_batch(Linear(), x[indices], k=k, indices=indices, **keywords)
    rows = []
    for j, i in enumerate(indices):
        labels = [int(v) for v in res.labels[j]]
        cell = "-1" if res.abstained[j] else ",".join(map(str, labels))
        correct = not res.abstained[j] and int(y[i]) in labels
        rows.append([str(i), str(int(y[i])), cell, "1" if correct else "0"])
    return rows, res


def test_rows_are_predict_batchs_on_the_same_seed(tmp_path, data):
    path, x, y = data
    out = tmp_path / "out.tsv"
    run = cli("predict", "--model", f"{MODELS}:linear", "--data", path, "--k", "2", *BASE, "-o", out)
    assert run.returncode == 0, run.stderr
    header, rows = read_table(out)
    assert header == list(COLUMNS) == ["idx", "label", "predict", "correct", "time"]
    expect, res = expected_rows(x, y, list(range(NUM)), 2, sigma=0.5, n=300, batch_size=250, seed=3)
    assert [row[:4] for row in rows] == expect
    # The case is not degenerate: answers and abstentions, right and wrong sets.
    assert 0 < res.abstained.sum() < NUM
    assert {row[3] for row in rows if row[2] != "-1"} == {"0", "1"}
    assert all(row[3] == "0" for row in rows if row[2] == "-1")
    assert all(float(row[4]) >= 0 for row in rows)
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    assert meta["kind"] == "predict" and meta["ks"] == [2] and meta["n"] == 300


def test_skip_and_max_keep_the_idx_and_the_noise_of_the_whole_data_set(tmp_path, data):
    path, x, y = data
    out = tmp_path / "out.tsv"
    args = ["--k", "1", "--skip", "3", "--max", "10", *BASE]
    run = cli("predict", "--model", f"{MODELS}:linear", "--data", path, *args, "-o", out)
    assert run.returncode == 0, run.stderr
    expect, _ = expected_rows(x, y, [0, 3, 6, 9], 1, sigma=0.5, n=300, batch_size=250, seed=3)
    assert without_time(out) == expect


def test_a_test_that_cannot_pass_abstains_on_every_example(tmp_path, data):
    """With n = 20 the smallest p-value is 2 / 2^20, far above alpha = 1e-9: every row is -1."""
    path, _, y = data
    out = tmp_path / "out.tsv"
    args = ["--k", "1", "--sigma", "0.5", "--n", "20", "--alpha", "1e-9", "--seed", "0", "--no-progress"]
    run = cli("predict", "--model", f"{MODELS}:linear", "--data", path, *args, "-o", out)
    assert run.returncode == 0, run.stderr
    assert without_time(out) == [[str(i), str(int(y[i])), "-1", "0"] for i in range(NUM)]


def test_analyze_prints_accuracy_and_abstention_rate_of_the_file(tmp_path, data):
    path, _, _ = data
    out = tmp_path / "out.tsv"
    run = cli("predict", "--model", f"{MODELS}:linear", "--data", path, "--k", "2", *BASE, "-o", out)
    assert run.returncode == 0, run.stderr
    rows = read_table(out)[1]
    right = sum(row[3] == "1" for row in rows)
    abstained = sum(row[2] == "-1" for row in rows)
    report = cli("analyze", out)
    assert report.returncode == 0, report.stderr
    text = report.stdout
    assert "top-2 sets" in text
    assert (
        f"accuracy (true label in the set; abstaining counts as wrong): {100 * right / NUM:.1f}% ({right} of {NUM})"
        in text
    )
    assert f"abstained: {100 * abstained / NUM:.1f}% ({abstained} of {NUM})" in text
    assert load_predictions(str(out)).abstained.sum() == abstained


def test_resume_after_a_kill_gives_the_rows_of_an_uninterrupted_run(tmp_path, data):
    path, _, _ = data
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    args = ["--model", f"{MODELS}:Slow", "--data", path, "--k", "2", *BASE, "--n", "100", "--batch-size", "100"]
    env = dict(os.environ, TOPK_CERTIFY_TEST_DELAY="0.08")
    assert cli("predict", *args, "-o", full, env=env).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "topk_certify", "predict", *map(str, args), "-o", str(part)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (part.exists() and part.read_text().count("\n") >= 4):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = part.read_text().count("\n") - 1
    assert 0 < done < NUM, "the kill should land in the middle of the run"
    with open(part, "a") as handle:
        handle.write("11\t1\t1,")  # a torn last line, as a kill during a write leaves
    again = cli("predict", *args, "-o", part, env=env)
    assert again.returncode == 2 and "--resume" in again.stderr
    run = cli("predict", *args, "-o", part, "--resume", env=env)
    assert run.returncode == 0, run.stderr
    assert without_time(part) == without_time(full)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, data):
    """A predict run and a certify run on the same data, stopped after 4 rows: {command: OUT}."""
    path, _, _ = data
    folder = tmp_path_factory.mktemp("stopped")
    outs = {}
    for command in ("predict", "certify"):
        out = folder / f"{command}.tsv"
        run = cli(command, "--model", f"{MODELS}:linear", "--data", path, "--k", "2", *BASE, "-o", out)
        assert run.returncode == 0, run.stderr
        out.write_text("".join(out.read_text().splitlines(keepends=True)[:5]))  # what a kill leaves
        outs[command] = out
    return outs


@pytest.fixture()
def finished(tmp_path, stopped):
    """Copies of the stopped runs' files in this test's folder: (predict OUT, certify OUT)."""
    copies = []
    for command in ("predict", "certify"):
        for suffix in ("", ".meta.json"):
            shutil.copyfile(str(stopped[command]) + suffix, str(tmp_path / f"{command}.tsv") + suffix)
        copies.append(tmp_path / f"{command}.tsv")
    return tuple(copies)


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "change, needle",
    [(["--alpha", "0.01"], "alpha"), (["--k", "3"], "ks"), (["--sigma", "0.25"], "sigma"), (["--n", "301"], "n:")],
)
def test_a_resume_with_other_settings_is_refused_and_touches_nothing(tmp_path, data, finished, change, needle):
    path, _, _ = data
    predicted, _ = finished
    args = ["--k", "2", *BASE, *change]  # the last value of a flag counts
    before = snapshot(tmp_path)
    run = cli("predict", "--model", f"{MODELS}:linear", "--data", path, *args, "-o", predicted, "--resume")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "other settings" in lines[0] and needle in lines[0], run.stderr
    assert snapshot(tmp_path) == before


def test_a_certify_run_is_not_resumed_as_predict_nor_the_reverse(tmp_path, data, finished):
    path, _, _ = data
    predicted, certified = finished
    before = snapshot(tmp_path)
    for command, out, theirs in (("predict", certified, "certify"), ("certify", predicted, "predict")):
        args = ["--model", f"{MODELS}:linear", "--data", path, "--k", "2", *BASE, "-o", out, "--resume"]
        run = cli(command, *args)
        assert run.returncode == 2
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert f"it is the output of a {theirs} run, not of a {command} run" in lines[0]
    assert snapshot(tmp_path) == before


def test_a_meta_from_before_kinds_is_a_certify_runs(tmp_path, data, finished):
    """certify wrote its meta without a kind before predict existed: certify resumes it (and
    records the kind), predict refuses it as a certify run's."""
    path, _, _ = data
    _, certified = finished
    meta_path = Path(str(certified) + ".meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta.pop("kind") == "certify"
    meta_path.write_text(json.dumps(meta))
    args = ["--model", f"{MODELS}:linear", "--data", path, "--k", "2", *BASE, "-o", certified, "--resume"]
    refused = cli("predict", *args)
    assert refused.returncode == 2 and "output of a certify run" in refused.stderr
    run = cli("certify", *args)
    assert run.returncode == 0, run.stderr
    assert len(read_table(certified)[1]) == NUM
    assert json.loads(meta_path.read_text())["kind"] == "certify"


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--k", "5"], "--k 5 must be below the model's number of classes 5"),
        (["--k", "9"], "--k 9 must be below the model's number of classes 5"),
        (["--k", "0"], "--k must be >= 1"),
        (["--k", "1", "3"], "unrecognized arguments: 3"),
        (["--k", "1", "--counts", "c.txt"], "unrecognized arguments: --counts"),
        (["--k", "1", "--alpha", "1.5"], "alpha"),
    ],
)
def test_bad_settings_are_refused_before_any_file_is_written(tmp_path, data, extra, needle):
    path, _, _ = data
    out = tmp_path / "out.tsv"
    run = cli("predict", "--model", f"{MODELS}:linear", "--data", path, *BASE, *extra, "-o", out)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_progress_bar_is_named_predict(tmp_path, data):
    pytest.importorskip("tqdm")
    path, _, _ = data
    out = tmp_path / "out.tsv"
    args = [a for a in BASE if a != "--no-progress"]
    run = cli("predict", "--model", f"{MODELS}:linear", "--data", path, "--k", "1", *args, "-o", out)
    assert run.returncode == 0, run.stderr
    assert "predict:" in run.stderr and "certify" not in run.stderr


def test_predict_batchs_bar_is_named_predict_and_certify_batchs_certify(capsys, data):
    pytest.importorskip("tqdm")
    _, x, y = data
    from cli_models import Linear

    topk_certify.predict_batch(Linear(), x[:2], k=1, sigma=0.5, n=50, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "predict:" in err and "certify" not in err
    topk_certify.certify_batch(Linear(), x[:2], y[:2], k=1, sigma=0.5, n=50, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "certify:" in err and "predict" not in err


def test_an_interrupted_predict_run_says_it_resumes(capsys):
    code = _interrupted(argparse.Namespace(command="predict"), Terminated())
    assert code == EXIT_TERMINATED
    assert "rerun with --resume to continue" in capsys.readouterr().err


def test_two_ranks_write_the_single_process_file(tmp_path, data):
    path, _, _ = data
    one, two = tmp_path / "one.tsv", tmp_path / "two.tsv"
    args = ["--model", f"{MODELS}:linear", "--data", path, "--k", "2", *BASE]
    args[args.index("--n")] = "--num-samples"  # torchrun's own parser takes --n
    run = cli("predict", *args, "-o", one)
    assert run.returncode == 0, run.stderr
    run = torchrun("-m", "topk_certify", "predict", *args, "-o", two)
    assert run.returncode == 0, run.stderr[-2000:]
    assert without_time(two) == without_time(one)
