"""A resume continues only the same run: its meta holds every key the run writes, the model's
fingerprint and digests of the examples written; a resume recomputes them (and, for fixed-n
runs, each row's radii from its counts line) and refuses what differs, touching nothing."""

from __future__ import annotations

import dataclasses
import json
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

from topk_certify.cli import job  # noqa: E402
from topk_certify.cli.main import main  # noqa: E402
from topk_certify.settings import CertifySettings  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = HERE / "identity_models.py"
NUM = 12
BASE = ["--sigma", "0.5", "--k", "1", "3", "--n", "600", "--batch-size", "250", "--seed", "7"]


def certify(capfd, data, out, *extra, model=f"{MODELS}:make_linear"):
    capfd.readouterr()
    args = ["certify", "--model", str(model), "--data", str(data), *BASE, "-o", str(out), "--no-progress"]
    code = main([*args, *map(str, extra)])
    return code, capfd.readouterr().err.splitlines()


def one_line(result, *needles, code=2):
    got, lines = result
    assert got == code, lines
    assert len(lines) == 1 and lines[0].startswith("topk-certify: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines
    return lines[0]


def xy(seed=0, num=NUM):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num, 1, 4, 4)).astype(np.float32), np.arange(num) % 5


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "data.npz"
    x, y = xy()
    np.savez(path, x=x, y=y)
    return path


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def cut(out: Path, counts: Path, keep: int) -> None:
    """What a kill leaves: the first `keep` rows (and counts lines) of a finished run."""
    out.write_text("".join(out.read_text().splitlines(keepends=True)[: 1 + keep]))
    counts.write_text("".join(counts.read_text().splitlines(keepends=True)[: 1 + keep]))


def rows(path: Path):
    return [line.split("\t")[:-1] for line in path.read_text().splitlines()]  # time aside


@pytest.fixture()
def cut_run(capfd, tmp_path, data):
    """A run killed after 4 of its 12 rows: (out, counts)."""
    out, counts = tmp_path / "run.tsv", tmp_path / "run.counts"
    assert certify(capfd, data, out, "--counts", counts)[0] == 0
    cut(out, counts, 4)
    return out, counts


# -- the examples ---------------------------------------------------------------------------------


def test_the_same_run_resumes_to_the_uninterrupted_file(capfd, tmp_path, data, cut_run):
    out, counts = cut_run
    assert certify(capfd, data, out, "--counts", counts, "--resume")[0] == 0
    full, full_counts = tmp_path / "full.tsv", tmp_path / "full.counts"
    assert certify(capfd, data, full, "--counts", full_counts)[0] == 0
    assert rows(out) == rows(full) and counts.read_text() == full_counts.read_text()
    meta = json.loads((tmp_path / "run.tsv.meta.json").read_text())
    assert meta["examples"]["count"] == NUM and meta["version"] == 2


@pytest.mark.parametrize("changed", [0, 3, 9])
def test_data_replaced_at_the_same_path_is_refused(capfd, tmp_path, data, cut_run, changed):
    """Same labels, another x in one example: a done one (0, 3) or one the meta covers
    beyond the rows (9: the meta is written before a round's rows, which a kill can lose)."""
    out, counts = cut_run
    x, y = xy()
    x[changed, 0, 1, 1] += 0.25
    np.savez(data, x=x, y=y)
    before = snapshot(tmp_path)
    one_line(certify(capfd, data, out, "--counts", counts, "--resume"), "the data changed", "idx 0 to 11")
    assert snapshot(tmp_path) == before


def test_examples_beyond_the_record_may_change(capfd, tmp_path, data):
    """The record covers the examples written: those not yet reached are not the run's yet."""
    out = tmp_path / "run.tsv"
    x, y = xy(num=NUM)
    np.savez(data, x=x, y=y)
    assert certify(capfd, data, out, "--max", "4")[0] == 0
    meta_path = tmp_path / "run.tsv.meta.json"
    assert json.loads(meta_path.read_text())["examples"]["count"] == 4
    x[6] += 1.0
    np.savez(data, x=x, y=y)
    assert certify(capfd, data, out, "--max", "4", "--resume")[0] == 0


# -- the model ------------------------------------------------------------------------------------


def test_a_python_model_with_other_weights_is_refused(capfd, tmp_path, data, cut_run, monkeypatch):
    out, counts = cut_run
    before = snapshot(tmp_path)
    monkeypatch.setenv("TOPK_CERTIFY_TEST_SEED", "1")
    one_line(certify(capfd, data, out, "--counts", counts, "--resume"), "the model changed")
    assert snapshot(tmp_path) == before


def _save_script(seed: int, path: Path) -> None:
    import identity_models

    with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; users still have .pt files
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(identity_models.Linear(seed=seed)).save(str(path))


