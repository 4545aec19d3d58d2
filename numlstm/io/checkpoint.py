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
import stat
import tempfile
import time
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
    "read_header",
    "read_meta",
    "remove_stale_temp_files",
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

# Limits applied before anything a file declares is believed.
_MAX_META_BYTES = 256 * 1024 * 1024  # the JSON header (a 1M-word vocabulary is ~10 MB)
_MAX_NPY_HEADER = 10_000  # numpy's own default limit for a .npy header
_MAX_MEMBERS = 1_000_000
_MAX_NDIM = 64  # numpy's limit
# Deflate cannot expand data by more than 1032:1; a member declaring more is not deflate.
_MAX_DEFLATE_RATIO = 1032
_READ_CHUNK = 16 * 1024 * 1024
_NPY_MAGIC = b"\x93NUMPY"
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def _memory_limit() -> int | None:
    """Physical memory in bytes, or None when the platform cannot say."""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page if pages > 0 and page > 0 else None


class _Archive:
    """A checkpoint archive opened for reading: the zip directory, never the data yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fh, self.size = _open_regular(path)
        try:
            head = fh.read(len(_NPY_MAGIC))
            fh.seek(0)
            if head == _NPY_MAGIC:
                raise CheckpointError(
                    f"{path}: not a valid checkpoint (a .npy array, not a .npz archive)"
                )
            self.zf = zipfile.ZipFile(fh)
        except CheckpointError:
            fh.close()
            raise
        except (*_READ_ERRORS, RuntimeError, NotImplementedError) as exc:
            fh.close()
            raise CheckpointError(
                f"{path}: not a valid checkpoint (not a readable .npz archive: {exc})"
            ) from exc
        self.fh = fh
        infos = self.zf.infolist()
        if len(infos) > _MAX_MEMBERS:
            self.close()
            raise CheckpointError(f"{path}: corrupt: {len(infos)} archive members")
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename in self.members:
                self.close()
                raise CheckpointError(
                    f"{path}: corrupt: archive member {info.filename!r} appears twice"
                )
            self.members[info.filename] = info

    def close(self) -> None:
        self.zf.close()
        self.fh.close()

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> set[str]:
        """Array names present (member names minus the ``.npy`` suffix), __meta__ included."""
        return {
            n[: -len(_MEMBER_SUFFIX)] if n.endswith(_MEMBER_SUFFIX) else n for n in self.members
        }

    def info(self, name: str) -> zipfile.ZipInfo:
        """Zip entry of array ``name`` after checking its sizes against the file."""
        info = self.members.get(name + _MEMBER_SUFFIX)
        if info is None:
            raise CheckpointError(f"{self.path}: corrupt: no archive member for {name!r}")
        where = f"{self.path}: corrupt: archive member {name!r}"
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where} is encrypted")
        if info.compress_size > self.size or info.header_offset > self.size:
            raise CheckpointError(
                f"{where} declares {info.compress_size} stored bytes, more than the "
                f"{self.size}-byte file (truncated?)"
            )
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise CheckpointError(f"{where}: stored size and data size differ")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
                raise CheckpointError(
                    f"{where} declares {info.file_size} bytes from {info.compress_size} "
                    "compressed bytes, more than deflate can produce"
                )
        else:
            raise CheckpointError(f"{where} uses unsupported compression {info.compress_type}")
        return info


def _open_regular(path: Path) -> tuple[Any, int]:
    """Open ``path`` for reading if it is a regular file; return (file object, size).

    FIFOs, devices, sockets and directories are refused without blocking: the file is opened
    with O_NONBLOCK and checked with fstat on the descriptor (no race with a rename).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CheckpointError(f"no such checkpoint: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open checkpoint: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            kind += " (FIFO)" if stat.S_ISFIFO(st.st_mode) else ""
            raise CheckpointError(f"{path}: {kind}; a checkpoint must be a regular file")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_npy(
    archive: _Archive, name: str, expected: Mapping[str, Any] | None, max_bytes: int | None
) -> np.ndarray:
    """Read array ``name``: its .npy header first, checked against ``expected`` (the metadata
    entry) and the member's size, then exactly the bytes the header declares."""
    path = archive.path
    what = "metadata" if name == _META_KEY else f"array {name!r}"
    info = archive.info(name)
    try:
        with archive.zf.open(info) as fh:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                header = npy_format.read_array_header_1_0(fh, max_header_size=_MAX_NPY_HEADER)
            elif version == (2, 0):
                header = npy_format.read_array_header_2_0(fh, max_header_size=_MAX_NPY_HEADER)
            else:
                raise CheckpointError(f"{path}: corrupt: {what} has .npy version {version}")
            shape, fortran, dtype = header
            if dtype.hasobject:
                raise CheckpointError(
                    f"{path}: {what} is an object array (needs pickle); refusing to load it"
                )
            if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype:
                raise CheckpointError(f"{path}: corrupt: {what} has unsupported dtype {dtype}")
            if len(shape) > _MAX_NDIM:
                raise CheckpointError(f"{path}: corrupt: {what} has {len(shape)} dimensions")
            if expected is not None:
                if dtype.str != expected["dtype"]:
                    raise CheckpointError(
                        f"{path}: corrupt: dtype of {name!r} is {dtype.str}, "
                        f"metadata says {expected['dtype']}"
                    )
                if list(shape) != expected["shape"]:
                    raise CheckpointError(
                        f"{path}: corrupt: shape of {name!r} is {list(shape)}, "
                        f"metadata says {expected['shape']}"
                    )
            count = 1
            for d in shape:
                count *= d
            nbytes = count * dtype.itemsize
            if fh.tell() + nbytes != info.file_size:
                raise CheckpointError(
                    f"{path}: corrupt: {what} declares {nbytes} data bytes (shape "
                    f"{list(shape)}, {dtype.str}) but its archive member holds "
                    f"{info.file_size - fh.tell()}"
                )
            if max_bytes is not None and nbytes > max_bytes:
                raise CheckpointError(f"{path}: {what} is too large ({nbytes} bytes)")
            data = np.empty(nbytes, np.uint8)
            view, pos = memoryview(data), 0
            while pos < nbytes:
                got = fh.readinto(view[pos : pos + _READ_CHUNK])
                if not got:
                    raise CheckpointError(f"{path}: corrupt: {what} is truncated")
                pos += got
            if fh.read(1):  # also makes zipfile verify the CRC-32 at the end of the member
                raise CheckpointError(f"{path}: corrupt: {what} has trailing bytes")
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise CheckpointError(
                f"{path}: corrupt: checksum of {name!r} does not match (zip CRC-32 failed)"
            ) from exc
        raise CheckpointError(f"{path}: corrupt: cannot read {what}: {exc}") from exc
    except (*_READ_ERRORS, RuntimeError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: corrupt: cannot read {what}: {exc}") from exc
    flat = data.view(dtype)
    if fortran:
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


def _parse_header(archive: _Archive) -> dict[str, Any]:
    """Read and validate the ``__meta__`` header; return it as a dict."""
    path = archive.path
    if _META_KEY + _MEMBER_SUFFIX not in archive.members:
        raise CheckpointError(
            f"{path}: not a numlstm checkpoint (no {_META_KEY!r} entry; plain .npz file?)"
        )
    if archive.info(_META_KEY).file_size > _MAX_META_BYTES + _MAX_NPY_HEADER:
        raise CheckpointError(f"{path}: corrupt: metadata larger than {_MAX_META_BYTES} bytes")
    raw = _read_npy(archive, _META_KEY, None, _MAX_META_BYTES)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: corrupt: {_META_KEY!r} is not a 1-D uint8 array")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt: metadata JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, too many int digits
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
            and len(info["shape"]) <= _MAX_NDIM
            and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in info["shape"]
            )  # fmt: skip
            and isinstance(info.get("sha256"), str)
            and _SHA_RE.fullmatch(info["sha256"]) is not None
            and _NAME_RE.fullmatch(name) is not None
            and not name.startswith("__")
        )
        if not ok:
            raise CheckpointError(f"{path}: corrupt: bad metadata entry for array {name!r}")
    return header


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Nothing the file declares is believed before it is checked: the path must be a regular
    file (a FIFO or device is refused, never read); the JSON header is bounded in size and
    nesting; every member's ``.npy`` header is read first and its dtype and shape compared
    with the metadata, its byte count with the zip member's size (which must fit in the file
    and be reachable by deflate), and the total with the machine's memory, before any array
    data is read. Then each array is read, checked against its zip CRC-32 and the recorded
    sha256, and the file is closed. No pickle is ever used.

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
        If the file does not exist, is not a regular file, is not a readable ``.npz`` archive
        (garbage, truncated), is not a numlstm checkpoint, has a newer ``format_version``,
        has missing/extra arrays, a dtype/shape/size mismatch, a checksum mismatch, declares
        more data than the file or memory can hold, or contains an object array. The message
        includes the path.
    """
    path = Path(path)
    with _Archive(path) as archive:
        header = _parse_header(archive)
        index: dict[str, dict[str, Any]] = header["arrays"]
        present = archive.names() - {_META_KEY}
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
        total = sum(archive.info(name).file_size for name in index)
        limit = _memory_limit()
        if limit is not None and total > limit:
            raise CheckpointError(
                f"{path}: declares {total} bytes of arrays, more than this machine's "
                f"{limit} bytes of memory"
            )
        arrays: dict[str, np.ndarray] = {}
        for name, info in index.items():
            arr = _read_npy(archive, name, info, None)
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
        If the file is missing, not a regular file, unreadable, not a numlstm checkpoint or
        has a newer ``format_version``. Array data is not verified.
    """
    path = Path(path)
    with _Archive(path) as archive:
        return _parse_header(archive)["meta"]


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], dict]:
    """Return ``(index, meta)`` without reading array data.

    ``index`` maps each array name to ``{"dtype", "shape", "sha256"}`` as recorded in the
    metadata; shapes are *declared*, not yet verified (:func:`load_checkpoint` verifies them).
    Lets a caller check a declared architecture against the declared arrays before it loads
    (and allocates) anything.
    """
    path = Path(path)
    with _Archive(path) as archive:
        header = _parse_header(archive)
        return header["arrays"], header["meta"]


