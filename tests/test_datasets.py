"""topk_certify.datasets: each source reads what torchvision would, lazily; bad data says why."""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from _fixtures_data import cifar_batch, py2_pickle
from topk_certify.datasets import DataError, DataSource, open_data
from topk_certify.datasets.npz import RowFileSource
from topk_certify.datasets.safe_pickle import RefusedGlobal, load_numpy_pickle


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------------------
# CIFAR-10 in torchvision's on-disk format
# ---------------------------------------------------------------------------------------


@pytest.fixture
def cifar_root(tmp_path):
    batch, data, labels = cifar_batch(7)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(py2_pickle(batch))
    (folder / "data_batch_1").write_bytes(b"training data is never read")
    return tmp_path, data, labels


def test_cifar10_reads_pixels_in_torchvision_chw_order(cifar_root):
    root, data, labels = cifar_root
    source = open_data(f"cifar10:{root}")
    assert isinstance(source, DataSource)
    assert len(source) == 7 and source.sample_shape == (3, 32, 32) and source.dtype == np.float32
    assert source.labels.dtype == np.int64 and source.labels.tolist() == labels
    x = source.read([5, 0, 5])
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32
    # Row layout: 1024 red, then green, then blue values, each plane row-major 32x32.
    c, h, w = 2, 7, 30
    assert x[0, c, h, w] == np.float32(data[5, c * 1024 + h * 32 + w]) / np.float32(255)
    np.testing.assert_array_equal(x[1], data[0].reshape(3, 32, 32) / np.float32(255))
    np.testing.assert_array_equal(x[2], x[0])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_cifar10_root_may_be_the_batches_folder_itself(cifar_root):
    root, data, _ = cifar_root
    source = open_data(f"cifar10:{root / 'cifar-10-batches-py'}")
    np.testing.assert_array_equal(source.read([3])[0], data[3].reshape(3, 32, 32) / np.float32(255))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_written_by_python3_pickle(tmp_path, protocol):
    batch, data, labels = cifar_batch(3, seed=1)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    source = open_data(f"cifar10:{tmp_path}")
    assert source.labels.tolist() == labels
    np.testing.assert_array_equal(source.read([2])[0], data[2].reshape(3, 32, 32) / np.float32(255))


def test_cifar10_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    batch, _, _ = cifar_batch(2)
    batch[b"labels"] = _RunsCode(marker)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(
        DataError, match=r"test_batch: refused: the pickle refers to (posix|nt)\.system.*could run code"
    ):
        open_data(f"cifar10:{tmp_path}")
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.pop(b"labels"), r"no 'labels'"),
        (lambda b: b.update({b"data": b[b"data"].reshape(-1, 3, 32, 32)}), r"'data' must be a uint8 array \(N, 3072\)"),
        (lambda b: b.update({b"data": b[b"data"].astype(np.float32)}), r"got float32"),
        (lambda b: b.update({b"labels": b[b"labels"][:-1]}), r"3 images but 2 labels"),
        (lambda b: b.update({b"labels": [0, 1, 10]}), r"labels are 0 to 9, got 10"),
        (lambda b: b.update({b"labels": [0, 1, -1]}), r"labels >= 0"),
        (lambda b: b.update({b"labels": ["cat", "dog", "cat"]}), r"integer class labels"),
    ],
)
def test_cifar10_malformed_batches(tmp_path, change, message):
    batch, _, _ = cifar_batch(3)
    change(batch)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=message):
        open_data(f"cifar10:{tmp_path}")


