"""End-to-end tests of `topk-certify certify`: files, resume, refusals, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import topk_certify  # noqa: E402
from topk_certify.formats.counts import read_counts_file  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = str(HERE / "cli_models.py")
NUM = 10


def cli(*args, cwd=None, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "topk_certify", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM, 1, 4, 4)).astype(np.float32)
    with torch.no_grad():
        y = (
            (torch.from_numpy(x).flatten(1) @ torch.randn(5, 16, generator=torch.Generator().manual_seed(0)).T)
            .argmax(1)
            .numpy()
        )
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path, x, y


def read_table(path):
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    return header, [line.split("\t") for line in lines[1:]]


BASE = ["--sigma", "0.5", "--k", "1", "3", "--n", "600", "--batch-size", "250", "--seed", "7", "--no-progress"]


def test_certify_writes_the_rows_certify_batch_gives(tmp_path, data):
    path, x, y = data
    out, counts = tmp_path / "out.tsv", tmp_path / "counts.txt"
    run = cli("certify", "--model", f"{MODELS}:linear", "--data", path, *BASE, "-o", out, "--counts", counts)
    assert run.returncode == 0, run.stderr
    header, rows = read_table(out)
    assert header == ["idx", "label", "radius@1", "radius@3", "time"]
    assert [int(r[0]) for r in rows] == list(range(NUM))
    assert [int(r[1]) for r in rows] == list(y)
    from cli_models import Linear

    expect = topk_certify.certify_batch(Linear(), x, y, k=[1, 3], sigma=0.5, n=600, batch_size=250, seed=7)
    got = np.array([[float(r[2]), float(r[3])] for r in rows])
    np.testing.assert_array_equal(got, expect.radius)  # repr round-trips exactly
    assert all(float(r[4]) >= 0 for r in rows)
    # The counts file round-trips through `radius` to the same radii.
    table, labels, meta = read_counts_file(counts)
    np.testing.assert_array_equal(table, expect.counts)
    assert meta["adaptive"] == "0" and meta["n"] == "600"
    again = cli("radius", counts, "--k", "3", "--sigma", "0.5", "--alpha", "0.001")
    assert again.returncode == 0, again.stderr
    _, radius_rows = read_table_text(again.stdout)
    np.testing.assert_array_equal([float(r[2]) for r in radius_rows], expect.radius[:, 1])


def read_table_text(text):
    lines = text.splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_model_specs_module_factory_and_torchscript(tmp_path, data):
    path, x, y = data
    from cli_models import Linear

    script = tmp_path / "model.pt"
    with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; users still have .pt files
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Linear()).save(str(script))
    outs = []
    for spec in (f"{MODELS}:make_linear", str(script)):
        out = tmp_path / f"out{len(outs)}.tsv"
        run = cli("certify", "--model", spec, "--data", path, *BASE, "-o", out)
        assert run.returncode == 0, run.stderr
        outs.append([r[:4] for r in read_table(out)[1]])
    assert outs[0] == outs[1]
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = cli("certify", "--model", "cli_models:Linear", "--data", path, *BASE, "-o", tmp_path / "o3.tsv", env=env)
    assert run.returncode == 0, run.stderr
    assert [r[:4] for r in read_table(tmp_path / "o3.tsv")[1]] == outs[0]


def test_pt_data_file(tmp_path, data):
    path, x, y = data
    pt = tmp_path / "data.pt"
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, pt)
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    assert cli("certify", "--model", f"{MODELS}:linear", "--data", path, *BASE, "-o", a).returncode == 0
    assert cli("certify", "--model", f"{MODELS}:linear", "--data", pt, *BASE, "-o", b).returncode == 0
    assert [r[:4] for r in read_table(a)[1]] == [r[:4] for r in read_table(b)[1]]


def test_existing_output_is_refused_without_resume(tmp_path, data):
    path, _, _ = data
    out = tmp_path / "out.tsv"
    out.write_text("precious\n")
    run = cli("certify", "--model", f"{MODELS}:linear", "--data", path, *BASE, "-o", out)
    assert run.returncode == 2
    assert "--resume" in run.stderr and "Traceback" not in run.stderr
    assert out.read_text() == "precious\n"


def test_resume_after_sigkill_gives_the_uninterrupted_file(tmp_path, data):
    path, _, _ = data
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    args = ["--model", f"{MODELS}:Slow", "--data", path, *BASE]
    env = dict(os.environ, TOPK_CERTIFY_TEST_DELAY="0.08")
    assert cli("certify", *args, "-o", full, "--counts", tmp_path / "cf.txt", env=env).returncode == 0
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "topk_certify",
            "certify",
            *map(str, args),
            "-o",
            str(part),
            "--counts",
            str(tmp_path / "cp.txt"),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if part.exists() and part.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = part.read_text().count("\n") - 1
    assert 0 < done < NUM, "the kill should land in the middle of the run"
    with open(part, "a") as handle:
        handle.write("9\t1\t0.12")  # a torn last line, as a kill during a write leaves
    run = cli("certify", *args, "-o", part, "--counts", tmp_path / "cp.txt", "--resume", env=env)
    assert run.returncode == 0, run.stderr
    strip = lambda p: [r[:4] for r in read_table(p)[1]]  # noqa: E731
    assert strip(part) == strip(full)
    assert (tmp_path / "cp.txt").read_text() == (tmp_path / "cf.txt").read_text()


def test_resume_with_other_settings_is_refused(tmp_path, data):
    path, _, _ = data
    out = tmp_path / "out.tsv"
    assert cli("certify", "--model", f"{MODELS}:linear", "--data", path, *BASE, "-o", out).returncode == 0
    changed = [a if a != "0.5" else "0.25" for a in BASE]
    run = cli("certify", "--model", f"{MODELS}:linear", "--data", path, *changed, "-o", out, "--resume")
    assert run.returncode == 2 and "sigma" in run.stderr


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_data", "no such file"),
        ("missing_model_file", "no such file"),
        ("missing_module", "no module named"),
        ("missing_name", "has no attribute"),
        ("not_a_model", "neither an nn.Module"),
        ("npz_without_y", "no array 'y'"),
        ("labels_out_of_range", "outside the model's classes"),
        ("k_too_large", "below the model's number of classes"),
        ("unwritable_output", "cannot write"),
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_nothing_written(tmp_path, data, case, message):
    path, x, y = data
    model, data_path, out = f"{MODELS}:linear", path, tmp_path / "out.tsv"
    extra = []
    if case == "missing_data":
        data_path = tmp_path / "nope.npz"
    elif case == "missing_model_file":
        model = str(tmp_path / "nope.py") + ":model"
    elif case == "missing_module":
        model = "no_such_package_xyz.models:net"
    elif case == "missing_name":
        model = f"{MODELS}:nope"
    elif case == "not_a_model":
        model = f"{MODELS}:not_a_model"
    elif case == "npz_without_y":
        data_path = tmp_path / "bad.npz"
        np.savez(data_path, x=x)
    elif case == "labels_out_of_range":
        data_path = tmp_path / "bad.npz"
        np.savez(data_path, x=x, y=np.full(NUM, 7))
    elif case == "k_too_large":
        extra = ["--k", "5"]
    elif case == "unwritable_output":
        out = tmp_path / "no_such_dir" / "out.tsv"
    args = [a for a in BASE]
    if extra:
        i = args.index("--k")
        args[i + 1 : i + 3] = extra[1:] + [extra[1]]
    run = cli("certify", "--model", model, "--data", data_path, *args, "-o", out)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists() and not Path(str(out) + ".meta.json").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("factory_raises", "calling broken_factory() failed: RuntimeError: cannot build"),
        ("data_shape_does_not_fit", "the model fails on the data's inputs"),
        ("repeated_k", "must be distinct"),
        ("adaptive_negative_radius", "radii must be >= 0"),
        ("adaptive_nan_radius", "radii must be finite"),
        ("adaptive_n_too_small", "cannot certify anything"),
        ("counts_unwritable", "cannot write"),
        ("counts_is_output", "name the same file"),
        ("counts_exists", "already exists"),
    ],
)
def test_settings_are_all_checked_before_any_file_is_written(tmp_path, data, case, message):
    """Errors found from the settings alone leave no OUT, meta or counts file behind (a
    header-only OUT would make the corrected command refuse to start)."""
    path, x, y = data
    model, data_path, out = f"{MODELS}:linear", path, tmp_path / "out.tsv"
    counts = tmp_path / "counts.txt"
    args = list(BASE)
    if case == "factory_raises":
        model = f"{MODELS}:broken_factory"
    elif case == "data_shape_does_not_fit":
        data_path = tmp_path / "wide.npz"
        np.savez(data_path, x=np.zeros((NUM, 7), dtype=np.float32), y=y)
    elif case == "repeated_k":
        args[args.index("--k") + 1 : args.index("--k") + 3] = ["3", "1", "3"]
    elif case.startswith("adaptive"):
        args += ["--adaptive"]
        if case == "adaptive_negative_radius":
            args += ["--radii", "0.25", "-1"]
        elif case == "adaptive_nan_radius":
            args += ["--radii", "nan"]
        else:
            args[args.index("--n") + 1] = "5"
    elif case == "counts_unwritable":
        counts = tmp_path / "no_such_dir" / "counts.txt"
    elif case == "counts_is_output":
        counts = out
    elif case == "counts_exists":
        counts.write_text("precious\n")
    run = cli("certify", "--model", model, "--data", data_path, *args, "-o", out, "--counts", counts)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists() and not Path(str(out) + ".meta.json").exists()
    if case == "counts_exists":
        assert counts.read_text() == "precious\n"
    else:
        assert not counts.exists()


def test_adaptive_run_adds_n_and_its_counts_are_refused_by_radius(tmp_path, data):
    path, _, _ = data
    out, counts = tmp_path / "out.tsv", tmp_path / "counts.txt"
    args = [
        "--model",
        f"{MODELS}:linear",
        "--data",
        path,
        "--sigma",
        "0.5",
        "--k",
        "1",
        "3",
        "--n",
        "5000",
        "--seed",
        "1",
        "--no-progress",
        "--adaptive",
        "--radii",
        "0",
        "0.25",
    ]
    run = cli("certify", *args, "-o", out, "--counts", counts)
    assert run.returncode == 0, run.stderr
    header, rows = read_table(out)
    assert header == ["idx", "label", "radius@1", "radius@3", "n", "time"]
    assert all(1 <= int(r[4]) <= 5000 for r in rows)
    refused = cli("radius", counts, "--k", "3", "--sigma", "0.5")
    assert refused.returncode == 2 and "adaptive" in refused.stderr
