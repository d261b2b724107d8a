"""The few things every layer shares: the key columns, atomic writes, UTC text, the run manifest.

One definition each, at the bottom of the import graph, so data, features, models, training,
serving and reporting all write files and timestamps the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

# A candle is identified by its symbol and its open time (ms UTC); every join and sort uses both.
KEY: tuple[str, str] = ("symbol", "open_time")
MANIFEST = "manifest.json"
UTC_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
UTC_MINUTES = "%Y-%m-%d %H:%M"


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    Readers (a browser, a resumed run, a CI upload) see the old file or the whole new one, never a
    partial write; a failed write leaves no temporary file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_safe(value: Any) -> Any:
    """NaN (e.g. ROC-AUC of a one-class segment) is not JSON; write it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path | str, value: Any, indent: int = 2) -> None:
    text = json.dumps(json_safe(value), indent=indent, sort_keys=True, default=str, allow_nan=False)
    write_text_atomic(path, text)


def write_parquet_atomic(frame: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


# --------------------------------------------------------------------------- UTC text


def utc_text(ms: float | None = None, fmt: str = UTC_SECONDS) -> str:
    """Epoch milliseconds (None: now) as UTC text; the manifest's and every message's format."""
    when = dt.datetime.now(dt.timezone.utc) if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return when.strftime(fmt)


def parse_utc(text: Any) -> dt.datetime | None:
    """The manifest's UTC text back to a datetime; None when absent or not a timestamp."""
    if not text:
        return None
    try:
        # Python 3.10's fromisoformat does not take the trailing Z the manifest uses.
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


# --------------------------------------------------------------------------- the manifest


def write_manifest(run_dir: Path | str, manifest: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / MANIFEST, manifest)


def load_manifest(run_dir: Path | str) -> dict[str, Any]:
    """A run's manifest, or an error that says which folder is not a finished run and what to do."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise InputError(
            f"{path} not found; point at a complete run folder (one that holds {MANIFEST}), "
            "e.g. models/latest, or train one with `rstack train`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}); the run is damaged, train it again") from exc
    if not isinstance(manifest, dict):
        raise InputError(f"{path} is not a JSON object; it is not an rstack run, train it again")
    return manifest