def test_cifar10_batch_holding_no_images_says_so(tmp_path):
    batch = {"data": np.zeros((0, 3072), dtype=np.uint8), "labels": [], "batch_label": "testing batch 1 of 1"}
    for protocol in (2, 4):
        (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
        with pytest.raises(DataError, match=r"test_batch: holds no images"):
            open_data(f"cifar10:{tmp_path}")


def test_restricted_unpickler_builds_only_empty_bytes():
    assert load_numpy_pickle(io.BytesIO(pickle.dumps(b"", protocol=2))) == b""
    crafted = b"\x80\x02c__builtin__\nbytes\nK\x10\x85R."  # bytes(16): an allocation of any size
    with pytest.raises(pickle.UnpicklingError, match=r"bytes\(\) called with arguments"):
        load_numpy_pickle(io.BytesIO(crafted))


def test_cifar10_missing_folder_or_batch(tmp_path):
    with pytest.raises(DataError, match=r"cifar10:.*nope: no such folder"):
        open_data(f"cifar10:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match=r"no cifar-10-batches-py/test_batch there.*nothing is downloaded"):
        open_data(f"cifar10:{tmp_path}")
    (tmp_path / "test_batch").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR-10 python batch"):
        open_data(f"cifar10:{tmp_path}")


def test_restricted_unpickler_allows_arrays_and_refuses_other_globals(tmp_path):
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    back = load_numpy_pickle(io.BytesIO(pickle.dumps({"a": array, "b": [1, "two", 3.0, None]}, protocol=2)))
    np.testing.assert_array_equal(back["a"], array)
    assert back["b"] == [1, "two", 3.0, None]
    marker = tmp_path / "ran"
    for evil in (_RunsCode(marker), np.float64(1.0), {1, 2}):
        with pytest.raises(RefusedGlobal):
            load_numpy_pickle(io.BytesIO(pickle.dumps(evil, protocol=2)))
    assert not marker.exists()
    # _codecs.encode is allowed only for latin1, what protocol 2 uses for bytes.
    crafted = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R."
    with pytest.raises(pickle.UnpicklingError, match="zlib"):
        load_numpy_pickle(io.BytesIO(crafted))


# ---------------------------------------------------------------------------------------
# ImageNet-style ImageFolder
# ---------------------------------------------------------------------------------------


@pytest.fixture
def pil():
    return pytest.importorskip("PIL.Image")


def _noise_image(Image, width, height, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.fixture
def image_folder(tmp_path, pil):
    root = tmp_path / "val"
    for name in ("n02", "n01", "n03_empty"):
        (root / name).mkdir(parents=True)
    _noise_image(pil, 301, 240, 0).save(root / "n01" / "b.png")
    _noise_image(pil, 230, 262, 1).save(root / "n01" / "a.JPEG", quality=90)
    for name in ("z.png", "B.PNG", "m.webp", "c.tif"):  # more names, so listing order is unlikely sorted
        _noise_image(pil, 12, 9, 4).save(root / "n01" / name)
    _noise_image(pil, 256, 300, 2, mode="L").save(root / "n02" / "c.png")
    (root / "n02" / "sub").mkdir()
    _noise_image(pil, 240, 240, 3, mode="P").save(root / "n02" / "sub" / "d.bmp")
    (root / "n02" / "notes.txt").write_text("not an image")
    return root


def _cohen_by_hand(Image, path, new_size, box):
    with Image.open(path) as image:
        image = image.convert("RGB")
        if new_size != image.size:
            image = image.resize(new_size, Image.BILINEAR)
        return np.asarray(image.crop(box), dtype=np.float32).transpose(2, 0, 1) / np.float32(255)


def test_image_folder_order_labels_and_shape(image_folder):
    source = open_data(f"imagenet:{image_folder}")
    assert source.classes == ["n01", "n02", "n03_empty"]
    names = [os.path.relpath(path, image_folder) for path in source.paths]
    n01 = ["B.PNG", "a.JPEG", "b.png", "c.tif", "m.webp", "z.png"]  # code-point order, as sorted()
    assert names == [f"n01/{n}" for n in n01] + ["n02/c.png", os.path.join("n02", "sub", "d.bmp")]
    assert source.labels.tolist() == [0] * 6 + [1, 1]
    assert source.sample_shape == (3, 224, 224) and source.dtype == np.float32
    x = source.read([6, 7, 1])
    assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(x[0, 0], x[0, 1])  # a greyscale image becomes equal RGB channels


def test_image_folder_resize_and_crop_follow_torchvision(image_folder, pil):
    source = open_data(f"imagenet:{image_folder}")

    def check(index, path, new_size, box):
        np.testing.assert_array_equal(source.read([index])[0], _cohen_by_hand(pil, path, new_size, box))

    # 301x240 (landscape): height 256, width int(256 * 301 / 240) = 321; crop left
    # int(round(97 / 2)) = 48 (round half to even), top int(round(32 / 2)) = 16.
    check(2, image_folder / "n01" / "b.png", (321, 256), (48, 16, 272, 240))
    # 230x262 (portrait): width 256, height int(256 * 262 / 230) = int(291.6) = 291 (truncated,
    # not rounded); left 16, top int(round(33.5)) = 34.
    check(1, image_folder / "n01" / "a.JPEG", (256, 291), (16, 34, 240, 258))
    # 256x300: the shorter side is already 256, so no resampling at all; top int(round(38)) = 38.
    check(6, image_folder / "n02" / "c.png", (256, 300), (16, 38, 240, 262))
    # 12x9, upscaled: height 256, width int(256 * 12 / 9) = 341; left int(round(58.5)) = 58.
    check(0, image_folder / "n01" / "B.PNG", (341, 256), (58, 16, 282, 240))


def test_image_folder_corrupt_image_is_named_when_read(image_folder):
    (image_folder / "n03_empty" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    source = open_data(f"imagenet:{image_folder}")
    assert len(source) == 9 and source.labels[-1] == 2
    source.read([0])  # the others still read
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        source.read([8])


def test_image_folder_truncated_image(image_folder):
    data = (image_folder / "n01" / "a.JPEG").read_bytes()
    (image_folder / "n01" / "a.JPEG").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"a\.JPEG: not a readable image"):
        open_data(f"imagenet:{image_folder}").read([1])


def _png_header(width, height):
    """A PNG whose header declares width x height (no pixel data to speak of)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize(
    "case, message",
    [
        ("text_named_jpg", r"n02/z\.jpg: not a readable image"),
        ("ten_gigapixel_png", r"n02/z\.png: refused"),
        ("above_the_pixel_limit", r"n02/z\.png: refused: 10000x10000 = 100000000 pixels, above Pillow's limit"),
        ("links_to_each_other", r"n02/[yz]\.png: cannot open it \(Too many levels of symbolic links\)"),
        ("link_to_nothing", r"n02/z\.png: cannot open it \(No such file or directory\)"),
    ],
)
def test_image_folder_check_inputs_opens_every_selected_header(image_folder, pil, case, message):
    folder = image_folder / "n02"
    if case == "text_named_jpg":
        (folder / "z.jpg").write_text("this is a text file")
    elif case == "ten_gigapixel_png":
        (folder / "z.png").write_bytes(_png_header(100_000, 100_000))
    elif case == "above_the_pixel_limit":  # between Pillow's warning (1x) and its error (2x)
        (folder / "z.png").write_bytes(_png_header(10_000, 10_000))
    elif case == "links_to_each_other":
        os.symlink("z.png", folder / "y.png")
        os.symlink("y.png", folder / "z.png")
    else:
        os.symlink("gone.png", folder / "z.png")
    source = open_data(f"imagenet:{image_folder}")
    bad = max(i for i, path in enumerate(source.paths) if os.path.basename(path) in ("y.png", "z.png", "z.jpg"))
    source.check_inputs([0, 1, 6])  # the selection may leave a bad file out
    with pytest.raises(DataError, match=message):
        source.check_inputs([0, 1, bad])


def test_image_folder_check_inputs_passes_a_truncated_image_that_read_refuses(image_folder):
    """A truncated file has a good header: its failure is found when it is decoded."""
    data = (image_folder / "n01" / "a.JPEG").read_bytes()
    (image_folder / "n01" / "a.JPEG").write_bytes(data[: len(data) // 2])
    source = open_data(f"imagenet:{image_folder}")
    source.check_inputs(range(len(source)))
    with pytest.raises(DataError, match=r"a\.JPEG: not a readable image"):
        source.read([1])


def test_image_folder_never_visits_a_folder_twice(image_folder, pil):
    """A link back up (a loop) adds nothing; two paths to one folder count it once; the
    order stays torchvision's."""
    before = open_data(f"imagenet:{image_folder}")
    os.symlink("..", image_folder / "n01" / "loop")
    os.symlink(os.path.join("..", ".."), image_folder / "n02" / "sub" / "up")
    os.symlink("sub", image_folder / "n02" / "zz_same_as_sub")
    after = open_data(f"imagenet:{image_folder}")
    assert after.paths == before.paths and after.labels.tolist() == before.labels.tolist()
    # A linked folder that is not a loop is followed, as torchvision does.
    other = image_folder.parent / "more"
    other.mkdir()
    _noise_image(pil, 20, 20, 9).save(other / "e.png")
    os.symlink(other, image_folder / "n03_empty" / "more")
    linked = open_data(f"imagenet:{image_folder}")
    assert linked.paths == before.paths + [str(image_folder / "n03_empty" / "more" / "e.png")]
    assert linked.labels.tolist()[-1] == 2


def test_image_folder_without_pillow_is_an_import_error(tmp_path, monkeypatch):
    (tmp_path / "cls").mkdir()
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail
    with pytest.raises(ImportError, match=r"imagenet:DIR needs Pillow.*pip install pillow"):
        open_data(f"imagenet:{tmp_path}")


def test_image_folder_empty_or_missing(tmp_path, pil):
    with pytest.raises(DataError, match=r"no such folder"):
        open_data(f"imagenet:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match=r"no class folders"):
        open_data(f"imagenet:{tmp_path}")
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images in its 1 class folders"):
        open_data(f"imagenet:{tmp_path}")


# ---------------------------------------------------------------------------------------
# .npz and .pt files
# ---------------------------------------------------------------------------------------


def _xy(n=6, shape=(3, 5, 4), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)).astype(dtype), rng.integers(0, 10, size=n)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_reads_what_np_load_reads(tmp_path, compressed):
    x, y = _xy()
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    source = open_data(str(path))
    assert isinstance(source, RowFileSource) is (not compressed)  # read by rows exactly when stored
    with np.load(path) as eager:
        np.testing.assert_array_equal(source.read([5, 1, 1, 0]), eager["x"][[5, 1, 1, 0]])
        np.testing.assert_array_equal(source.labels, eager["y"])
    assert source.sample_shape == (3, 5, 4) and source.dtype == np.float32 and len(source) == 6
    out = source.read([2])
    out[:] = 0  # a fresh, writable copy: the file is untouched
    assert source.read([2]).any()
    source.close()


def test_npz_row_reads_handle_fortran_big_endian_and_zip64(tmp_path):
    x, y = _xy(dtype=np.float64)
    path = tmp_path / "f.npz"
    np.savez(path, x=np.asfortranarray(x.astype(">f8")), y=y)
    source = open_data(path)
    assert not isinstance(source, RowFileSource)  # Fortran order: no rows to read, loaded whole
    assert source.dtype == np.float64 and source.dtype.isnative
    np.testing.assert_array_equal(source.read(range(6)), x)
    big = tmp_path / "b.npz"
    np.savez(big, x=x.astype(">f8"), y=y)
    source = open_data(big)
    assert isinstance(source, RowFileSource) and source.dtype.isnative
    got = source.read([5, 0, 1, 2, 4])  # runs of consecutive rows and single rows
    assert got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, x[[5, 0, 1, 2, 4]])
    # A member written by another zip tool, after other members and with a zip64 extra field.
    path2 = tmp_path / "g.npz"
    with zipfile.ZipFile(path2, "w") as archive:
        archive.writestr("readme.txt", "padding before the arrays")
        for key, value in (("y", y), ("x", x)):
            buffer = io.BytesIO()
            np.save(buffer, value)
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                member.write(buffer.getvalue())
    source = open_data(path2)
    assert isinstance(source, RowFileSource)
    np.testing.assert_array_equal(source.read([4, 2]), x[[4, 2]])


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((3, 2), np.float32)}, r"no array 'y' \(it needs x and y; found \['x'\]\)"),
        ({"images": np.zeros((3, 2)), "labels": np.zeros(3)}, r"no array 'x' or 'y'"),
        ({"x": np.zeros((3, 2), np.float32), "y": np.zeros(4, np.int64)}, r"same number of examples"),
        ({"x": np.zeros((3, 2), np.float32), "y": np.zeros((3, 1), np.int64)}, r"y must be a 1-D array"),
        ({"x": np.zeros((3, 2), np.float32), "y": np.array([0.0, 1.5, 2.0])}, r"integer class labels"),
        (
            {"x": np.zeros((3, 2), np.float32), "y": np.array([True, False, True])},
            r"integer class labels, got dtype bool",
        ),
        (
            {"x": np.zeros((3, 2), np.uint8), "y": np.zeros(3, np.int64)},
            r"x must hold floating-point examples.*got dtype uint8",
        ),
        ({"x": np.zeros((0, 2), np.float32), "y": np.zeros(0, np.int64)}, r"holds no examples"),
        ({"x": np.array([None, 1], dtype=object), "y": np.zeros(2, np.int64)}, r"Python objects"),
    ],
)
def test_npz_bad_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        open_data(tmp_path / "bad.npz")


