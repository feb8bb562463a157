"""The engine cache: file names, the JSON sidecar beside each engine, and the look-up.

Each engine file is named by its cache key and has a sidecar that records that key, the build
options and the model's ``posenet.*`` metadata::

    <cache dir>/<model stem>.<precision>.<key digest>.engine
    <cache dir>/<model stem>.<precision>.<key digest>.engine.json
    <cache dir>/<model stem>.<precision>.<key digest>.calibration.cache     (int8 only)

No TensorRT is needed for any of it.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posenet_core.contract import ModelInfo
from posenet_core.files import write_bytes_atomically
from posenet_ros.tensorrt.errors import EngineError, StaleEngineError
from posenet_ros.tensorrt.key import EngineKey
from posenet_ros.tensorrt.options import BuildOptions

__all__ = [
    "CALIBRATION_CACHE_SUFFIX",
    "ENGINE_SUFFIX",
    "SIDECAR_FORMAT",
    "CacheLookup",
    "Sidecar",
    "atomic_write",
    "calibration_cache_path_for",
    "engine_path_for",
    "find_cached_engine",
    "make_sidecar",
    "read_engine_bytes",
    "read_sidecar",
    "resolve_cache_dir",
    "sidecar_path_for",
    "write_json_atomic",
]

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".engine.json"
CALIBRATION_CACHE_SUFFIX = ".calibration.cache"
SIDECAR_FORMAT = "posenet_ros.trt_engine/1"
_ENGINE_NAME = re.compile(r"^(?P<stem>.+)\.(?P<precision>[a-z0-9]+)\.(?P<digest>[0-9a-f]{16})$")


def resolve_cache_dir(model_path: str | Path, engine_cache_dir: str | Path | None = None) -> Path:
    """The engine cache folder: ``engine_cache_dir`` (``~`` expanded), or the model's folder."""
    if engine_cache_dir is None or str(engine_cache_dir).strip() == "":
        return Path(os.path.abspath(model_path)).parent
    return Path(os.path.expanduser(str(engine_cache_dir))).absolute()


def engine_path_for(cache_dir: str | Path, model_path: str | Path, key: EngineKey) -> Path:
    """``<cache_dir>/<model stem>.<precision>.<key digest>.engine``."""
    stem = Path(model_path).stem
    return Path(cache_dir) / f"{stem}.{key.precision}.{key.digest()}{ENGINE_SUFFIX}"


def sidecar_path_for(engine_path: str | Path) -> Path:
    """The sidecar of an engine: its file name plus ``.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def calibration_cache_path_for(engine_path: str | Path) -> Path:
    """TensorRT's INT8 calibration cache beside the engine (reused when rebuilding it)."""
    engine_path = Path(engine_path)
    base = engine_path.name[: -len(ENGINE_SUFFIX)]
    return engine_path.with_name(base + CALIBRATION_CACHE_SUFFIX)


@dataclass(frozen=True)
class Sidecar:
    """A parsed, validated sidecar file."""

    path: Path
    key: EngineKey
    engine_file: str
    engine_sha256: str
    model_file: str
    build: dict[str, Any]
    data: dict[str, Any] = field(hash=False, compare=False)

    @property
    def dla_core(self) -> int | None:
        """The DLA core the engine was built for (None: GPU)."""
        value = self.build.get("dla_core")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def max_batch(self) -> int:
        """Largest batch the engine was built to accept."""
        value = self.build.get("max_batch", 1)
        return value if isinstance(value, int) and value >= 1 else 1


def make_sidecar(
    key: EngineKey,
    info: ModelInfo,
    options: BuildOptions,
    engine_path: Path,
    engine_sha256: str,
    *,
    build_seconds: float | None = None,
) -> dict[str, Any]:
    """The sidecar's content for a freshly built engine."""
    return {
        "format": SIDECAR_FORMAT,
        "key": key.as_dict(),
        "key_digest": key.digest(),
        "engine_file": engine_path.name,
        "engine_sha256": engine_sha256,
        "model_file": os.path.basename(info.path),
        "model_path": os.path.abspath(info.path),
        "model_metadata": dict(info.metadata),
        "build": options.as_dict(),
        "build_seconds": None if build_seconds is None else round(float(build_seconds), 1),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "built_by": "posenet_ros.trt_engine",
    }