def test_a_torchscript_file_replaced_at_the_same_path_is_refused(capfd, tmp_path, data):
    model_path = tmp_path / "model.pt"
    _save_script(0, model_path)
    out, counts = tmp_path / "run.tsv", tmp_path / "run.counts"
    assert certify(capfd, data, out, "--counts", counts, model=model_path)[0] == 0
    cut(out, counts, 4)
    assert certify(capfd, data, out, "--counts", counts, "--resume", model=model_path)[0] == 0
    cut(out, counts, 4)
    _save_script(1, model_path)
    one_line(certify(capfd, data, out, "--counts", counts, "--resume", model=model_path), "the model changed")


# -- the meta -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda meta: {}, "missing"),
        (lambda meta: {k: v for k, v in meta.items() if k != "sigma"}, "missing ['sigma']"),
        (lambda meta: {k: v for k, v in meta.items() if k != "seed"}, "missing ['seed']"),
        (lambda meta: {**meta, "note": "mine"}, "unknown ['note']"),
    ],
)
def test_a_meta_missing_or_adding_keys_is_not_this_runs(capfd, tmp_path, data, cut_run, edit, needle):
    out, counts = cut_run
    meta_path = tmp_path / "run.tsv.meta.json"
    meta_path.write_text(json.dumps(edit(json.loads(meta_path.read_text()))))
    before = snapshot(tmp_path)
    # Other settings too: a meta without the key must not let them through.
    other = ["--sigma", "0.25", "--seed", "8"]
    one_line(certify(capfd, data, out, "--counts", counts, "--resume", *other), "not this run's meta", needle)
    assert snapshot(tmp_path) == before


def test_a_meta_of_another_version_is_named(capfd, tmp_path, data, cut_run):
    out, counts = cut_run
    meta_path = tmp_path / "run.tsv.meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": 3}))
    one_line(certify(capfd, data, out, "--counts", counts, "--resume"), "version 3")


def test_the_meta_records_every_setting_but_progress_whatever_fields_there_are():
    settings = CertifySettings.build(sigma=0.5, k=[1, 3], n=600, seed=7)
    meta = job.settings_meta(settings)
    assert set(meta) == {f.name for f in dataclasses.fields(CertifySettings)} - {"progress"}
    assert meta["ks"] == [1, 3] and meta["sigma"] == 0.5 and meta["seed"] == 7
    # A field added later lands in the meta with no edit here.
    Wider = dataclasses.make_dataclass(
        "Wider", [("later_mode", str, "fast"), ("later_flag", bool, False)], bases=(CertifySettings,), frozen=True
    )
    wider = Wider(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)})
    assert job.settings_meta(wider) == {**meta, "later_mode": "fast", "later_flag": False}


# -- counts against OUT ---------------------------------------------------------------------------


def _move_counts(counts: Path, line: int, amount: int) -> None:
    """Moves `amount` samples of line `line`'s label to another class: same total, same label."""
    lines = counts.read_text().splitlines(keepends=True)
    values = [int(v) for v in lines[line].split()]
    label = values[-1]
    other = max((c for c in range(len(values) - 1) if c != label), key=lambda c: values[c])
    values[label] -= amount
    values[other] += amount
    lines[line] = " ".join(map(str, values)) + "\n"
    counts.write_text("".join(lines))


def test_a_hand_edited_counts_line_is_refused(capfd, tmp_path, data, cut_run):
    out, counts = cut_run
    radius = [float(r[2]) for r in rows(out)[1:]]
    line = 1 + int(np.argmax(radius))  # a certified example: fewer label counts, a smaller radius
    _move_counts(counts, line, 30)
    before = snapshot(tmp_path)
    one_line(certify(capfd, data, out, "--counts", counts, "--resume"), f"row {line}", "radius@1", "edited")
    assert snapshot(tmp_path) == before


def test_a_hand_edited_radius_is_refused(capfd, tmp_path, data, cut_run):
    out, counts = cut_run
    lines = out.read_text().splitlines(keepends=True)
    cells = lines[2].split("\t")
    cells[3] = repr(float(cells[3]) + 1e-9)  # radius@3 of row 2
    lines[2] = "\t".join(cells)
    out.write_text("".join(lines))
    one_line(certify(capfd, data, out, "--counts", counts, "--resume"), "row 2", "radius@3")


def test_adaptive_counts_are_checked_for_label_and_total_only(capfd, tmp_path, data):
    """Adaptive radii come from the looks, not from the final counts: what is checked is the
    label and the samples used (the n column)."""
    out, counts = tmp_path / "run.tsv", tmp_path / "run.counts"
    adaptive = ["--adaptive", "--n", "5000", "--radii", "0", "0.25"]
    assert certify(capfd, data, out, "--counts", counts, *adaptive)[0] == 0
    cut(out, counts, 4)
    lines = counts.read_text().splitlines()
    line = next(i for i in range(1, 5) if int(lines[i].split()[int(lines[i].split()[-1])]) > 0)
    _move_counts(counts, line, 1)
    assert certify(capfd, data, out, "--counts", counts, *adaptive, "--resume")[0] == 0
    cut(out, counts, 4)
    lines = counts.read_text().splitlines(keepends=True)
    values = [int(v) for v in lines[2].split()]
    values[0] += 1  # one sample more than the row's n
    lines[2] = " ".join(map(str, values)) + "\n"
    counts.write_text("".join(lines))
    one_line(certify(capfd, data, out, "--counts", counts, *adaptive, "--resume"), "does not match row 2")


