"""Run folders: written under a temporary name, renamed when complete, ``latest`` moved last."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

TMP_PREFIX = "_tmp-"
FAILED_PREFIX = "_failed-"
LATEST = "latest"
MANIFEST = "manifest.json"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class RunDir:
    """A run being written: ``MODELS/_tmp-<id>`` until :meth:`commit` renames it to ``MODELS/<id>``."""

    def __init__(self, models_dir: Path, run_id: str | None = None) -> None:
        self.models_dir = Path(models_dir).resolve()
        self.run_id = run_id or new_run_id()
        if self.models_dir.exists() and not self.models_dir.is_dir():
            raise InputError(f"models path {self.models_dir} is a file; pass a folder for --models")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.work = self.models_dir / f"{TMP_PREFIX}{self.run_id}"
        self.work.mkdir()
        (self.work / "logs").mkdir()
        self.final = self.models_dir / self.run_id

    def path(self, *parts: str) -> str:
        return str(self.work.joinpath(*parts))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_manifest(self.work, manifest)

    def commit(self) -> Path:
        os.rename(self.work, self.final)
        link = self.models_dir / f".{LATEST}-{self.run_id}"
        link.symlink_to(self.run_id)
        # rename over the old link is atomic, so readers never see "latest" missing.
        os.replace(link, self.models_dir / LATEST)
        return self.final

    def fail(self) -> Path:
        """Keep the logs of a failed run under a name no reader takes for a finished one."""
        failed = self.models_dir / f"{FAILED_PREFIX}{self.run_id}"
        if self.work.exists():
            os.rename(self.work, failed)
        return failed

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def resolve_run(models_dir: Path, run: str = LATEST) -> Path:
    path = Path(models_dir) / run
    if not (path / MANIFEST).is_file():
        raise InputError(f"no complete run {run!r} in {models_dir} (no {MANIFEST}); train one with `rstack train`")
    return path.resolve()


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Readers see the old file or the whole new one, never a partial write."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = Path(run_dir) / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(_json_safe(manifest), indent=2, sort_keys=True, default=str, allow_nan=False))
    os.replace(tmp, Path(run_dir) / MANIFEST)


def _json_safe(value: Any) -> Any:
    """NaN (e.g. ROC-AUC of a one-class segment) is not JSON; write it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def load_manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / MANIFEST).read_text())
