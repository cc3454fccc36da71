"""An ImageNet validation folder, preprocessed as Cohen et al. certify it.

Layout as torchvision's ImageFolder: one folder per class under DIR, classes numbered in
sorted name order (every folder counts, also an empty one, as in torchvision's
class_to_idx), images found recursively, files in sorted order, extensions as torchvision's
IMG_EXTENSIONS in any case. Each image: RGB, shorter side resized to 256 (bilinear),
centre 224x224 crop, float32 CHW in [0, 1] (torchvision's Resize(256), CenterCrop(224),
ToTensor). Images are decoded when read, so memory does not grow with the folder.
Needs Pillow.
"""

from __future__ import annotations

import os
import warnings
from typing import List, Tuple

import numpy as np

from .errors import DataError
from .source import DataSource

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RESIZE = 256
CROP = 224


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("imagenet:DIR needs Pillow to decode images (pip install pillow)") from None
    return Image


def resized_size(width: int, height: int, size: int = RESIZE) -> Tuple[int, int]:
    """(width, height) with the shorter side `size`, as torchvision's Resize(size) computes it."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def crop_box(width: int, height: int, size: int = CROP) -> Tuple[int, int, int, int]:
    """The centre crop (left, top, right, bottom), rounded as torchvision's CenterCrop."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def preprocess(image) -> np.ndarray:
    """A PIL image as Cohen et al.'s ImageNet test transform leaves it: float32 (3, 224, 224)."""
    Image = _pil()
    image = image.convert("RGB")
    target = resized_size(*image.size)
    if target != image.size:  # torchvision leaves an image already the right size untouched
        image = image.resize(target, Image.BILINEAR)
    image = image.crop(crop_box(*image.size))
    pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    return pixels.astype(np.float32) / np.float32(255)


def _walk_once(top: str, root_real: str) -> List[Tuple[str, List[str]]]:
    """(folder, its files) under `top`, following links but entering no folder twice (by real
    path) and none that holds the root (a loop back up); in torchvision's sorted order."""
    seen = set()
    found = []
    for folder, dirs, files in os.walk(top, followlinks=True):
        dirs.sort()  # a deterministic walk: the first of two paths to one folder is kept
        real = os.path.realpath(folder)
        if real in seen or (folder != top and (root_real + os.sep).startswith(real + os.sep)):
            dirs[:] = []
            continue
        seen.add(real)
        found.append((folder, files))
    return sorted(found)


def find_images(root: str) -> Tuple[List[str], List[Tuple[str, int]]]:
    """(class names, [(path, class index)]) in torchvision's ImageFolder order."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    root_real = os.path.realpath(root)
    samples = []
    for index, name in enumerate(classes):
        for folder, files in _walk_once(os.path.join(root, name), root_real):
            for file in sorted(files):
                if file.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(folder, file), index))
    return classes, samples


def check_header(Image, path: str) -> None:
    """Opens `path`'s image header only (no decoding): a DataError for a path that does not
    resolve, a file that is not an image, or one above Pillow's pixel-count limit."""
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below, by the limit
            with Image.open(f) as image:
                width, height = image.size
    except OSError as exc:
        if exc.filename is not None or isinstance(exc, (FileNotFoundError, PermissionError)):
            raise DataError(f"{path}: cannot open it ({exc.strerror or exc})") from None
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused: {exc}") from None
    except Exception as exc:  # Pillow's header parsers fail on broken files in many ways
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise DataError(
            f"{path}: refused: {width}x{height} = {width * height} pixels, above Pillow's limit of {limit} "
            "(a decompression bomb, or an image too large to certify)"
        )


class ImageFolderSource(DataSource):
    finite_by_construction = True  # 8-bit pixels scaled to [0, 1]

    def __init__(self, root: str):
        self._image = _pil()
        if not os.path.isdir(root):
            raise DataError(f"imagenet:{root}: no such folder")
        try:
            self.classes, self._samples = find_images(root)
        except OSError as exc:
            raise DataError(f"imagenet:{root}: cannot list it ({exc.strerror or exc})") from None
        if not self.classes:
            raise DataError(
                f"imagenet:{root}: no class folders (expected DIR/<class>/<image>, as torchvision's ImageFolder)"
            )
        if not self._samples:
            raise DataError(
                f"imagenet:{root}: no images in its {len(self.classes)} class folders (extensions {', '.join(IMG_EXTENSIONS)})"
            )
        labels = np.array([label for _, label in self._samples], dtype=np.int64)
        super().__init__(f"imagenet:{root}", labels, (3, CROP, CROP), np.float32)

    @property
    def paths(self) -> List[str]:
        return [path for path, _ in self._samples]

    def check_inputs(self, indices) -> None:
        for i in indices:
            check_header(self._image, self._samples[int(i)][0])

    def _read(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), 3, CROP, CROP), dtype=np.float32)
        for row, i in enumerate(index):
            out[row] = self._load(self._samples[i][0])
        return out

    def _load(self, path: str) -> np.ndarray:
        Image = self._image
        try:
            with open(path, "rb") as f:
                return preprocess(Image.open(f))
        except Image.DecompressionBombError as exc:
            raise DataError(f"{path}: refused: {exc}") from None
        except Exception as exc:  # Pillow's decoders fail on broken files in many ways
            raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def open_imagefolder(root: str) -> ImageFolderSource:
    return ImageFolderSource(root)
