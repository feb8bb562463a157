"""Reading the small JSON files that travel with datasets, model files and evaluations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posenet_core.errors import PoseNetError

__all__ = ["read_json_object"]


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