# --------------------------------------------------------------------------- temp files

# NamedTemporaryFile names: prefix + 8 characters from this alphabet + suffix.
_TEMP_RAND = r"[a-z0-9_]{8}"


def remove_stale_temp_files(
    directory: str | os.PathLike[str], name: str, *, min_age: float = 0.0
) -> list[Path]:
    """Remove temporary files that an interrupted :func:`save_checkpoint` of ``name`` left.

    A write killed between creating its temporary file and renaming it (SIGKILL, power loss)
    leaves ``directory/.<name>.XXXXXXXX.tmp``. Only regular files (not links) whose name has
    exactly that form for this ``name`` are removed; nothing else is touched. Files modified
    less than ``min_age`` seconds ago are kept (pass e.g. 60 if another process may be
    writing the same checkpoint right now). Safe to call concurrently: a file another caller
    already removed is skipped.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder of the checkpoint. A missing folder has nothing to remove.
    name : str
        Base name of the checkpoint file (e.g. ``"model.npz"``), no folder part.
    min_age : float, default 0.0
        Minimum age in seconds (by mtime) of a file to remove.

    Returns
    -------
    list of pathlib.Path
        The files removed, sorted.
    """
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or (os.sep in name or (os.altsep and os.altsep in name))
    ):
        raise ValueError(f"name must be a checkpoint file name without a folder, got {name!r}")
    if isinstance(min_age, bool) or not isinstance(min_age, int | float) or not min_age >= 0:
        raise ValueError(f"min_age must be a number of seconds >= 0, got {min_age!r}")
    pattern = re.compile(re.escape(f".{name}.") + _TEMP_RAND + re.escape(".tmp"))
    directory = Path(directory)
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    removed: list[Path] = []
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # another process removed it first
            continue
        removed.append(directory / entry.name)
    return sorted(removed)
