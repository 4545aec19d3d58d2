"""Tests for numlstm.io.checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pytest

from numlstm.io import checkpoint as ckpt
from numlstm.io.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)

# --------------------------------------------------------------------------- helpers

_UNPICKLED: list[str] = []


def _tripwire() -> str:
    """Called only if an object array gets unpickled."""
    _UNPICKLED.append("unpickled")
    return "boom"


class _Tripwire:
    def __reduce__(self):
        return (_tripwire, ())


def _sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w32": rng.standard_normal((3, 4)).astype(np.float32),
        "w64": rng.standard_normal(5),
        "ids": np.arange(-3, 9, dtype=np.int32).reshape(3, 4),
        "mask": np.array([[True, False], [False, True]]),
    }


def _header(arrays: dict[str, np.ndarray], meta: dict | None = None, /, **overrides) -> np.ndarray:
    """Build a ``__meta__`` blob by hand (independent of the implementation)."""
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta or {},
        "arrays": {
            name: {
                "dtype": a.dtype.str,
                "shape": list(a.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
            }
            for name, a in arrays.items()
        },
    }
    header.update(overrides)
    return np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _assert_same(loaded: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(loaded) == list(expected)
    for name, arr in expected.items():
        assert loaded[name].dtype == arr.dtype, name
        assert loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr)


# --------------------------------------------------------------------------- round trips


def test_round_trip_arrays_and_nested_meta(tmp_path):
    arrays = _sample_arrays()
    meta = {
        "model": {"kind": "lstm", "hidden": 128, "layers": [1, 2, {"drop": 0.25}]},
        "step": 1000,
        "lr": 3e-4,
        "done": False,
        "note": None,
        "unicode": "héllo ✓",
        "empty": {},
        "list": [],
    }
    path = tmp_path / "model.npz"
    out = save_checkpoint(path, arrays, meta)
    assert out == path
    loaded, loaded_meta = load_checkpoint(path)
    _assert_same(loaded, arrays)
    assert loaded_meta == meta
    assert _leftovers(tmp_path) == []


def test_round_trip_edge_arrays(tmp_path):
    arrays = {
        "nonfinite": np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=np.float32),
        "scalar0d": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float64),
        "half": np.array([1.5, -2.0], dtype=np.float16),
        "cplx": np.array([1 + 2j, -3j], dtype=np.complex128),
        "uint": np.array([0, 255], dtype=np.uint8),
        "bigendian": np.array([1.0, 2.0], dtype=">f8"),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        "strided": np.arange(20, dtype=np.int16)[::3],
        "npscalar": np.float32(2.5),
    }
    save_checkpoint(tmp_path / "edge.npz", arrays)
    loaded, meta = load_checkpoint(tmp_path / "edge.npz")
    assert meta == {}
    expected = dict(arrays, npscalar=np.asarray(np.float32(2.5)))
    _assert_same(loaded, expected)
    assert np.isnan(loaded["nonfinite"][0])


def test_empty_checkpoint_and_meta_only(tmp_path):
    save_checkpoint(tmp_path / "e.npz", {}, {"only": "meta"})
    assert load_checkpoint(tmp_path / "e.npz") == ({}, {"only": "meta"})
    save_checkpoint(tmp_path / "n.npz", {})
    assert load_checkpoint(tmp_path / "n.npz") == ({}, {})


def test_names_with_dots_slashes_and_awkward_names(tmp_path):
    arrays = {
        "layers.0/W_ih": np.ones((2, 3), dtype=np.float32),
        "layers.0/b": np.zeros(3, dtype=np.float32),
        "enc/rnn/1/W-hh": np.full((2, 2), 5, dtype=np.int32),
        "a": np.array([1]),
        "a.npy": np.array([2]),  # must not be confused with "a"
        "file": np.array([3]),  # would clash with np.savez's parameter names
        "allow_pickle": np.array([4]),
        "x.y.z": np.array([5.0]),
    }
    save_checkpoint(tmp_path / "names.npz", arrays)
    loaded, _ = load_checkpoint(tmp_path / "names.npz")
    _assert_same(loaded, arrays)


def test_numpy_scalars_in_meta_are_converted(tmp_path):
    meta = {"a": np.int64(3), "b": np.float32(0.5), "c": np.bool_(True), "t": (1, 2)}
    save_checkpoint(tmp_path / "m.npz", {}, meta)
    got = read_meta(tmp_path / "m.npz")
    assert got == {"a": 3, "b": 0.5, "c": True, "t": [1, 2]}
    assert type(got["a"]) is int and type(got["b"]) is float and type(got["c"]) is bool


def test_nonfinite_meta_floats_round_trip(tmp_path):
    save_checkpoint(tmp_path / "m.npz", {}, {"best": float("inf"), "x": float("nan")})
    got = read_meta(tmp_path / "m.npz")
    assert got["best"] == float("inf") and np.isnan(got["x"])


def test_compressed_round_trip(tmp_path):
    arrays = {"z": np.zeros((100, 100), dtype=np.float64), "i": np.arange(10)}
    save_checkpoint(tmp_path / "c.npz", arrays, {"c": 1}, compress=True)
    save_checkpoint(tmp_path / "u.npz", arrays, {"c": 1})
    assert (tmp_path / "c.npz").stat().st_size < (tmp_path / "u.npz").stat().st_size
    loaded, meta = load_checkpoint(tmp_path / "c.npz")
    _assert_same(loaded, arrays)
    assert meta == {"c": 1}


def test_loaded_arrays_are_in_memory_and_writable(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"w": np.ones(3)})
    loaded, _ = load_checkpoint(path)
    os.remove(path)  # file must be closed and data fully read
    loaded["w"][0] = 5.0
    np.testing.assert_array_equal(loaded["w"], [5.0, 1.0, 1.0])


# --------------------------------------------------------------------------- paths and atomicity


def test_path_used_exactly_and_parents_created(tmp_path):
    p1 = tmp_path / "deep" / "er" / "ckpt.npz"
    assert save_checkpoint(str(p1), {"a": np.ones(1)}) == p1
    p2 = tmp_path / "model.ckpt"
    save_checkpoint(p2, {"a": np.ones(1)})
    assert p1.is_file() and p2.is_file()
    assert not (tmp_path / "deep" / "er" / "ckpt.npz.npz").exists()
    assert not (tmp_path / "model.ckpt.npz").exists()
    assert sorted(p.name for p in (tmp_path / "deep" / "er").iterdir()) == ["ckpt.npz"]
    np.testing.assert_array_equal(load_checkpoint(p2)[0]["a"], [1.0])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_new_file_gets_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = save_checkpoint(tmp_path / "p.npz", {"a": np.ones(1)})
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_overwrite_replaces_old_checkpoint(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"a": np.ones(2)}, {"v": 1})
    save_checkpoint(path, {"b": np.zeros(3)}, {"v": 2})
    arrays, meta = load_checkpoint(path)
    assert list(arrays) == ["b"] and meta == {"v": 2}
    assert _leftovers(tmp_path) == []


def test_failed_replace_keeps_old_file_and_cleans_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"a": np.ones(2)}, {"v": 1})
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_checkpoint(path, {"a": np.zeros(2)}, {"v": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert load_checkpoint(path)[1] == {"v": 1}


def test_failure_midway_through_writing_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"a": np.ones(2)}, {"v": 1})
    before = path.read_bytes()
    real_write = ckpt.npy_format.write_array
    calls = []

    def flaky(fp, arr, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after __meta__ has been written
            raise RuntimeError("interrupted")
        return real_write(fp, arr, *args, **kwargs)

    monkeypatch.setattr(ckpt.npy_format, "write_array", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        save_checkpoint(path, {"a": np.zeros(2), "b": np.zeros(2)}, {"v": 2})
    monkeypatch.undo()
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_validation_errors_do_not_touch_existing_file(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"a": np.ones(2)})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, {"a": np.ones(2)}, {"bad": object()})
    with pytest.raises(ValueError):
        save_checkpoint(path, {"__a": np.ones(2)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


# --------------------------------------------------------------------------- save-side validation


@pytest.mark.parametrize(
    "name",
    ["", "__meta__", "__x", "a b", "a\\b", "é", "a:b", "a\nb", "/abs", "a/", "a//b", "a/../b", "."],
)
def test_invalid_or_reserved_names_raise_value_error(tmp_path, name):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "m.npz", {name: np.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_non_str_name_raises_type_error(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "m.npz", {1: np.ones(1)})


@pytest.mark.parametrize(
    "value",
    [
        np.array([1, "a"], dtype=object),
        np.array(["abc"]),
        np.array([b"abc"]),
        np.zeros(2, dtype=[("x", "f4"), ("y", "i4")]),
        np.zeros(2, dtype="V8"),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        [1.0, 2.0],
        3.0,
    ],
)
def test_unsupported_values_raise_type_error_naming_key(tmp_path, value):
    with pytest.raises(TypeError, match="bad_key"):
        save_checkpoint(tmp_path / "m.npz", {"ok": np.ones(1), "bad_key": value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "meta",
    [
        {"offender": object()},
        {"offender": {1, 2}},
        {"offender": b"bytes"},
        {"outer": {"offender": np.ones(3)}},
        {"outer": [1, {"offender": complex(1, 2)}]},
        {"outer": {1: "int key"}},
    ],
)
def test_non_json_meta_raises_type_error(tmp_path, meta):
    with pytest.raises(TypeError, match="offender|1"):
        save_checkpoint(tmp_path / "m.npz", {}, meta)
    assert list(tmp_path.iterdir()) == []


def test_non_json_meta_message_names_nested_key(tmp_path):
    with pytest.raises(TypeError, match=r"\['opt'\]\['sched'\]"):
        save_checkpoint(tmp_path / "m.npz", {}, {"opt": {"sched": lambda s: s}})


def test_circular_meta_raises_type_error(tmp_path):
    meta: dict = {"a": []}
    meta["a"].append(meta)
    with pytest.raises(TypeError, match="circular"):
        save_checkpoint(tmp_path / "m.npz", {}, meta)


def test_meta_must_be_mapping(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "m.npz", {}, [1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- load-side errors


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_path(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(CheckpointError, match="no such checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_meta(path)


def test_directory_path(tmp_path):
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


def test_truncated_file(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, _sample_arrays(), {"v": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError):
        read_meta(path)


@pytest.mark.parametrize("payload", [b"", b"x", b"PK\x03\x04garbage", b"\x80\x04K\x01."])
def test_garbage_files(tmp_path, payload):
    path = tmp_path / "junk.npz"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="junk.npz"):
        load_checkpoint(path)


def test_random_garbage_bytes(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_plain_npy_file(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.ones(3))
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        load_checkpoint(path)


def test_flipped_byte_in_array_data(tmp_path):
    path = tmp_path / "m.npz"
    marker = np.frombuffer(b"numlstm-marker-" * 8, dtype=np.uint8).copy()
    save_checkpoint(path, {"w": np.ones(4), "marker": marker}, {"v": 1})
    data = bytearray(path.read_bytes())
    pos = data.find(marker.tobytes())
    assert pos > 0 and data.find(marker.tobytes(), pos + 1) == -1
    data[pos + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum of 'marker'"):
        load_checkpoint(path)
    # metadata is still intact, so the cheap read still works
    assert read_meta(path) == {"v": 1}


def test_sha256_mismatch_with_valid_zip(tmp_path):
    path = tmp_path / "m.npz"
    good = {"w": np.arange(6, dtype=np.float64).reshape(2, 3)}
    tampered = good["w"].copy()
    tampered[1, 2] = -1.0
    np.savez(path, __meta__=_header(good), w=tampered)
    with pytest.raises(CheckpointError, match="corrupt: checksum of 'w' does not match"):
        load_checkpoint(path)


def test_dtype_and_shape_mismatch(tmp_path):
    w = np.arange(6, dtype=np.float64).reshape(2, 3)
    path = tmp_path / "d.npz"
    np.savez(path, __meta__=_header({"w": w}), w=w.astype(np.float32))
    with pytest.raises(CheckpointError, match="dtype of 'w'"):
        load_checkpoint(path)
    path = tmp_path / "s.npz"
    np.savez(path, __meta__=_header({"w": w}), w=w.reshape(3, 2))
    with pytest.raises(CheckpointError, match="shape of 'w'"):
        load_checkpoint(path)


def test_missing_and_extra_arrays(tmp_path):
    w = np.ones(3)
    path = tmp_path / "missing.npz"
    np.savez(path, __meta__=_header({"w": w, "b": w}), w=w)
    with pytest.raises(CheckpointError, match="missing.*'b'"):
        load_checkpoint(path)
    path = tmp_path / "extra.npz"
    np.savez(path, __meta__=_header({"w": w}), w=w, sneaky=w)
    with pytest.raises(CheckpointError, match="not listed.*'sneaky'"):
        load_checkpoint(path)


def test_plain_npz_without_meta(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.ones(3))
    with pytest.raises(CheckpointError, match="__meta__"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="__meta__"):
        read_meta(path)


def test_object_array_is_refused_without_unpickling(tmp_path):
    _UNPICKLED.clear()
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Tripwire()
    fake = {"w": np.ones(1), "evil": np.ones(1)}  # header claims a harmless array
    np.savez(path, __meta__=_header(fake), w=np.ones(1), evil=evil, allow_pickle=True)
    with pytest.raises(CheckpointError, match="object array") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert _UNPICKLED == []


def test_object_meta_entry_is_refused_without_unpickling(tmp_path):
    _UNPICKLED.clear()
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Tripwire()
    np.savez(path, __meta__=evil, allow_pickle=True)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        read_meta(path)
    assert _UNPICKLED == []


def test_invalid_json_meta(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, __meta__=np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(path)
    np.savez(path, __meta__=np.frombuffer(b"\xff\xfe", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(path)
    np.savez(path, __meta__=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="JSON object"):
        load_checkpoint(path)
    np.savez(path, __meta__=np.array([1.0, 2.0]))
    with pytest.raises(CheckpointError, match="uint8"):
        load_checkpoint(path)


def test_wrong_format_and_newer_version(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, __meta__=_header({}, format="something-else"))
    with pytest.raises(CheckpointError, match="not a numlstm checkpoint"):
        load_checkpoint(path)
    np.savez(path, __meta__=_header({}, format_version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="newer than supported"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="newer than supported"):
        read_meta(path)
    np.savez(path, __meta__=_header({}, format_version="1"))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(path)


def test_malformed_array_index(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, __meta__=_header({}, arrays={"w": {"dtype": "<f8"}}), w=np.ones(1))
    with pytest.raises(CheckpointError, match="'w'"):
        load_checkpoint(path)


# ---------------------------------------------------------------- read_meta and plain numpy


def test_read_meta(tmp_path):
    path = tmp_path / "m.npz"
    meta = {"epoch": 3, "cfg": {"cell": "gru", "sizes": [8, 16]}}
    save_checkpoint(path, _sample_arrays(), meta)
    assert read_meta(path) == meta
    assert read_meta(str(path)) == meta


def test_readable_with_plain_numpy(tmp_path):
    path = tmp_path / "m.npz"
    arrays = _sample_arrays()
    arrays["layers.0/W"] = np.eye(2, dtype=np.float32)
    meta = {"hidden": 4}
    save_checkpoint(path, arrays, meta)
    with np.load(path, allow_pickle=False) as f:
        assert set(f.files) == {"__meta__", *arrays}
        header = json.loads(f["__meta__"].tobytes().decode("utf-8"))
        plain = {name: f[name + ".npy"] for name in header["arrays"]}
        also = {name: f[name] for name in arrays}
    assert header["format"] == FORMAT == "numlstm-checkpoint"
    assert header["format_version"] == FORMAT_VERSION == 1
    assert header["meta"] == meta
    _assert_same(plain, arrays)
    _assert_same(also, arrays)
    for name, info in header["arrays"].items():
        assert info["dtype"] == arrays[name].dtype.str
        assert info["shape"] == list(arrays[name].shape)
        digest = hashlib.sha256(np.ascontiguousarray(plain[name]).tobytes()).hexdigest()
        assert digest == info["sha256"]