# -- the model misbehaving ------------------------------------------------------------------------


def test_nan_output_on_the_clean_input_is_refused_before_any_file(capfd, tmp_path, data):
    out = tmp_path / "out" / "run.tsv"
    out.parent.mkdir()
    one_line(certify(capfd, data, out, "--counts", out.parent / "c.txt", model=f"{MODELS}:NaNOnClean"), "NaN")
    assert list(out.parent.iterdir()) == []


def test_a_model_widening_after_the_probe_is_refused_and_writes_no_row(capfd, tmp_path, data):
    out = tmp_path / "run.tsv"
    one_line(certify(capfd, data, out, "--counts", tmp_path / "c.txt", model=f"{MODELS}:WidensAfterProbe"), "7")
    assert out.read_text().count("\n") == 1  # the header only
    assert (tmp_path / "c.txt").read_text().count("\n") == 1


def test_sys_exit_in_the_models_probe_is_one_line(capfd, tmp_path, data, monkeypatch):
    monkeypatch.setenv("TOPK_CERTIFY_TEST_EXIT_AT", "1")
    out = tmp_path / "out" / "run.tsv"
    out.parent.mkdir()
    one_line(certify(capfd, data, out, model=f"{MODELS}:ExitsOnCall"), "the model called sys.exit(7) on a batch of 1")
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("call", [2, 4])  # the first sampled batch (after the probe), a later one
def test_sys_exit_in_a_sampled_batch_is_one_line_and_the_run_resumes(capfd, tmp_path, data, monkeypatch, call):
    monkeypatch.setenv("TOPK_CERTIFY_TEST_EXIT_AT", str(call))
    out = tmp_path / "run.tsv"
    model = f"{MODELS}:ExitsOnCall"
    one_line(certify(capfd, data, out, model=model), "the model called sys.exit(7) on a batch of 250")
    monkeypatch.setenv("TOPK_CERTIFY_TEST_EXIT_AT", "0")
    assert certify(capfd, data, out, "--resume", model=model)[0] == 0
    assert out.read_text().count("\n") == 1 + NUM


# -- rounds ---------------------------------------------------------------------------------------


def test_a_round_holds_four_forward_batches_and_grouping_does_not_change_the_rows(capfd, tmp_path, data, monkeypatch):
    groups = []
    certify_with = job.certify_with

    def recording(model, x, labels, settings, **kwargs):
        groups.append(list(kwargs["indices"]))
        return certify_with(model, x, labels, settings, **kwargs)

    monkeypatch.setattr(job, "certify_with", recording)
    out = tmp_path / "four.tsv"
    assert certify(capfd, data, out)[0] == 0
    # ceil(4 * 250 / 600) = 2 examples a round (one forward batch holds 250 of 600 samples)
    assert groups == [[i, i + 1] for i in range(0, NUM, 2)]
    for batches, size in ((1, 1), (9, 4)):
        groups.clear()
        monkeypatch.setattr(job, "ROUND_BATCHES", batches)
        other = tmp_path / f"grouped{batches}.tsv"
        assert certify(capfd, data, other)[0] == 0
        assert {len(g) for g in groups[:-1]} == {size}
        assert rows(other) == rows(out)


# -- SIGTERM --------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc to see the interpreter start")
def test_sigterm_is_one_line_exit_143_and_the_run_resumes(tmp_path, data):
    out = tmp_path / "out.tsv"
    env = dict(os.environ, TOPK_CERTIFY_TEST_DELAY="0.1")
    command = [sys.executable, "-m", "topk_certify", "certify", "--model", f"{MODELS}:Slow", "--data", str(data)]
    command += [*BASE, "--batch-size", "100", "-o", str(out), "--counts", str(tmp_path / "c.txt"), "--no-progress"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)  # until the run has written a row or two
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "terminated (SIGTERM); rerun with --resume" in lines[0], err
    done = out.read_text().count("\n") - 1
    assert 0 < done < NUM
    run = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    full = [*command[: command.index("-o")], "-o", str(tmp_path / "full.tsv"), "--no-progress"]
    assert subprocess.run(full, capture_output=True, timeout=120).returncode == 0
    assert rows(out) == rows(tmp_path / "full.tsv")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc to see the interpreter start")
def test_sigterm_while_the_command_line_starts_is_one_line_exit_143(tmp_path, data):
    """As soon as the interpreter catches SIGTERM (before that, the kernel's default applies
    to any program): while it imports, loads or runs, one line and exit 143."""
    command = [sys.executable, "-m", "topk_certify", "certify", "--model", f"{MODELS}:Slow", "--data", str(data)]
    command += [*BASE, "-o", str(tmp_path / "out.tsv"), "--resume", "--no-progress"]
    for delay in (0.0, 0.3):
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(f"/proc/{proc.pid}/status") as status:
                caught = next(line for line in status if line.startswith("SigCgt:"))
            if int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                break
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("topk-certify: error: terminated (SIGTERM)"), err
