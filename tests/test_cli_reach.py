"""`topk-certify certify` on what users bring: Cohen-format checkpoints, CIFAR-10 and ImageNet
folders, --skip/--max selections, resumes of them, and the broken versions of each.

Most runs call the command's `main` in this process (torch is imported once, so each run
costs milliseconds, not seconds); `capfd` reads stderr at the file-descriptor level, so a
line written by C code would be seen too. The ResNet-50 run and the killed run go through
`python -m topk_certify` as a user would.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from topk_certify.cli import main  # noqa: E402
from topk_certify.models import ARCHITECTURES, build_model  # noqa: E402

# The models the runs load as `models.py:NAME`. Slow sleeps so that a run can be killed in
# its middle; Pooled is cheap on any 3-channel image size.
MODEL_FILE = """
import os
import time

import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


class Slow(Linear):
    def forward(self, x):
        time.sleep(float(os.environ.get("REACH_TEST_DELAY", "0")))
        return super().forward(x)


class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.weight = nn.Parameter(torch.randn(10, 3, generator=generator) * 40)

    def forward(self, x):
        centred = x.mean((2, 3)) - 0.5
        return centred @ self.weight.T
"""

# The same network as a user's own file would build it: Cohen et al.'s NormalizeLayer (plain
# tensor attributes, broadcast by repeat/permute) in front, the checkpoint's state_dict loaded.
SAME_NET_FILE = """
import sys

import torch
from topk_certify.models.cifar_resnet import CifarResNet

sys.path.insert(0, {tests!r})
from cohen_layers import CohenNormalizeLayer as NormalizeLayer

CHECKPOINT = {checkpoint!r}


def net():
    model = torch.nn.Sequential(
        NormalizeLayer([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]), CifarResNet(20, 10)
    )
    model.load_state_dict(torch.load(CHECKPOINT, weights_only=True)["state_dict"])
    return model.eval()
"""

NUM_CIFAR = 12
NUM_ARRAY = 20


class RunsCode:
    """Unpickling this runs a shell command: a file that does so must be refused unread."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def certify(capfd, *args):
    """(exit code, stderr lines) of `topk-certify certify ARGS`, run in this process."""
    capfd.readouterr()
    code = main(["certify", *map(str, args), "--no-progress"])
    return code, capfd.readouterr().err.splitlines()


def cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "topk_certify", "certify", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def read_rows(path):
    """The rows of OUT without their time column (the one cell that differs between runs)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    assert header[-1] == "time"
    return header[:-1], [line.split("\t")[:-1] for line in lines[1:]]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


def assert_one_error_line(code, lines, *needles):
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("topk-certify: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines


# ---------------------------------------------------------------------------------------
# Inputs written by the tests
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder with the model file, a CIFAR-10 root and an .npz data set."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "models.py").write_text(MODEL_FILE)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(NUM_CIFAR, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=NUM_CIFAR)]
    (root / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    batch = {"batch_label": "testing batch 1 of 1", "labels": labels, "data": data}
    (root / "cifar" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    x = rng.normal(size=(NUM_ARRAY, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 5, size=NUM_ARRAY)
    np.savez(root / "data.npz", x=x, y=y)
    return root, labels, y


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def cohen_checkpoint(path, arch, state_dict, data_parallel=False):
    """torch.save as Cohen et al.'s train.py leaves it: Sequential(normalize, net) keys under
    '1.', or '1.module.' when the net was wrapped in DataParallel."""
    if data_parallel:
        state_dict = {"1.module." + key[2:]: value for key, value in state_dict.items()}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": []}]}
    torch.save({"epoch": 90, "arch": arch, "state_dict": state_dict, "optimizer": optimizer}, path)


@pytest.fixture(scope="module")
def resnet20_checkpoint(tmp_path_factory):
    """A cifar_resnet20 whose predictions change with the noise: BatchNorm statistics measured
    on noisy images and a widened last layer (random weights alone give one class always)."""
    torch.manual_seed(0)
    model = build_model("cifar_resnet20")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model((torch.rand(64, 3, 32, 32) + 0.25 * torch.randn(64, 3, 32, 32)).clamp(0, 1))
        model[1].fc.weight.mul_(10)
    path = tmp_path_factory.mktemp("ck") / "checkpoint.pth.tar"
    cohen_checkpoint(path, "cifar_resnet20", model.eval().state_dict())
    return path


# ---------------------------------------------------------------------------------------
# 1. A Cohen-format checkpoint gives the rows of the same network as a Python file
# ---------------------------------------------------------------------------------------


def test_resnet20_checkpoint_gives_the_rows_and_counts_of_the_same_net_as_a_file(
    capfd, inputs, out, resnet20_checkpoint
):
    root, labels, _ = inputs
    same_net = root / "same_net.py"
    same_net.write_text(
        SAME_NET_FILE.format(checkpoint=str(resnet20_checkpoint), tests=str(Path(__file__).resolve().parent))
    )
    common = ["--data", f"cifar10:{root / 'cifar'}", "--sigma", "0.25", "--k", "1", "3", "--n", "200"]
    common += ["--batch-size", "200", "--seed", "5", "--skip", "3"]
    tables = []
    for name, spec in (("ck", resnet20_checkpoint), ("file", f"{same_net}:net")):
        code, err = certify(capfd, "--model", spec, *common, "-o", out / f"{name}.tsv", "--counts", out / f"{name}.txt")
        assert code == 0, err
        tables.append(read_rows(out / f"{name}.tsv"))
    assert tables[0] == tables[1]
    header, rows = tables[0]
    assert header == ["idx", "label", "radius@1", "radius@3"]
    assert [int(r[0]) for r in rows] == [0, 3, 6, 9]
    assert [int(r[1]) for r in rows] == [labels[i] for i in (0, 3, 6, 9)]
    counts = (out / "ck.txt").read_text()
    assert counts == (out / "file.txt").read_text()
    # The comparison is between counts the noise spreads over classes, not one constant class.
    per_example = [[int(c) for c in line.split()[:-1]] for line in counts.splitlines()[1:]]
    assert len(per_example) == 4 and all(sum(c) == 200 and len(c) == 10 for c in per_example)
    assert any(sum(1 for c in row if c) >= 2 for row in per_example), per_example


# ---------------------------------------------------------------------------------------
# 2. ResNet-50 saved from DataParallel ('1.module.*') on an ImageFolder
# ---------------------------------------------------------------------------------------


def _noise_image(width, height, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def image_folder(root, sizes=((300, 240), (230, 262), (64, 48), (256, 256))):
    """Two classes of two PNGs each, of different sizes; classes listed out of order."""
    for i, (name, file) in enumerate([("n02", "b.png"), ("n02", "a.png"), ("n01", "d.png"), ("n01", "c.png")]):
        (root / name).mkdir(parents=True, exist_ok=True)
        _noise_image(*sizes[i], seed=i).save(root / name / file)
    return root


def test_resnet50_data_parallel_checkpoint_certifies_an_image_folder(tmp_path, out):
    state = build_model("resnet50").state_dict()
    # The output is then the bias: every noisy sample is class 7 only if the file's
    # weights, not the random ones built in their place, are the ones run.
    state["1.fc.weight"].zero_()
    state["1.fc.bias"].zero_()
    state["1.fc.bias"][7] = 5.0
    checkpoint = tmp_path / "resnet50.pth.tar"
    cohen_checkpoint(checkpoint, "resnet50", state, data_parallel=True)
    folder = image_folder(tmp_path / "val")
    table, counts = out / "out.tsv", out / "counts.txt"
    # n 4, batch 16: the four images share one forward pass (plus the one-image probe).
    args = ["--model", checkpoint, "--data", f"imagenet:{folder}", "--sigma", "0.5", "--k", "1", "--n", "4"]
    run = cli(*args, "--batch-size", "16", "--seed", "1", "--device", "cpu", "-o", table, "--counts", counts)
    assert run.returncode == 0, run.stderr
    header, rows = read_rows(table)
    assert header == ["idx", "label", "radius@1"]
    assert [r[:2] for r in rows] == [["0", "0"], ["1", "0"], ["2", "1"], ["3", "1"]]  # n01 sorts first
    lines = counts.read_text().splitlines()[1:]
    expected = [0] * 1000
    expected[7] = 4
    assert [[int(c) for c in line.split()] for line in lines] == [expected + [label] for label in (0, 0, 1, 1)]
    assert sorted(p.name for p in out.iterdir()) == ["counts.txt", "out.tsv", "out.tsv.meta.json"]


# ---------------------------------------------------------------------------------------
# 3. --skip / --max, and resuming such a run
# ---------------------------------------------------------------------------------------

ARRAY_ARGS = ["--sigma", "0.5", "--k", "1", "2", "--n", "100", "--batch-size", "100", "--seed", "3"]


@pytest.fixture(scope="module")
def full_run(inputs, tmp_path_factory):
    """The rows of every example, uninterrupted and unselected."""
    root, _, _ = inputs
    path = tmp_path_factory.mktemp("full") / "full.tsv"
    args = ["--model", f"{root}/models.py:Linear", "--data", str(root / "data.npz"), *ARRAY_ARGS, "-o", str(path)]
    assert main(["certify", *args, "--no-progress"]) == 0
    return read_rows(path)[1]


@pytest.mark.parametrize("skip, limit", [(3, -1), (4, 10), (5, 1000), (1, 7), (7, 20), (25, -1)])
def test_skip_and_max_certify_idx_of_the_whole_data_set(capfd, inputs, out, full_run, skip, limit):
    root, _, y = inputs
    table = out / "out.tsv"
    args = ["--model", f"{root}/models.py:Linear", "--data", root / "data.npz", *ARRAY_ARGS]
    code, err = certify(capfd, *args, "--skip", skip, "--max", limit, "-o", table)
    assert code == 0, err
    rows = read_rows(table)[1]
    wanted = list(range(0, min(limit if limit >= 0 else NUM_ARRAY, NUM_ARRAY), skip))
    assert [int(r[0]) for r in rows] == wanted
    assert [int(r[1]) for r in rows] == [int(y[i]) for i in wanted]
    # idx is the index in the whole data set: each row is that example's row in the full run.
    assert rows == [full_run[i] for i in wanted]


def test_max_zero_selects_nothing_and_leaves_a_header_only_table(capfd, inputs, out):
    """--max 0 is accepted (an idx >= 0) and, as in Cohen et al.'s certify.py, selects no
    example: the table is its header. The model's classes must come from the model, not from
    the empty selection (the data's labels go up to 4, the model has 5 classes)."""
    root, _, y = inputs
    assert y.max() >= 2
    table = out / "out.tsv"
    args = ["--model", f"{root}/models.py:Linear", "--data", root / "data.npz", *ARRAY_ARGS]
    code, err = certify(capfd, *args, "--max", "0", "-o", table)
    assert code == 0, err
    assert read_rows(table) == (["idx", "label", "radius@1", "radius@2"], [])


def test_resume_of_a_killed_skip_run_gives_the_uninterrupted_rows(capfd, inputs, out, tmp_path, monkeypatch):
    root, _, _ = inputs
    base = ["--model", f"{root}/models.py:Slow", "--data", root / "data.npz", *ARRAY_ARGS, "--max", "15"]
    args = base + ["--skip", "2"]
    wanted = list(range(0, 15, 2))
    monkeypatch.delenv("REACH_TEST_DELAY", raising=False)
    reference = tmp_path / "ref"
    reference.mkdir()
    code, err = certify(capfd, *args, "-o", reference / "out.tsv", "--counts", reference / "counts.txt")
    assert code == 0, err

    table, counts = out / "out.tsv", out / "counts.txt"
    command = [sys.executable, "-m", "topk_certify", "certify", *map(str, args), "--no-progress"]
    env = dict(os.environ, REACH_TEST_DELAY="0.1")  # one example per forward: >= 0.1 s per row
    proc = subprocess.Popen(command + ["-o", str(table), "--counts", str(counts)], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if table.exists() and table.read_text().count("\n") >= 3:
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = table.read_text().count("\n") - 1
    assert 0 < done < len(wanted), "the kill should land in the middle of the run"

    # Another --skip is other settings: refused, and not a byte of the run changes. (The
    # killed run's lock file is stale, as the kernel dropped its lock; a later run may take
    # it over and remove it, so it is left out of the comparison.)
    before = snapshot(out)
    before.pop("out.tsv.lock", None)
    code, err = certify(capfd, *base, "--skip", "3", "-o", table, "--counts", counts, "--resume")
    assert_one_error_line(code, err, "other settings", "skip: 2 then, 3 now")
    after = snapshot(out)
    after.pop("out.tsv.lock", None)
    assert after == before and sorted(before) == ["counts.txt", "out.tsv", "out.tsv.meta.json"]

    code, err = certify(capfd, *args, "-o", table, "--counts", counts, "--resume")
    assert code == 0, err
    rows = read_rows(table)[1]
    assert [int(r[0]) for r in rows] == wanted
    assert rows == read_rows(reference / "out.tsv")[1]
    assert counts.read_text() == (reference / "counts.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["counts.txt", "out.tsv", "out.tsv.meta.json"]


# ---------------------------------------------------------------------------------------
# 4. Bad inputs: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------


def _bad_model(case, folder):
    """The --model spec of a broken checkpoint written into `folder`."""
    path = folder / "checkpoint.pth.tar"
    state = build_model("cifar_resnet20").state_dict()
    if case == "missing_checkpoint":
        pass
    elif case == "unknown_arch":
        cohen_checkpoint(path, "vgg16", state)
    elif case == "not_a_dict":
        torch.save([state], path)
    elif case == "missing_key":
        del state["1.fc.bias"]
        cohen_checkpoint(path, "cifar_resnet20", state)
    elif case == "missing_key_data_parallel":
        del state["1.layer2.0.downsample.0.weight"]
        cohen_checkpoint(path, "cifar_resnet20", state, data_parallel=True)
    elif case == "wrong_shape":
        state["1.fc.weight"] = torch.zeros(100, 64)
        cohen_checkpoint(path, "cifar_resnet20", state)
    elif case == "runs_code":
        torch.save({"arch": "cifar_resnet20", "state_dict": RunsCode(folder / "MARKER")}, path)
    return path


@pytest.mark.parametrize(
    "case, needles",
    [
        ("missing_checkpoint", ["--model ", "checkpoint.pth.tar: no such file"]),
        ("unknown_arch", ["unknown arch 'vgg16'", "known: " + ", ".join(ARCHITECTURES)]),
        ("not_a_dict", ["expected a dict with 'arch' and 'state_dict'", "got a list"]),
        ("missing_key", ["does not fit cifar_resnet20", "missing '1.fc.bias'"]),
        (
            "missing_key_data_parallel",
            ["does not fit cifar_resnet20", "missing '1.module.layer2.0.downsample.0.weight'"],
        ),
        ("wrong_shape", ["state_dict['1.fc.weight'] has shape (100, 64), cifar_resnet20 needs (10, 64)"]),
        ("runs_code", ["refused: its pickle refers to", "system"]),
    ],
)
def test_bad_checkpoints_are_one_line_and_write_nothing(capfd, inputs, out, tmp_path, case, needles):
    root, _, _ = inputs
    folder = tmp_path / "model"
    folder.mkdir()
    spec = _bad_model(case, folder)
    args = ["--model", spec, "--data", f"cifar10:{root / 'cifar'}", "--sigma", "0.25", "--k", "1", "--n", "10"]
    code, err = certify(capfd, *args, "-o", out / "out.tsv", "--counts", out / "counts.txt")
    assert_one_error_line(code, err, *needles)
    assert list(out.iterdir()) == []
    assert not (folder / "MARKER").exists()


def _png_header(width, height):
    """A PNG whose header declares width x height (no pixel data to speak of)."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _bad_data(case, folder):
    """The --data spec of a broken data set written into `folder`."""
    if case == "cifar_missing_folder":
        return f"cifar10:{folder / 'nowhere'}"
    if case == "cifar_runs_code":
        (folder / "cifar-10-batches-py").mkdir()
        batch = {"data": RunsCode(folder / "MARKER"), "labels": [0, 1]}
        (folder / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
        return f"cifar10:{folder}"
    if case == "first_image_corrupt":
        image_folder(folder / "val")
        (folder / "val" / "n01" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        return f"imagenet:{folder / 'val'}"
    if case in ("last_jpg_not_an_image", "png_declaring_ten_gigapixels", "png_links_to_each_other"):
        val = image_folder(folder / "val")
        if case == "last_jpg_not_an_image":
            (val / "n02" / "z.jpg").write_text("a text file with an image's name")
        elif case == "png_declaring_ten_gigapixels":
            (val / "n02" / "z.png").write_bytes(_png_header(100_000, 100_000))
        else:
            os.symlink("z.png", val / "n02" / "y.png")
            os.symlink("y.png", val / "n02" / "z.png")
        return f"imagenet:{val}"
    assert case == "npy_named_npz"
    with open(folder / "data.npz", "wb") as handle:
        np.save(handle, np.zeros((4, 3), np.float32))
    return str(folder / "data.npz")


@pytest.mark.parametrize(
    "case, needles",
    [
        ("cifar_missing_folder", ["--data cifar10:", "nowhere: no such folder"]),
        ("cifar_runs_code", ["test_batch: refused: the pickle refers to", "system"]),
        # The one-image probe before any file is written reads the first image.
        ("first_image_corrupt", ["c.png: not a readable image"]),
        ("npy_named_npz", ["data.npz: an .npy file (one array) named .npz"]),
        # Every selected file's header is opened before a file is written, not only the first.
        ("last_jpg_not_an_image", ["z.jpg: not a readable image"]),
        ("png_declaring_ten_gigapixels", ["z.png: refused"]),
        ("png_links_to_each_other", ["y.png: cannot open it (Too many levels of symbolic links)"]),
    ],
)
def test_bad_data_is_one_line_and_writes_nothing(capfd, inputs, out, tmp_path, case, needles):
    root, _, _ = inputs
    folder = tmp_path / "data"
    folder.mkdir()
    spec = _bad_data(case, folder)
    args = ["--model", f"{root}/models.py:Pooled", "--data", spec, "--sigma", "0.25", "--k", "1", "--n", "10"]
    code, err = certify(capfd, *args, "-o", out / "out.tsv", "--counts", out / "counts.txt")
    assert_one_error_line(code, err, *needles)
    assert list(out.iterdir()) == []
    assert not (folder / "MARKER").exists()


def test_corrupt_image_in_the_middle_stops_a_run_that_resumes_once_fixed(capfd, inputs, out, tmp_path):
    """Images are decoded as they are certified, so a broken third image surfaces after two
    rows: the run ends with one line, keeping those rows as a run --resume continues."""
    root, _, _ = inputs
    folder = image_folder(tmp_path / "val")
    broken = folder / "n02" / "a.png"  # idx 2: n01/c.png, n01/d.png, then n02/a.png
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 3])  # a truncated download
    table, counts = out / "out.tsv", out / "counts.txt"
    args = ["--model", f"{root}/models.py:Pooled", "--data", f"imagenet:{folder}", "--sigma", "0.25", "--k", "1"]
    # One example a round (ceil(4 * 5 / 20)): the rows before the broken image are written.
    args += ["--n", "20", "--batch-size", "5", "--seed", "2", "-o", table, "--counts", counts]
    code, err = certify(capfd, *args)
    assert_one_error_line(code, err, f"{broken}: not a readable image")
    assert sorted(p.name for p in out.iterdir()) == ["counts.txt", "out.tsv", "out.tsv.meta.json"]  # no lock
    assert [r[0] for r in read_rows(table)[1]] == ["0", "1"]
    assert len(counts.read_text().splitlines()) == 1 + 2

    broken.write_bytes(good)
    code, err = certify(capfd, *args, "--resume")
    assert code == 0, err
    fresh = tmp_path / "fresh.tsv"
    code, err = certify(capfd, *args[: args.index("-o")], "-o", fresh)
    assert code == 0, err
    assert read_rows(table) == read_rows(fresh)
    assert [r[:2] for r in read_rows(table)[1]] == [["0", "0"], ["1", "0"], ["2", "1"], ["3", "1"]]
