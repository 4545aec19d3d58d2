"""Saving and loading model checkpoints.

A checkpoint is a single ``.npz`` file: an ordinary, *uncompressed* (or, with
``compress=True``, deflate-compressed) zip archive of ``.npy`` members, the
same layout that :func:`numpy.savez` writes. Nothing in it needs pickle.

On-disk format (``FORMAT = "numlstm-checkpoint"``, ``FORMAT_VERSION = 1``)
--------------------------------------------------------------------------
* Every saved array ``name`` is stored as the zip member ``<name>.npy``
  (names use only ``[A-Za-z0-9_./-]``, so e.g. ``"layers.0/W"`` is the member
  ``layers.0/W.npy``).
* One reserved member ``__meta__.npy`` holds a 1-D ``uint8`` array whose bytes
  are UTF-8 encoded JSON::

      {
        "format": "numlstm-checkpoint",
        "format_version": 1,
        "meta": {...},                       # the user's metadata, verbatim
        "arrays": {
          "<name>": {
            "dtype": "<f4",                  # numpy dtype.str of the array
            "shape": [3, 4],
            "sha256": "<hex>"                # sha256 of the array's C-order bytes
          },
          ...
        }
      }

A checkpoint can therefore be read with plain NumPy, without this library::

    import hashlib, json
    import numpy as np

    with np.load("model.npz", allow_pickle=False) as f:
        header = json.loads(f["__meta__"].tobytes().decode("utf-8"))
        arrays = {name: f[name + ".npy"] for name in header["arrays"]}
    user_meta = header["meta"]
    # optional integrity check
    for name, info in header["arrays"].items():
        digest = hashlib.sha256(np.ascontiguousarray(arrays[name]).tobytes()).hexdigest()
        assert digest == info["sha256"]

(Indexing with ``name + ".npy"`` is the unambiguous way to address a member;
``f[name]`` also works unless one name equals another name plus ``".npy"``.)

Writes are atomic: the archive is written to a temporary file in the target
directory, flushed and fsync'ed, then moved over the destination with
:func:`os.replace`, so a crash or error never leaves a half-written checkpoint
and never damages a previous one at the same path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "read_meta",
    "save_checkpoint",
]

FORMAT = "numlstm-checkpoint"
FORMAT_VERSION = 1

_META_KEY = "__meta__"
_MEMBER_SUFFIX = ".npy"
_NAME_RE = re.compile(r"[A-Za-z0-9_./-]+")
# dtype kinds accepted for arrays: bool, signed/unsigned int, float, complex.
_ALLOWED_KINDS = frozenset("biufc")
# Errors that numpy/zipfile raise on unreadable, truncated or malformed data.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError)


class CheckpointError(ValueError):
    """Raised when a checkpoint file is missing, unreadable, corrupt or incompatible."""


# --------------------------------------------------------------------------- helpers


def _check_name(name: object) -> str:
    """Validate one array name and return it."""
    if not isinstance(name, str):
        raise TypeError(f"array names must be str, got {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError("array names must be non-empty")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid array name {name!r}: only letters, digits and '_', '.', '/', '-' are allowed"
        )
    if name.startswith("__"):
        raise ValueError(f"invalid array name {name!r}: names starting with '__' are reserved")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"invalid array name {name!r}: '/'-separated parts must not be empty, '.' or '..'"
        )
    return name


def _check_array(name: str, value: object) -> np.ndarray:
    """Validate one array value (numpy array or numpy scalar) and return a plain ndarray."""
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"value for array {name!r} must be a numpy array, got {type(value).__name__}"
        )
    arr = np.asarray(value)  # drop ndarray subclasses (matrix, memmap, ...)
    if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.fields is not None:
        raise TypeError(
            f"array {name!r} has unsupported dtype {arr.dtype}; "
            "only bool, integer, float and complex arrays can be saved"
        )
    return arr


def _sha256(arr: np.ndarray) -> str:
    """Hex sha256 of the array's C-order bytes (in its own dtype / byte order)."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return hashlib.sha256(flat).hexdigest()


