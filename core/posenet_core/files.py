"""Reading the small JSON files that travel with datasets, model files and evaluations, and
writing files atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from posenet_core.errors import PoseNetError

__all__ = ["read_json_object", "replaced_atomically", "write_bytes_atomically"]


def read_json_object(path: str | Path, what: str, error: type[PoseNetError]) -> dict[str, Any]:
    """The JSON object in ``path`` (``what`` names the file in messages).

    Raises ``error`` naming the file for a missing or unreadable file, invalid JSON (with the
    line) or a value that is not an object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object ({what}), got {type(data).__name__}")
    return data


@contextlib.contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary file in ``path``'s folder for the block to write (its folder is made).

    When the block ends without an exception the file replaces ``path`` with ``os.replace``
    (readers see the old file or the new one, never a half-written one), with the permissions
    a plain ``open()`` would have given (``mkstemp`` makes it 0600); otherwise it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with :func:`replaced_atomically`, synced to disk first."""
    with replaced_atomically(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
