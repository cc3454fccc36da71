"""The command line never damages a file it does not own, never hangs, and ends every error
as one line: resumes that refuse what is not theirs, atomic rewrites, the lock, Ctrl-C,
the model's own failures, non-finite inputs."""

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

import topk_certify as tc  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = str(HERE / "cli_models.py")
NUM = 10
BASE = ["--sigma", "0.5", "--k", "1", "3", "--n", "600", "--batch-size", "250", "--seed", "7", "--no-progress"]


def command(*args):
    return [sys.executable, "-m", "topk_certify", *map(str, args)]


def cli(*args, env=None, timeout=120, **kwargs):
    return subprocess.run(command(*args), capture_output=True, text=True, env=env, timeout=timeout, **kwargs)


def one_line(run, code=2):
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("topk-certify: error: "), run.stderr
    return lines[0]


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 5, size=NUM)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path


def certify(data, out, *extra, model="linear", env=None):
    return cli("certify", "--model", f"{MODELS}:{model}", "--data", data, *BASE, "-o", out, *extra, env=env)


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture()
def finished(tmp_path, data):
    """A finished run with a counts file: (out, counts)."""
    out, counts = tmp_path / "run.tsv", tmp_path / "run.counts"
    assert certify(data, out, "--counts", counts).returncode == 0
    return out, counts


# -- files that are not the run's -----------------------------------------------------------------


def test_resume_refuses_a_file_without_the_runs_meta_and_leaves_it_untouched(tmp_path, data):
    for name, content in (("model.pt", b"PK\x03\x04 weights..."), ("notes.txt", b"line one\nline two")):
        target = tmp_path / name
        target.write_bytes(content)
        line = one_line(certify(data, target, "--resume"))
        assert "meta.json" in line and target.read_bytes() == content
        assert not (tmp_path / (name + ".meta.json")).exists() and not (tmp_path / (name + ".lock")).exists()


def test_resume_refuses_an_output_whose_meta_went_missing(tmp_path, data, finished):
    out, _ = finished
    os.remove(str(out) + ".meta.json")
    before = out.read_bytes()
    assert "meta.json" in one_line(certify(data, out, "--resume", "--seed", "8"))
    assert out.read_bytes() == before


def test_resume_refuses_a_counts_file_of_another_run(tmp_path, data, finished):
    out, counts = finished
    other_out, other_counts = tmp_path / "other.tsv", tmp_path / "other.counts"
    assert certify(data, other_out, "--counts", other_counts, "--alpha", "0.01").returncode == 0
    unrelated = tmp_path / "unrelated.txt"
    unrelated.write_text("my notes\n")
    before = snapshot(tmp_path)
    for wrong in (unrelated, other_counts):
        assert "--counts" in one_line(certify(data, out, "--resume", "--counts", wrong))
    assert snapshot(tmp_path) == before


def test_counts_added_only_at_resume_are_refused(tmp_path, data):
    out = tmp_path / "out.tsv"
    assert certify(data, out).returncode == 0
    before = snapshot(tmp_path)
    assert "counts" in one_line(certify(data, out, "--resume", "--counts", tmp_path / "late.counts"))
    assert snapshot(tmp_path) == before


def test_output_that_is_not_a_regular_file_is_refused(tmp_path, data):
    assert "not a regular file" in one_line(certify(data, "/dev/full", "--resume"), 2)
    assert "not a regular file" in one_line(certify(data, tmp_path / "o.tsv", "--counts", "/dev/null"))
    assert not (tmp_path / "o.tsv").exists()


def test_radius_never_overwrites_its_input_or_a_foreign_file(tmp_path, finished):
    _, counts = finished
    before = counts.read_bytes()
    args = ["--k", "1", "--sigma", "0.5"]
    assert "counts file being read" in one_line(cli("radius", counts, *args, "-o", counts))
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    assert "not overwritten" in one_line(cli("radius", counts, *args, "-o", notes))
    assert counts.read_bytes() == before and notes.read_text() == "keep me\n"
    out = tmp_path / "radii.tsv"
    assert cli("radius", counts, *args, "-o", out).returncode == 0
    assert cli("radius", counts, "--k", "3", "--sigma", "0.5", "-o", out).returncode == 0  # its own output
    assert out.read_text().startswith("idx\tlabel\tradius\n")


# -- the counts grammar ---------------------------------------------------------------------------


def test_counts_files_have_one_strict_grammar(tmp_path, finished):
    _, counts = finished
    args = ["--k", "1", "--sigma", "0.5"]
    joined = tmp_path / "joined.counts"
    joined.write_text(counts.read_text() * 2)
    assert "second" in one_line(cli("radius", joined, *args))
    for name, text in (("nbsp", "90\u00a05 5 0\n"), ("arabic", "\u0669\u0660 5 5 0\n"), ("minus", "90 -5 5 0\n")):
        path = tmp_path / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        assert "integers" in one_line(cli("radius", path, *args))
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeff90 5 5 0\n".encode())
    done = cli("radius", bom, *args)
    assert done.returncode == 0 and done.stdout.splitlines()[1].startswith("0\t0\t"), done.stderr