def _jsonable(value: Any, where: str, active: set[int]) -> Any:
    """Return a JSON-ready copy of ``value`` or raise TypeError naming ``where``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _jsonable(value.item(), where, active)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in active:
            raise TypeError(f"meta is not JSON-serialisable: circular reference at {where}")
        active.add(id(value))
        try:
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise TypeError(
                            f"meta is not JSON-serialisable: key {key!r} at {where} "
                            f"is {type(key).__name__}, not str"
                        )
                    out[key] = _jsonable(item, f"{where}[{key!r}]", active)
                return out
            return [_jsonable(item, f"{where}[{i}]", active) for i, item in enumerate(value)]
        finally:
            active.discard(id(value))
    raise TypeError(
        f"meta is not JSON-serialisable: {where} has type {type(value).__name__} "
        "(allowed: dict, list, str, int, float, bool, None)"
    )


def _current_umask() -> int:
    """Best-effort read of the process umask (used to give new files normal permissions)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it is durable; ignore platforms that can't."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_npz(fileobj: Any, members: Mapping[str, np.ndarray], compress: bool) -> None:
    """Write ``members`` (member name without suffix -> array) as an .npz to ``fileobj``.

    Equivalent to ``np.savez(fileobj, **members)`` but without keyword clashes (an
    array may be called ``"file"``) and with ``allow_pickle=False``.
    """
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(fileobj, mode="w", compression=compression, allowZip64=True) as zf:
        for name, arr in members.items():
            with zf.open(name + _MEMBER_SUFFIX, "w", force_zip64=True) as member:
                npy_format.write_array(member, arr, allow_pickle=False)


# --------------------------------------------------------------------------- saving


def save_checkpoint(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
    *,
    compress: bool = False,
) -> Path:
    """Atomically save named arrays plus JSON metadata to a ``.npz`` checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. It is used exactly as given (no ``.npz`` is appended;
        by convention it should end in ``.npz``). Missing parent directories are
        created. An existing file is replaced atomically.
    arrays : Mapping[str, numpy.ndarray]
        Arrays to store. Names must be non-empty, use only ``[A-Za-z0-9_./-]``,
        not start with ``"__"`` (reserved) and have no empty, ``"."`` or ``".."``
        ``/``-separated parts. Values must be bool, integer, float or complex numpy
        arrays (numpy scalars are accepted as 0-d arrays). Non-finite values are
        stored as-is.
    meta : Mapping[str, Any], optional
        JSON-serialisable metadata: nested dicts with str keys, lists/tuples, str,
        int, float (including nan/inf), bool and None. Numpy bool/int/float scalars
        are converted to Python scalars; tuples come back as lists.
    compress : bool, default False
        Deflate-compress the archive members.

    Returns
    -------
    pathlib.Path
        The path that was written.

    Raises
    ------
    ValueError
        If an array name is invalid or reserved.
    TypeError
        If a name is not a str, an array has an unsupported dtype (object, string,
        structured, datetime, ...) or ``meta`` is not JSON-serialisable. The
        message names the offending key.
    OSError
        If the file cannot be written. Any previous checkpoint at ``path`` is left
        untouched and no temporary file remains.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping of name -> array, got {type(arrays).__name__}")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping (dict), got {type(meta).__name__}")

    members: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, Any]] = {}
    for name, value in arrays.items():
        _check_name(name)
        arr = _check_array(name, value)
        members[name] = arr
        index[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "sha256": _sha256(arr)}

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": _jsonable(meta, "meta", set()),
        "arrays": index,
    }
    blob = json.dumps(header, ensure_ascii=False, allow_nan=True).encode("utf-8")
    members = {_META_KEY: np.frombuffer(blob, dtype=np.uint8), **members}

    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_current_umask()

    tmp = tempfile.NamedTemporaryFile(
        dir=directory, delete=False, prefix=f".{path.name}.", suffix=".tmp"
    )
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            _write_npz(tmp, members, compress)
            tmp.flush()
            os.fsync(tmp.fileno())
            try:
                os.chmod(tmp.fileno(), mode)
            except (OSError, NotImplementedError):
                pass  # permissions are cosmetic; keep the temp file's default
        os.replace(tmp_path, path)
    except BaseException:
        try:
            tmp_path.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


# --------------------------------------------------------------------------- loading


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """Open ``path`` with ``np.load(allow_pickle=False)``, mapping errors to CheckpointError."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CheckpointError(f"no such checkpoint: {path}") from None
    except _READ_ERRORS as exc:
        raise CheckpointError(
            f"{path}: not a valid checkpoint (not a readable .npz archive: {exc})"
        ) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: not a valid checkpoint (a .npy array, not a .npz archive)")
    return loaded