def read_sidecar(path: str | Path) -> Sidecar:
    """Read and validate an engine's sidecar; raises EngineError naming the file and problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EngineError(f"engine sidecar {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"cannot read engine sidecar {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineError(f"engine sidecar {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EngineError(f"engine sidecar {path} must hold a JSON object")
    if data.get("format") != SIDECAR_FORMAT:
        raise EngineError(
            f"engine sidecar {path} has format {data.get('format')!r}; expected {SIDECAR_FORMAT!r}"
        )
    key = EngineKey.from_dict(data.get("key"), source=f"engine sidecar {path}")
    strings = {}
    for name in ("engine_file", "engine_sha256", "model_file"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise EngineError(f"engine sidecar {path}: {name!r} must be a non-empty string")
        strings[name] = value
    if not re.fullmatch(r"[0-9a-f]{64}", strings["engine_sha256"]):
        raise EngineError(f"engine sidecar {path}: engine_sha256 must be a hex SHA-256")
    build = data.get("build", {})
    if not isinstance(build, dict):
        raise EngineError(f"engine sidecar {path}: 'build' must be an object")
    return Sidecar(path=path, key=key, build=build, data=data, **strings)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and os.replace."""
    write_bytes_atomically(path, data)


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically; raises EngineError on I/O errors."""
    try:
        atomic_write(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise EngineError(f"cannot write {path}: {exc}") from exc


@dataclass
class CacheLookup:
    """What the cache holds for one model file and key.

    ``status``: ``"hit"`` (``engine_path`` exists and its sidecar matches ``key``),
    ``"missing"`` (no engine of this model and precision) or ``"stale"`` (engines of this model
    and precision exist but none matches: ``stale`` lists ``(engine path, reasons)``).
    """

    status: str
    key: EngineKey
    engine_path: Path
    sidecar: Sidecar | None = None
    stale: list[tuple[Path, list[str]]] = field(default_factory=list)

    def stale_message(self) -> str:
        """The stale engines and what differs, one per line."""
        return "\n".join(f"  {path}: " + "; ".join(reasons) for path, reasons in self.stale)


def find_cached_engine(
    cache_dir: str | Path, model_path: str | Path, key: EngineKey
) -> CacheLookup:
    """Look in ``cache_dir`` for the engine of ``model_path`` with ``key`` (no TensorRT needed).

    Engines of the same model file name and precision with another key, or with a missing or
    unreadable sidecar, are reported as stale with the reasons; engines of other precisions
    or of other model files are ignored.
    """
    cache_dir = Path(cache_dir)
    model_name = os.path.basename(model_path)
    stem = Path(model_path).stem
    expected = engine_path_for(cache_dir, model_path, key)
    lookup = CacheLookup(status="missing", key=key, engine_path=expected)
    pattern = os.path.join(
        glob.escape(str(cache_dir)), glob.escape(f"{stem}.{key.precision}.") + "*" + ENGINE_SUFFIX
    )
    # An engine whose sidecar was deleted or damaged counts as stale: it must not be loaded or
    # overwritten unnoticed.
    for engine in sorted(Path(p) for p in glob.glob(pattern)):
        match = _ENGINE_NAME.match(engine.name[: -len(ENGINE_SUFFIX)])
        if match is None or match["stem"] != stem or match["precision"] != key.precision:
            continue  # e.g. "dino.fp16.x.fp16.<digest>" belongs to model "dino.fp16.x"
        # A sidecar without its engine is not globbed: nothing to load, nothing to protect.
        try:
            sidecar = read_sidecar(sidecar_path_for(engine))
        except EngineError as exc:
            lookup.stale.append((engine, [f"sidecar unusable ({exc})"]))
            continue
        if sidecar.model_file != model_name:
            continue  # another model whose stem happens to match the pattern
        if engine == expected and sidecar.key == key:
            lookup.status, lookup.sidecar = "hit", sidecar
            continue
        reasons = sidecar.key.differences(key) or [
            f"sidecar key digest {sidecar.key.digest()} does not match the file name"
        ]
        lookup.stale.append((engine, reasons))
    if lookup.status != "hit" and lookup.stale:
        lookup.status = "stale"
    return lookup


def read_engine_bytes(engine_path: str | Path, sidecar: Sidecar) -> bytes:
    """The engine file's bytes, checked against the SHA-256 its sidecar recorded.

    Raises StaleEngineError when the file changed since it was built (truncated, replaced).
    """
    try:
        data = Path(engine_path).read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read TensorRT engine {engine_path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sidecar.engine_sha256:
        raise StaleEngineError(
            f"TensorRT engine {engine_path} does not match its sidecar (SHA-256 {actual[:12]}, "
            f"sidecar says {sidecar.engine_sha256[:12]}): the file was changed or truncated "
            "after it was built"
        )
    return data