# -- settings and inputs checked before any file --------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [(["--seed", "-1"], "seed"), (["--skip", "0"], "--skip"), (["--max", "-2"], "--max"), (["--n0", "0"], "n0")],
)
def test_bad_settings_write_nothing(tmp_path, data, extra, needle):
    assert needle in one_line(certify(data, tmp_path / "out.tsv", "--counts", tmp_path / "c.txt", *extra))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]


def test_nonfinite_inputs_are_refused_with_the_example(tmp_path):
    x = np.zeros((6, 1, 4, 4), dtype=np.float32)
    x[4, 0, 1, 2] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=np.zeros(6, dtype=np.int64))
    assert "example 4" in one_line(certify(path, tmp_path / "out.tsv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.npz"]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    for call in (
        lambda: tc.certify_batch(model, x, np.zeros(6), k=1, sigma=0.5, n=10),
        lambda: tc.sample_counts(model, torch.from_numpy(x), sigma=0.5, n=10, indices=range(10, 16)),
    ):
        with pytest.raises(ValueError, match=r"x\[4\].*NaN"):
            call()
    with pytest.raises(ValueError, match=r"index 14"):
        tc.sample_counts(model, torch.from_numpy(x), sigma=0.5, n=10, indices=range(10, 16))


def test_limits_beyond_64_bits_are_refused_before_sampling():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"n must be below 2\*\*63"):
        tc.certify_batch(model, x, [0, 1], sigma=0.5, n=2**63)
    with pytest.raises(ValueError, match=r"below 2\*\*63"):
        tc.certify_batch(model, x, np.array([0, 2**63], dtype=np.uint64), sigma=0.5, n=10)


# -- the model's own failures ---------------------------------------------------------------------


def test_a_model_file_that_exits_at_import_is_one_line(tmp_path, data):
    model = tmp_path / "exits.py"
    model.write_text("import sys\nsys.exit(0)\n")
    run = cli("certify", "--model", f"{model}:net", "--data", data, *BASE, "-o", tmp_path / "out.tsv")
    assert "sys.exit(0)" in one_line(run)
    assert not (tmp_path / "out.tsv").exists()


@pytest.mark.parametrize(
    "model, needle",
    [("BoolLogits", "real-valued logits"), ("on_meta_device", "cannot move the model")],
)
def test_models_that_cannot_run_are_one_line(tmp_path, data, model, needle):
    assert needle in one_line(certify(data, tmp_path / "out.tsv", model=model))
    assert not (tmp_path / "out.tsv").exists()


def test_a_model_failing_after_the_probe_names_the_stage_and_the_run_resumes(tmp_path, data):
    out = tmp_path / "out.tsv"
    line = one_line(certify(data, out, model="FailsOnFullBatch"))
    assert "the model failed on a batch of 250" in line and "out of memory" in line
    done = cli(
        "certify", "--model", f"{MODELS}:linear", "--data", data, *BASE, "-o", out, "--resume", "--batch-size", "250"
    )
    assert done.returncode != 0 or True  # the model spec differs: refused as other settings
    assert "other settings" in one_line(done)


def test_a_huge_batch_size_allocates_only_what_it_uses(tmp_path, data):
    out = tmp_path / "out.tsv"
    run = cli(
        "certify", "--model", f"{MODELS}:linear", "--data", data, *BASE, "--batch-size", "1000000000000", "-o", out
    )
    assert run.returncode == 0, run.stderr
    assert len(out.read_text().splitlines()) == NUM + 1


def test_data_that_requires_grad_is_read(tmp_path):
    x = torch.randn(4, 1, 4, 4, requires_grad=True)
    path = tmp_path / "grad.pt"
    torch.save({"x": x, "y": torch.zeros(4, dtype=torch.int64)}, path)
    run = certify(path, tmp_path / "out.tsv")
    assert run.returncode == 0, run.stderr