def _read_member(path: Path, npz: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    """Read one array fully into memory, mapping errors to CheckpointError."""
    what = "metadata" if name == _META_KEY else f"array {name!r}"
    try:
        value = npz[name + _MEMBER_SUFFIX]
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise CheckpointError(
                f"{path}: corrupt: checksum of {name!r} does not match (zip CRC-32 failed)"
            ) from exc
        raise CheckpointError(f"{path}: corrupt: cannot read {what}: {exc}") from exc
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CheckpointError(
                f"{path}: {what} is an object array (needs pickle); refusing to load it"
            ) from exc
        raise CheckpointError(f"{path}: corrupt: cannot read {what}: {exc}") from exc
    except _READ_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt: cannot read {what}: {exc}") from exc
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"{path}: corrupt: {what} is not a .npy array")
    return value


def _parse_header(path: Path, npz: np.lib.npyio.NpzFile) -> dict[str, Any]:
    """Read and validate the ``__meta__`` header; return it as a dict."""
    if _META_KEY not in npz.files:
        raise CheckpointError(
            f"{path}: not a numlstm checkpoint (no {_META_KEY!r} entry; plain .npz file?)"
        )
    raw = _read_member(path, npz, _META_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: corrupt: {_META_KEY!r} is not a 1-D uint8 array")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt: metadata is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt: metadata is not a JSON object")
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a numlstm checkpoint (format {header.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: corrupt: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version} is newer than supported "
            f"({FORMAT_VERSION}); upgrade numlstm to read it"
        )
    if not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"{path}: corrupt: 'meta' in metadata is not a JSON object")
    index = header.get("arrays")
    if not isinstance(index, dict):
        raise CheckpointError(f"{path}: corrupt: 'arrays' in metadata is not a JSON object")
    for name, info in index.items():
        ok = (
            isinstance(info, dict)
            and isinstance(info.get("dtype"), str)
            and isinstance(info.get("shape"), list)
            and all(isinstance(d, int) and not isinstance(d, bool) for d in info["shape"])
            and isinstance(info.get("sha256"), str)
        )
        if not ok:
            raise CheckpointError(f"{path}: corrupt: bad metadata entry for array {name!r}")
    return header


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    The file is opened with ``np.load(..., allow_pickle=False)``, every array is
    read fully into memory, checked against the recorded dtype, shape and sha256,
    and the file is closed.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file.

    Returns
    -------
    arrays : dict[str, numpy.ndarray]
        The saved arrays, in the order they were saved.
    meta : dict
        The user metadata passed to :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file does not exist, is not a readable ``.npz`` archive (garbage,
        truncated), is not a numlstm checkpoint, has a newer ``format_version``,
        has missing/extra arrays, a dtype/shape mismatch, a checksum mismatch, or
        contains an object array. The message includes the path.
    """
    path = Path(path)
    with _open_npz(path) as npz:
        header = _parse_header(path, npz)
        index: dict[str, dict[str, Any]] = header["arrays"]
        present = set(npz.files) - {_META_KEY}
        missing = [name for name in index if name not in present]
        if missing:
            raise CheckpointError(
                f"{path}: corrupt: arrays listed in metadata are missing: "
                f"{', '.join(map(repr, missing))}"
            )
        extra = sorted(present - set(index))
        if extra:
            raise CheckpointError(
                f"{path}: corrupt: arrays not listed in metadata: {', '.join(map(repr, extra))}"
            )
        arrays: dict[str, np.ndarray] = {}
        for name, info in index.items():
            arr = _read_member(path, npz, name)
            if arr.dtype.str != info["dtype"]:
                raise CheckpointError(
                    f"{path}: corrupt: dtype of {name!r} is {arr.dtype.str}, "
                    f"metadata says {info['dtype']}"
                )
            if list(arr.shape) != info["shape"]:
                raise CheckpointError(
                    f"{path}: corrupt: shape of {name!r} is {list(arr.shape)}, "
                    f"metadata says {info['shape']}"
                )
            if _sha256(arr) != info["sha256"]:
                raise CheckpointError(f"{path}: corrupt: checksum of {name!r} does not match")
            arrays[name] = arr
    return arrays, header["meta"]


def read_meta(path: str | os.PathLike[str]) -> dict:
    """Return only the user metadata of a checkpoint (cheap: arrays are not read).

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file.

    Returns
    -------
    dict
        The user metadata passed to :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, not a numlstm checkpoint or has a newer
        ``format_version``. Array data is not verified.
    """
    path = Path(path)
    with _open_npz(path) as npz:
        return _parse_header(path, npz)["meta"]
