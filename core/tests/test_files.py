"""files: the atomic writer that export, quantize, checkpoints, map files and the engine cache
share."""

from __future__ import annotations

import os
import stat

import pytest

from posenet_core.files import replaced_atomically, write_bytes_atomically


def test_write_replaces_the_file_with_umask_permissions(tmp_path):
    path = tmp_path / "sub" / "out.bin"  # the folder is made
    write_bytes_atomically(path, b"old")
    write_bytes_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]  # no temporary file left


def test_an_error_in_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half written"), replaced_atomically(path) as tmp:
        tmp.write_bytes(b"ne")
        raise RuntimeError("half written")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
