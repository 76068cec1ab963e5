"""pipeline.npyfile: .npy files mapped without np.load's header parse."""

from __future__ import annotations

import ast
import io

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.npyfile import map_npy


def _refuse_literal_eval(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("ast.literal_eval called")

    monkeypatch.setattr(ast, "literal_eval", refuse)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("dtype", ["uint8", ">u2", "<i4", "float32", "float64", "bool"])
def test_map_npy_reads_what_numpy_writes(tmp_path, monkeypatch, version, dtype):
    array = (np.arange(3 * 5 * 4) % 7).astype(dtype).reshape(3, 5, 4)
    path = tmp_path / "a.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, array, version=version)
    _refuse_literal_eval(monkeypatch)
    mapped = map_npy(path)
    assert isinstance(mapped, np.memmap) and mapped.dtype == array.dtype
    np.testing.assert_array_equal(mapped, array)
    with open(path, "rb") as fh:  # an open file: its name is mapped
        np.testing.assert_array_equal(map_npy(fh, mode="c"), array)


def test_map_npy_modes_and_order(tmp_path, monkeypatch):
    array = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    path = tmp_path / "f.npy"
    np.save(path, array)
    _refuse_literal_eval(monkeypatch)
    np.testing.assert_array_equal(map_npy(path), array)
    copy = map_npy(path, mode="c")
    copy[0, 0] = -1  # copy-on-write: the file is unchanged
    assert map_npy(path)[0, 0] == 0
    shared = map_npy(path, mode="r+")
    shared[0, 0] = 5
    shared.flush()
    del shared
    assert map_npy(path)[0, 0] == 5
    with pytest.raises(ValueError):
        map_npy(path)[0, 0] = 1  # read-only


def test_map_npy_refuses_other_files(tmp_path):
    with pytest.raises(InputError, match="mode must be one of"):
        map_npy(tmp_path / "x.npy", mode="w+")
    with pytest.raises(InputError, match="file must be a path or an open file"):
        map_npy(io.BytesIO(b"\x93NUMPY"))
    text = tmp_path / "t.npy"
    text.write_bytes(b"not an array at all")
    with pytest.raises(InputError, match="t.npy is not an .npy file"):
        map_npy(text)
    structured = tmp_path / "s.npy"
    np.save(structured, np.zeros(3, dtype=[("a", "u1"), ("b", "f4")]))
    with pytest.raises(InputError, match="does not describe a plain array"):
        map_npy(structured)
    with pytest.raises(FileNotFoundError):
        map_npy(tmp_path / "missing.npy")
