"""CIFAR-10 and CIFAR-100 from the authors' "python version" archives, read without unsafe unpickling.

The archives (`cifar-10-batches-py/`, `cifar-100-python/`) hold Python 2 pickles of dicts with a
uint8 `data` array `(N, 3072)` and a list of integer labels. Unpickling can run arbitrary code,
so we use a restricted `pickle.Unpickler` whose `find_class` allows only what these files need:
numpy's array reconstruction (`_reconstruct`, `ndarray`, `dtype` refusing object dtypes) and
`_codecs.encode` limited to latin-1 (how protocol 2 spells bytes when written by Python 3).
Dicts, lists, strings, bytes and ints are pickle opcodes, not globals, so they need no entry.
Any other global (`os.system`, `builtins.eval`, ...) raises `CorruptFileError` naming the file.
After loading, every field is type- and shape-checked. We chose this over a hand-written pickle
parser: it is the documented way to restrict pickle, and the allow-list is five callables that
only build arrays from bytes.

Example:
    >>> from prunus.data import load_dataset
    >>> train = load_dataset("cifar10", "train", root="~/data", download=False)  # doctest: +SKIP
    >>> train.images.shape  # doctest: +SKIP
    torch.Size([50000, 3, 32, 32])
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunus.data.catalog import DatasetInfo, register_dataset
from prunus.data.locate import RemoteFile, RemoteSource, locate
from prunus.data.tensors import ImageTensors
from prunus.errors import CorruptFileError

__all__ = ["CIFAR10_SOURCE", "CIFAR100_SOURCE", "cifar_dir_present", "safe_unpickle"]

_ARRAY_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's own `_reconstruct`, whatever module it lives in


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return _ARRAY_RECONSTRUCT(np.ndarray, shape, dtype)


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dt = np.dtype(spec, align, copy)
    if dt.hasobject:  # object arrays would unpickle arbitrary element objects
        raise pickle.UnpicklingError("object dtypes are not allowed")
    return dt


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_unpickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a CIFAR pickle with the restricted unpickler; bytes keys and names become str.

    Raises:
        CorruptFileError: unreadable, truncated, not a dict, or using a global outside the allow-list.

    Example:
        >>> import pickle, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "meta"
        >>> _ = p.write_bytes(pickle.dumps({b"label_names": [b"cat"]}, protocol=2))
        >>> safe_unpickle(p)
        {'label_names': ['cat']}
    """
    path = Path(path)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CorruptFileError(f"{path}: not a valid CIFAR pickle ({exc or type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: expected a pickled dict, found {type(obj).__name__}")

    def text(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.decode("latin1")
        if isinstance(v, list):
            return [text(x) for x in v]
        return v

    return {text(k): text(v) for k, v in obj.items()}


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The `(N, 3, 32, 32)` uint8 images and int64 labels of one pickled batch, validated."""
    d = safe_unpickle(path)
    data, labels = d.get("data"), d.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise CorruptFileError(f"{path}: 'data' must be a uint8 (N, 3072) array, found {type(data).__name__} {shape}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise CorruptFileError(f"{path}: {label_key!r} must be a list of {len(data)} integers")
    try:
        label_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise CorruptFileError(f"{path}: {label_key!r} must hold integers") from None
    # Rows are channel-major (1024 red, 1024 green, 1024 blue, each row-major 32x32).
    return data.reshape(-1, 3, 32, 32), label_arr


def _names(path: Path, key: str, expected: int) -> list[str]:
    names = safe_unpickle(path).get(key)
    if not isinstance(names, list) or len(names) != expected or not all(isinstance(n, str) for n in names):
        raise CorruptFileError(f"{path}: {key!r} must be a list of {expected} class names")
    return names


def _load(
    directory: Path,
    files: list[str],
    *,
    label_key: str,
    meta: tuple[str, str],
    num_classes: int,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    name: str,
) -> ImageTensors:
    parts = [_batch(directory / f, label_key) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptFileError(f"{directory}: labels outside [0, {num_classes})")
    classes = _names(directory / meta[0], meta[1], num_classes)
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels), classes, stats[0], stats[1], name)


def cifar_dir_present(subdir: str, required: tuple[str, ...]) -> Any:
    """A `present` function: the directory (itself or its `subdir`) that holds all `required` files."""

    def present(directory: Path) -> Path | None:
        for d in (directory / subdir, directory):
            if all((d / f).is_file() for f in required):
                return d
        return None

    return present


_C10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_C100_FILES = {"train": ["train"], "test": ["test"]}
_C10_PRESENT = cifar_dir_present("cifar-10-batches-py", (*_C10_FILES["train"], "test_batch", "batches.meta"))
_C100_PRESENT = cifar_dir_present("cifar-100-python", ("train", "test", "meta"))

CIFAR10_SOURCE = RemoteSource(
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    extract=True,
)
CIFAR100_SOURCE = RemoteSource(
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    extract=True,
)

# Training-split statistics in [0, 1] units (population std), the values commonly used for these sets.
_C10_STATS = ((0.4914009, 0.4821584, 0.4465309), (0.2470322, 0.2434851, 0.2615878))
_C100_STATS = ((0.5070751, 0.4865488, 0.4409178), (0.2673342, 0.2564384, 0.2761504))


def _hint(name: str, archive: str, subdir: str) -> str:
    return (
        f"To get them: download https://www.cs.toronto.edu/~kriz/{archive}, unpack it into a directory DIR "
        f"(giving DIR/{subdir}/) and pass --data-dir DIR (or set $PRUNUS_DATA so that $PRUNUS_DATA/{name}/{subdir}/ "
        "exists), or allow the download on a networked machine."
    )


_C10_HINT = _hint("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py")
_C100_HINT = _hint("cifar100", "cifar-100-python.tar.gz", "cifar-100-python")


@register_dataset(
    "cifar10",
    DatasetInfo(
        summary="CIFAR-10, 32x32 colour, 10 classes (python archive)",
        input_shape=(3, 32, 32),
        num_classes=10,
        sizes=(50000, 10000),
        crop_padding=4,
        hint=_C10_HINT,
        present=_C10_PRESENT,
        source=CIFAR10_SOURCE,
    ),
)
def cifar10(split: str, root: str | os.PathLike[str] | None = None, download: bool = True) -> ImageTensors:
    """CIFAR-10 `split` ("train" 50k / "test" 10k) as uint8 `(N, 3, 32, 32)` tensors."""
    directory = locate(
        "cifar10", root=root, download=download, present=_C10_PRESENT, hint=_C10_HINT, source=CIFAR10_SOURCE
    )
    return _load(
        directory,
        _C10_FILES[split],
        label_key="labels",
        meta=("batches.meta", "label_names"),
        num_classes=10,
        stats=_C10_STATS,
        name=f"cifar10/{split}",
    )


@register_dataset(
    "cifar100",
    DatasetInfo(
        summary="CIFAR-100, 32x32 colour, 100 fine classes (python archive)",
        input_shape=(3, 32, 32),
        num_classes=100,
        sizes=(50000, 10000),
        crop_padding=4,
        hint=_C100_HINT,
        present=_C100_PRESENT,
        source=CIFAR100_SOURCE,
    ),
)
def cifar100(split: str, root: str | os.PathLike[str] | None = None, download: bool = True) -> ImageTensors:
    """CIFAR-100 `split` ("train" 50k / "test" 10k) with the 100 fine labels, as uint8 `(N, 3, 32, 32)`."""
    directory = locate(
        "cifar100", root=root, download=download, present=_C100_PRESENT, hint=_C100_HINT, source=CIFAR100_SOURCE
    )
    return _load(
        directory,
        _C100_FILES[split],
        label_key="fine_labels",
        meta=("meta", "fine_label_names"),
        num_classes=100,
        stats=_C100_STATS,
        name=f"cifar100/{split}",
    )
