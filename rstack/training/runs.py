"""Run folders: written under a temporary name, renamed when complete, ``latest`` moved last."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rstack._io import MANIFEST, utc_text, write_json_atomic, write_manifest
from rstack.errors import InputError, TrainingError

TMP_PREFIX = "_tmp-"
FAILED_PREFIX = "_failed-"
LATEST = "latest"


def new_run_id() -> str:
    return utc_text(fmt="%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]{0,99}")
RUN_RECORD = "run.json"
LOCK = ".lock"


def check_run_id(run_id: str) -> str:
    """Run ids name folders; one that could leave the models folder is refused."""
    if not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise InputError(
            f"run id {run_id!r} is not a run name; use the id printed by `rstack train`, e.g. 20260101T000000Z-abc123"
        )
    return run_id


class RunDir:
    """A run being written: ``MODELS/_tmp-<id>`` until :meth:`commit` renames it to ``MODELS/<id>``.

    The process writing a run holds an exclusive lock on its folder, so a second process cannot
    resume (and write into) the same run; the lock dies with the process, even on SIGKILL.
    """

    def __init__(self, models_dir: Path, run_id: str | None = None, resume: bool = False) -> None:
        self.models_dir = Path(models_dir).resolve()
        self.run_id = check_run_id(run_id) if run_id is not None else new_run_id()
        self.resumed = resume
        if self.models_dir.exists() and not self.models_dir.is_dir():
            raise InputError(f"models path {self.models_dir} is a file; pass a folder for --models")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.work = self.models_dir / f"{TMP_PREFIX}{self.run_id}"
        self.final = self.models_dir / self.run_id
        if resume:
            self._reopen()
        else:
            if self.final.exists() or any(self.models_dir.glob(f"_*-{self.run_id}")):
                raise InputError(f"run {self.run_id} already exists in {self.models_dir}; pick another --run-id")
            self.work.mkdir()
            (self.work / "logs").mkdir()
            self._lock = self._take_lock()

    def _reopen(self) -> None:
        failed = self.models_dir / f"{FAILED_PREFIX}{self.run_id}"
        if (self.final / MANIFEST).is_file():
            raise InputError(f"run {self.run_id} in {self.models_dir} is complete; nothing to resume")
        if not self.work.is_dir() and not failed.is_dir():
            raise InputError(
                f"no unfinished run {self.run_id!r} in {self.models_dir} (looked for {self.work.name} and "
                f"{failed.name}); `ls {self.models_dir}` shows the runs there"
            )
        if not self.work.is_dir():
            # Lock the failed folder before renaming it, so two resumes cannot both take it.
            probe = _lock_file(failed, self.run_id)
            os.rename(failed, self.work)
            self._lock = probe
        else:
            self._lock = self._take_lock()
        (self.work / "logs").mkdir(exist_ok=True)

    def _take_lock(self) -> Any:
        return _lock_file(self.work, self.run_id)

    def record(self) -> dict[str, Any] | None:
        path = self.work / RUN_RECORD
        return json.loads(path.read_text()) if path.is_file() else None

    def write_record(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.work / RUN_RECORD, record, indent=1)

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
        self._release(self.final)
        return self.final

    def fail(self) -> Path:
        """Keep a failed run (its logs and checkpoints) under a name no reader takes for a finished one."""
        failed = self.models_dir / f"{FAILED_PREFIX}{self.run_id}"
        if self.work.exists():
            os.rename(self.work, failed)
        self._release(failed)
        return failed

    def _release(self, folder: Path) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            Path(folder, LOCK).unlink(missing_ok=True)
            lock.close()
            self._lock = None

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _lock_file(folder: Path, run_id: str) -> Any:
    handle = open(Path(folder, LOCK), "a+")  # noqa: SIM115 - held open for the run's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise InputError(
            f"run {run_id} is being written by another rstack process ({holder}); wait for it or stop it"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


@contextlib.contextmanager
def writing_into(run_work: Path) -> Iterator[None]:
    """Guards a host task that may outlive its run (a straggler ``_drain`` stopped waiting for):
    it does not start writing into a run that was closed, and if the run is closed while it writes
    (renamed to ``_failed-<id>`` or committed), what it recreated at the old path is removed."""
    run_work = Path(run_work)
    if not (run_work / RUN_RECORD).is_file():
        raise TrainingError(f"{run_work} was closed (failed, cancelled or committed); this task's results are dropped")
    try:
        yield
    finally:
        if not (run_work / RUN_RECORD).is_file():
            # The record moved with the run: anything here now was made by this task after the close.
            shutil.rmtree(run_work, ignore_errors=True)


def unfinished_runs(models_dir: Path) -> list[str]:
    """Ids of runs left by a crash, Ctrl-C or a failure; `rstack train --resume ID` continues one."""
    out = []
    for prefix in (TMP_PREFIX, FAILED_PREFIX):
        out += [p.name[len(prefix) :] for p in Path(models_dir).glob(f"{prefix}*") if p.is_dir()]
    return sorted(out)


def resolve_run(models_dir: Path, run: str = LATEST) -> Path:
    if run != LATEST:
        check_run_id(run)
    path = Path(models_dir) / run
    if not (path / MANIFEST).is_file():
        raise InputError(f"no complete run {run!r} in {models_dir} (no {MANIFEST}); train one with `rstack train`")
    return path.resolve()