def test_npz_whole_number_float_labels_are_accepted(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=np.array([2.0, 0.0, 7.0]))
    labels = open_data(tmp_path / "d.npz").labels
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0, 7]
    with pytest.raises(ValueError):
        labels[0] = 1  # read-only


def test_npy_saved_as_npz_and_other_non_zip_files(tmp_path):
    with open(tmp_path / "one.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match=r"one\.npz: an \.npy file \(one array\) named \.npz"):
        open_data(tmp_path / "one.npz")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DataError, match=r"p\.npz: not an \.npz archive"):
        open_data(tmp_path / "p.npz")
    with pytest.raises(DataError, match=r"one array; save x and y together"):
        open_data(tmp_path / "x.npy")


def test_read_checks_indices(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    source = open_data(tmp_path / "d.npz")
    assert source.read([]).shape == (0, 3, 5, 4)
    with pytest.raises(ValueError, match=r"index 6 is out of range .*6 examples"):
        source.read([0, 6])
    with pytest.raises(ValueError, match=r"index -1 is out of range"):
        source.read([-1])
    with pytest.raises(TypeError, match="indices must be integers"):
        source.read([0.5])
    with pytest.raises(ValueError, match="1-D"):
        source.read([[0, 1]])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_pt_file_detaches_and_reads(tmp_path, torch):
    x, y = _xy(seed=3)
    path = tmp_path / "d.pt"
    torch.save(
        {"x": torch.from_numpy(x).requires_grad_(), "y": torch.from_numpy(y), "note": "extra keys are fine"}, path
    )
    source = open_data(str(path))
    np.testing.assert_array_equal(source.read([3, 0]), x[[3, 0]])
    assert source.labels.tolist() == y.tolist() and source.labels.dtype == np.int64


@pytest.mark.parametrize(
    "blob, message",
    [
        (lambda t: [1, 2], r"expected a dict with tensors 'x' and 'y', got a list"),
        (lambda t: {"x": t.zeros(2, 3)}, r"no 'y'"),
        (lambda t: {"x": [0.0, 1.0], "y": t.zeros(2)}, r"'x' must be a tensor, got a list"),
        (lambda t: {"x": t.zeros(2, 3, dtype=t.bfloat16), "y": t.zeros(2)}, r"bfloat16"),
        (lambda t: {"x": t.zeros(2, 3), "y": t.tensor([0.5, 1.0])}, r"integer class labels"),
    ],
)
def test_pt_bad_contents(tmp_path, torch, blob, message):
    torch.save(blob(torch), tmp_path / "bad.pth")
    with pytest.raises(DataError, match=message):
        open_data(tmp_path / "bad.pth")


def test_pt_sparse_x_is_made_dense(tmp_path, torch):
    import warnings

    torch.save({"x": torch.eye(2, 3).to_sparse(), "y": torch.tensor([1, 0])}, tmp_path / "sparse.pt")
    with warnings.catch_warnings():  # torch notes that it validates sparse tensors on load
        warnings.simplefilter("ignore")
        source = open_data(tmp_path / "sparse.pt")
    np.testing.assert_array_equal(source.read([1, 0]), [[0, 1, 0], [1, 0, 0]])


def test_pt_pickle_that_would_run_code_is_refused(tmp_path, torch):
    marker = tmp_path / "ran"
    torch.save({"x": torch.zeros(2, 3), "y": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match=r"refused: its pickle refers to (posix|nt)\.system"):
        open_data(tmp_path / "evil.pt")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------


def test_spec_errors(tmp_path):
    with pytest.raises(
        DataError, match=r"unknown data scheme 'mnist' \(allowed: cifar10:ROOT, imagenet:DIR, or a \.npz"
    ):
        open_data("mnist:/data")
    with pytest.raises(DataError, match=r"missing\.npz: no such file"):
        open_data(tmp_path / "missing.npz")
    with pytest.raises(DataError, match=r"name the folder after the colon"):
        open_data("cifar10:")
    with pytest.raises(DataError, match=r"not a data set this reads"):
        open_data(tmp_path / "data.csv")
    with pytest.raises(TypeError, match="a data spec must be a string or a path"):
        open_data(3)


def test_npz_and_cifar_sources_do_not_import_torch(tmp_path, cifar_root):
    import subprocess

    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int64))
    code = (
        "import sys; from topk_certify.datasets import open_data; "
        f"open_data({str(tmp_path / 'd.npz')!r}).read([1]); open_data('cifar10:' + {str(cifar_root[0])!r}).read([0]); "
        "print('torch' in sys.modules, 'PIL' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