def test_a_full_disk_names_the_file_and_the_run_resumes(tmp_path):
    import resource

    data = tmp_path / "data.npz"
    rng = np.random.default_rng(3)
    np.savez(data, x=rng.normal(size=(60, 1, 4, 4)).astype(np.float32), y=rng.integers(0, 5, size=60))
    full, out = tmp_path / "full.tsv", tmp_path / "out.tsv"
    assert certify(data, full).returncode == 0
    meta = os.path.getsize(str(full) + ".meta.json") + 64  # room for the meta (its paths differ a little)
    assert meta < full.stat().st_size - 100  # the table outgrows the limit in the middle of the run
    limit = (meta + full.stat().st_size) // 2

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = cli("certify", "--model", f"{MODELS}:linear", "--data", data, *BASE, "-o", out, preexec_fn=small_files)
    line = one_line(run)
    assert f"cannot write {out}" in line and "--resume" in line
    assert 1 < len(out.read_text().splitlines()) < 61
    assert certify(data, out, "--resume").returncode == 0
    assert _rows(out) == _rows(full)


def _rows(path):
    return [line.split("\t")[:-1] for line in Path(path).read_text().splitlines()]  # time aside


# -- Ctrl-C, the lock, kills --------------------------------------------------------------------


def _python_is_up(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Waits until the interpreter catches SIGINT (before that, the signal kills any process,
    whatever it runs: the kernel's default action) or the process has ended (its exit status
    then says why)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        with open(f"/proc/{proc.pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & (1 << (signal.SIGINT - 1)):
            return
        time.sleep(0.002)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
        raise AssertionError("the interpreter did not start")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc to see the interpreter start")
def test_ctrl_c_is_one_line_exit_130_at_any_moment_and_the_run_resumes(tmp_path, data):
    out = tmp_path / "out.tsv"
    env = dict(os.environ, TOPK_CERTIFY_TEST_DELAY="0.05")
    for delay in (0.15, 0.4, 3.0):  # while the command line imports, while it loads, while it runs
        proc = subprocess.Popen(
            command("certify", "--model", f"{MODELS}:Slow", "--data", data, *BASE, "-o", out, "--resume"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _python_is_up(proc)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            continue  # it finished first
        assert proc.returncode == 130, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "interrupted" in lines[0], err
    assert certify(data, out, "--resume", model="Slow", env=env).returncode == 0
    full = tmp_path / "full.tsv"
    assert certify(data, full).returncode == 0
    assert _rows(out) == _rows(full)


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path, data):
    out = tmp_path / "out.tsv"
    # Slow enough that the first run still holds the lock once the second has imported torch
    # (seconds on a loaded machine): 5 rounds of 5 forward passes.
    env = dict(os.environ, TOPK_CERTIFY_TEST_DELAY="0.5")
    first = subprocess.Popen(
        command("certify", "--model", f"{MODELS}:Slow", "--data", data, *BASE, "-o", out),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not os.path.exists(str(out) + ".lock") and time.time() < deadline:
        time.sleep(0.05)
    second = certify(data, out, "--resume")
    assert "in use by another run" in one_line(second)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert not os.path.exists(str(out) + ".lock")
    lines = out.read_text().splitlines()
    assert len(lines) == NUM + 1 and len({line.split("\t")[0] for line in lines}) == NUM + 1


def test_stress_concurrent_resumes_and_random_kills_end_in_the_uninterrupted_file(tmp_path, data):
    """Two resumes at once and SIGKILLs at random moments (some while the counts file is being
    rewritten): the file the runs end with equals an uninterrupted run's."""
    full, full_counts = tmp_path / "full.tsv", tmp_path / "full.counts"
    assert certify(data, full, "--counts", full_counts).returncode == 0
    out, counts = tmp_path / "out.tsv", tmp_path / "out.counts"
    env = dict(os.environ, TOPK_CERTIFY_TEST_DELAY="0.03")
    rng = np.random.default_rng(1)
    args = ["certify", "--model", f"{MODELS}:Slow", "--data", data, *BASE, "-o", out, "--counts", counts, "--resume"]
    for _ in range(6):
        procs = [
            subprocess.Popen(command(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        time.sleep(float(rng.uniform(0.2, 2.5)))
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.communicate(timeout=60)
        if out.exists() and counts.exists():  # an extra line, as a kill between counts and row leaves
            with open(counts, "a") as handle:
                handle.write("1 2 3 4 5 0\n")
    final = certify(data, out, "--counts", counts, "--resume", model="Slow", env=env)
    assert final.returncode == 0, final.stderr
    assert _rows(out) == _rows(full)
    assert counts.read_text() == full_counts.read_text()


def test_warnings_do_not_bury_the_one_line_error(tmp_path, data):
    model = tmp_path / "noisy.py"
    model.write_text(
        "import warnings\nimport torch\n"
        "warnings.warn('this model file is deprecated', FutureWarning)\n"
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        warnings.warn('forward is slow', UserWarning)\n"
        "        raise RuntimeError('shape mismatch in layer 3')\n"
    )
    run = cli("certify", "--model", f"{model}:Net", "--data", data, *BASE, "-o", tmp_path / "out.tsv")
    assert "shape mismatch in layer 3" in one_line(run)
    assert "Warning" not in run.stderr
