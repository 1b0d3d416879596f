"""Read user-supplied model files (.npz, .pkl) into plain numpy arrays, safely.

``.npz`` is read with ``allow_pickle=False``. ``.pkl`` goes through a restricted unpickler that only
rebuilds numpy arrays and scipy sparse matrices (converted to dense); anything else, chumpy objects
in particular, is refused with a message saying to convert the file to ``.npz``. Python 2 pickles
(as the original FLAME / SMPL releases are) are read with ``encoding="latin1"``.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}
_CONVERT_HINT = "convert it to .npz (numpy arrays only) with the tool that made it"


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only resolves numpy and scipy.sparse classes (no arbitrary code)."""

    def __init__(self, file, name: str) -> None:
        super().__init__(file, encoding="latin1")
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".", maxsplit=1)[0] == "chumpy":
            raise ValueError(
                f"{self.name}: holds chumpy objects ({module}.{name}); chumpy is not supported, "
                f"{_CONVERT_HINT}"
            )
        if (module, name) in _NUMPY_GLOBALS:
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
        if (module, name) in {("copyreg", "_reconstructor"), ("builtins", "object"), ("_codecs", "encode")}:
            return super().find_class(module, name)
        if module.startswith("scipy.sparse") and name in _SPARSE_NAMES:
            try:
                sparse = importlib.import_module("scipy.sparse")
            except ImportError as error:
                raise ValueError(
                    f"{self.name}: holds scipy sparse matrices; install scipy or {_CONVERT_HINT}"
                ) from error
            return getattr(sparse, name)
        raise ValueError(
            f"{self.name}: the pickle references {module}.{name}, which is not unpickled here "
            f"(numpy arrays and scipy sparse matrices only); {_CONVERT_HINT}"
        )


def read_model_arrays(
    path: str | Path, kind: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The ``required`` (and present ``optional``) entries of a .npz / .pkl model file as dense arrays.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file, the format
    problem or the missing key (listing the keys found) otherwise. ``kind`` names the model in
    messages (e.g. "FLAME").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, kind, required, optional)
    if suffix == ".pkl":
        return _read_pkl(path, kind, required, optional)
    raise ValueError(f"{path.name}: unsupported {kind} file type {suffix!r} (expected .npz or .pkl)")


def _read_npz(
    path: Path, kind: str, required: Sequence[str], optional: Sequence[str]
) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path.name}: not a readable .npz file ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path.name}: not an .npz archive")
    with archive:
        _check_keys(path, kind, archive.files, required)
        out = {}
        for key in [*required, *[k for k in optional if k in archive.files]]:
            try:
                out[key] = np.asarray(archive[key])
            except ValueError as error:
                raise ValueError(
                    f"{path.name}: key {key!r} holds Python objects, not a numeric array ({error})"
                ) from error
    return out


def _read_pkl(
    path: Path, kind: str, required: Sequence[str], optional: Sequence[str]
) -> dict[str, np.ndarray]:
    with path.open("rb") as handle:
        try:
            data = _ArraysOnlyUnpickler(handle, path.name).load()
        except ValueError:
            raise
        except Exception as error:  # any corrupt pickle becomes one clear error
            raise ValueError(
                f"{path.name}: not a readable pickle ({type(error).__name__}: {error})"
            ) from error
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a pickled dict of arrays, got {type(data).__name__}")
    _check_keys(path, kind, list(data), required)
    out = {}
    for key in [*required, *[k for k in optional if k in data]]:
        value = data[key]
        if hasattr(value, "toarray"):
            value = value.toarray()
        if not isinstance(value, np.ndarray | np.generic):
            raise ValueError(
                f"{path.name}: key {key!r} is a {type(value).__name__}, not an array; {_CONVERT_HINT}"
            )
        out[key] = np.asarray(value)
    return out


def _check_keys(path: Path, kind: str, found: Sequence[str], required: Sequence[str]) -> None:
    missing = [key for key in required if key not in found]
    if missing:
        raise ValueError(
            f"{path.name}: missing key(s) {', '.join(map(repr, missing))} for a {kind} model "
            f"(found: {', '.join(sorted(map(str, found))) or 'nothing'})"
        )
