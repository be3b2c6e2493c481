"""Image data for the vision models: the shipped MNIST subset, CIFAR "python" pickles, and
arrays from a user's ``.npz`` file. Every loader checks what it reads and names the problem.

MNIST split (fixed, by position in the shipped file, whose order is already shuffled):
images 0..7499 train, 7500..7999 validation (monitoring only), 8000..8999 test. No test image
is used for any choice; the test set is scored once per trained model.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["MNIST_FILE", "MNIST_SPLIT", "load_mnist", "mnist_parts", "mnist_split", "check_image_arrays", "load_image_npz",
           "load_cifar", "load_image_folder", "to_tensor"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")

MNIST_FILE = Path(__file__).resolve().parent / "data" / "mnist9k.npz"
MNIST_SPLIT = {"train": (0, 7500), "val": (7500, 8000), "test": (8000, 9000)}


def check_image_arrays(images, labels, *, classes: int, shape: tuple[int, ...] | None = None,
                       source: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``images`` (N, *shape) uint8 and ``labels`` (N,) integers in [0, classes)."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 (0..255), got dtype {images.dtype}")
    if shape is not None and images.shape[1:] != tuple(shape):
        raise ValueError(f"{source}: images must have shape (N, {', '.join(map(str, shape))}), got {images.shape}")
    if images.ndim < 3 or images.shape[0] == 0:
        raise ValueError(f"{source}: need a non-empty stack of images (N, H, W[, channels]), got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{source}: labels must have shape ({images.shape[0]},) to match the images, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"{source}: labels must lie in 0..{classes - 1}, got {labels.min()}..{labels.max()}")
    return images, labels.astype(np.int64)


def load_image_npz(path: str | Path, *, classes: int = 10, shape: tuple[int, ...] | None = (28, 28)):
    """``images`` and ``labels`` from a ``.npz`` file, checked (see :func:`check_image_arrays`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    try:
        with np.load(path, allow_pickle=False) as blob:
            arrays = {name: blob[name] for name in blob.files}
    except (OSError, EOFError, ValueError, pickle.UnpicklingError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    missing = {"images", "labels"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: missing array(s) {sorted(missing)} (found {sorted(arrays)})")
    images, labels = arrays["images"], arrays["labels"]
    return check_image_arrays(images, labels, classes=classes, shape=shape, source=str(path))


def load_mnist(path: str | Path | None = None):
    """The shipped 9,000 MNIST digits (or a file of the same format): images (N, 28, 28) uint8."""
    return load_image_npz(MNIST_FILE if path is None else path, classes=10, shape=(28, 28))


def mnist_parts(path: str | Path | None = None) -> dict:
    """All parts of the fixed split from one read of the file: ``{part: (images, labels)}``."""
    images, labels = load_mnist(path)
    if len(images) < MNIST_SPLIT["test"][1]:
        raise ValueError(f"the MNIST split needs {MNIST_SPLIT['test'][1]} images, the file has {len(images)}")
    return {part: (images[lo:hi], labels[lo:hi]) for part, (lo, hi) in MNIST_SPLIT.items()}


def mnist_split(part: str, path: str | Path | None = None):
    """One part of the fixed split: ``"train"``, ``"val"`` or ``"test"`` (see the module docstring)."""
    if part not in MNIST_SPLIT:
        raise ValueError(f"split part must be one of {sorted(MNIST_SPLIT)}, got {part!r}")
    return mnist_parts(path)[part]


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, channels) -> float32 (N, channels, H, W) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a CIFAR python pickle ({err})") from None


def _field(blob: dict, *names: str, path: Path):
    for name in names:
        for key in (name, name.encode()):
            if key in blob:
                return blob[key]
    raise ValueError(f"{path}: no {' or '.join(names)!s} entry (found {sorted(map(str, blob))})")


def load_cifar(root: str | Path, part: str = "train"):
    """CIFAR-10 or CIFAR-100 in the standard "python" pickle layout, from a folder the user names.

    CIFAR-10: ``data_batch_1..5`` and ``test_batch``; CIFAR-100: ``train`` and ``test`` (fine
    labels). Returns images (N, 32, 32, 3) uint8, labels (N,) int64 and the class count.
    (Security: pickles can run code when loaded; only point this at files you trust.)
    """
    root = Path(root)
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"no such CIFAR folder: {root}")
    if (root / "data_batch_1").exists() or (root / "test_batch").exists():
        files, key, classes = ([root / f"data_batch_{k}" for k in range(1, 6)] if part == "train"
                               else [root / "test_batch"]), ("labels",), 10
    elif (root / "train").exists() or (root / "test").exists():
        files, key, classes = [root / part], ("fine_labels",), 100
    else:
        raise ValueError(f"{root}: neither CIFAR-10 (data_batch_1, test_batch) nor CIFAR-100 (train, test) files found")
    xs, ys = [], []
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"missing CIFAR file: {f}")
        blob = _unpickle(f)
        data = np.asarray(_field(blob, "data", path=f))
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{f}: 'data' must be (N, 3072) (32x32 RGB rows), got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(_field(blob, *key, path=f)))
    images, labels = np.concatenate(xs), np.concatenate(ys)
    images, labels = check_image_arrays(images, labels, classes=classes, shape=(32, 32, 3), source=str(root))
    return images, labels, classes


def load_image_folder(root: str | Path, size: tuple[int, int] = (28, 28), grayscale: bool = True,
                      invert: bool = False):
    """Images in the common class-folder layout ``root/<class>/<image>`` (png, jpg, ...), resized
    to ``size`` (height, width). Classes are the sub-folder names, sorted (digit names "0".."9"
    map to their digits). Returns images (N, H, W) uint8 (or (N, H, W, 3) with
    ``grayscale=False``), labels (N,) int64 and the class names. ``invert``: 255 - value, for dark
    digits on a light background (MNIST has light ink on black). Needs Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("reading image folders needs Pillow (pip install pillow)") from None
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such image folder: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected root/<class>/<image>.png)")
    digit_names = all(c.isdigit() for c in classes)
    if digit_names:
        classes = sorted(classes, key=int)
    images, labels = [], []
    for label, name in enumerate(classes):
        index = int(name) if digit_names else label
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if grayscale else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except OSError as err:
                raise ValueError(f"{f}: not a readable image ({err})") from None
            images.append(255 - arr if invert else arr)
            labels.append(index)
    if not images:
        raise ValueError(f"{root}: no images with suffix {', '.join(IMAGE_SUFFIXES)} in the class folders")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes
