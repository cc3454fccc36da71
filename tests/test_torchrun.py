"""One certification across processes with torchrun on the gloo backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import topk_certify  # noqa: E402
from topk_certify.distributed import shard  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = str(HERE / "cli_models.py")
NUM = 9


def torchrun(*args, env=None, timeout=240):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def single(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "topk_certify", *map(str, args)], capture_output=True, text=True, env=env, timeout=240
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.npz"
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.normal(size=(NUM, 1, 4, 4)).astype(np.float32), y=rng.integers(0, 5, NUM))
    return path


ARGS = [
    "--sigma",
    "0.5",
    "--k",
    "1",
    "3",
    "--num-samples",
    "700",
    "--batch-size",
    "300",
    "--seed",
    "4",
    "--no-progress",
]


def rows(path):
    return [line.split("\t")[:4] for line in Path(path).read_text().splitlines()]


def test_two_ranks_write_the_single_process_file(tmp_path, data):
    one, two = tmp_path / "one.tsv", tmp_path / "two.tsv"
    run = single(
        "certify", "--model", f"{MODELS}:linear", "--data", data, *ARGS, "-o", one, "--counts", tmp_path / "c1.txt"
    )
    assert run.returncode == 0, run.stderr
    run = torchrun(
        "-m",
        "topk_certify",
        "certify",
        "--model",
        f"{MODELS}:linear",
        "--data",
        data,
        *ARGS,
        "-o",
        two,
        "--counts",
        tmp_path / "c2.txt",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(two) == rows(one)
    assert (tmp_path / "c2.txt").read_text() == (tmp_path / "c1.txt").read_text()


def test_a_dead_rank_fails_loudly_and_resume_finishes_the_run(tmp_path, data):
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    env = dict(os.environ, TOPK_CERTIFY_TEST_DELAY="0.1")
    args = ["--model", f"{MODELS}:Slow", "--data", data, *ARGS]
    assert single("certify", *args, "-o", full, env=env).returncode == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.Popen(
        [*launcher, "-m", "topk_certify", "certify", *map(str, args), "-o", str(part)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (part.exists() and part.read_text().count("\n") >= 3):
            time.sleep(0.05)
        # The launcher's children are the ranks.
        workers = [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        ]
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)  # one rank dies
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, "a dead rank must make the run fail"
    assert "SIGKILL" in err or "Signal 9" in err
    written = part.read_text().count("\n") - 1
    assert written < NUM
    run = torchrun("-m", "topk_certify", "certify", *args, "-o", part, "--resume", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(part) == rows(full)


def test_shard_and_gather_in_a_users_own_loop(tmp_path):
    out = tmp_path / "merged.npz"
    run = torchrun(HERE / "torchrun_api_script.py", out, HERE)
    assert run.returncode == 0, run.stderr[-2000:]
    merged = np.load(out)
    from cli_models import Linear

    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 1, 4, 4)).astype(np.float32)
    labels = rng.integers(0, 5, 9)
    whole = topk_certify.certify_batch(Linear(), x, labels, k=[1, 2], sigma=0.5, n=400, seed=5)
    np.testing.assert_array_equal(merged["radius"], whole.radius)
    np.testing.assert_array_equal(merged["counts"], whole.counts)
    np.testing.assert_array_equal(merged["few_radius"], whole.radius[:1, 1])


def test_shard_partitions_the_examples():
    for world in (1, 2, 3, 5):
        for chunk in (1, 2, 4):
            parts = [shard(list(range(23)), r, world, chunk) for r in range(world)]
            assert sorted(i for p in parts for i in p) == list(range(23))
    with pytest.raises(ValueError):
        shard([1, 2], 2, 2)


def _our_lines(err: str):
    return [line for line in err.splitlines() if line.startswith("topk-certify: error:")]


@pytest.mark.parametrize("case", ["output_exists", "model_fails_on_rank_one"])
def test_an_error_on_one_rank_ends_every_rank_quickly_with_one_line(tmp_path, data, case):
    out = tmp_path / "out.tsv"
    model = "linear"
    if case == "output_exists":
        out.write_text("precious\n")
    else:
        model = "FailsOnRankOne"
    start = time.time()
    run = torchrun(
        "-m", "topk_certify", "certify", "--model", f"{MODELS}:{model}", "--data", data, *ARGS, "-o", out, timeout=120
    )
    elapsed = time.time() - start
    assert run.returncode != 0
    assert elapsed < 30, f"took {elapsed:.0f} s"
    lines = _our_lines(run.stderr)
    assert len(lines) == 1, run.stderr[-3000:]
    if case == "output_exists":
        assert "already exists" in lines[0] and out.read_text() == "precious\n"
    else:
        assert "rank 1" in lines[0] and "the model failed on a batch" in lines[0]
        assert "exitcode" not in lines[0]
