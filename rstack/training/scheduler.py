"""Level-0 batches as parallel Ray tasks: at most ``concurrency`` at once, each retried, a lost host recovered.

A plain loop over ``ray.wait`` (not a retry library) because a lost Spark host fails every batch in
flight at once, and the loop must count one retry for each and bring up a new host before any
resubmits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rstack.errors import RstackError, TrainingError
from rstack.models.level0 import BatchSpec

log = logging.getLogger("rstack")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def cause_of(exc: BaseException) -> str:
    """One line naming what went wrong, for "retry i of n after <cause>"."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayActorError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"the Spark host was lost ({type(exc).__name__}: {first[:200]})"
    inner = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else exc
    inner = inner or exc
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip() and not ln.startswith("Traceback")]
    # Py4J puts the JVM's exception on the second line ("An error occurred while calling o1.fit. / : org...").
    text = " ".join(lines[:2]) if lines else ""
    return f"{type(inner).__name__}: {text[:300]}"


def host_lost(exc: BaseException) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(exc, RayActorError)


def refs_lost(exc: BaseException) -> bool:
    """True when an object (a Level-0 result) was lost with the node that held it."""
    from ray.exceptions import ObjectLostError, OwnerDiedError

    # A task whose argument was lost may report it as its own failure's cause.
    return any(isinstance(e, ObjectLostError | OwnerDiedError) for e in (exc, getattr(exc, "cause", None)))


def run_batches(
    batches: list[BatchSpec],
    submit: Callable[[BatchSpec], tuple[Any, Any]],
    concurrency: int,
    max_retries: int,
    recover: Callable[[BaseException], None] | None = None,
    cancel: Callable[[], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """Run every batch through ``submit`` (returns the refs of its metadata and of its predictions' path),
    at most ``concurrency`` at once, each retried up to ``max_retries`` times.

    rstack's own errors (bad input, one-class labels) are not retried: they would fail again. A lost
    Spark host fails every batch in flight; ``recover`` then brings up a new one before they are
    resubmitted. On any exit by exception ``cancel`` stops the Spark jobs still running and the
    tasks in flight are waited out, so none writes into a run that is being closed.
    """
    import ray

    queue = sorted(batches, key=lambda b: b.batch_id)
    pending: dict[Any, tuple[BatchSpec, Any]] = {}
    attempts = {b.batch_id: 0 for b in batches}
    metas: dict[int, dict[str, Any]] = {}
    tables: dict[int, Any] = {}
    n = len(batches)
    try:
        while queue or pending:
            while queue and len(pending) < concurrency:
                batch = queue.pop(0)
                meta_ref, table_ref = submit(batch)
                pending[meta_ref] = (batch, table_ref)
                log.info(
                    "level0: %s (%d of %d) started%s: %s",
                    batch.name,
                    batch.batch_id + 1,
                    n,
                    f", attempt {attempts[batch.batch_id] + 1}" if attempts[batch.batch_id] else "",
                    ", ".join(batch.symbols),
                )
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                if ref not in pending:  # already failed over with a lost host
                    continue
                batch, table_ref = pending.pop(ref)
                try:
                    meta = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - sorted into retryable or not just below
                    failed = [batch]
                    cause_exc: BaseException = getattr(exc, "cause", None) or exc
                    if isinstance(cause_exc, RstackError):
                        raise cause_exc from exc
                    lost = host_lost(exc)
                    if lost:
                        failed += [b for b, _ in pending.values()]
                        pending.clear()
                    cause = cause_of(exc)
                    for b in failed:
                        attempts[b.batch_id] += 1
                        if attempts[b.batch_id] > max_retries:
                            raise TrainingError(
                                f"level0 {b.name} ({', '.join(b.symbols)}) failed {attempts[b.batch_id]} times "
                                f"(level0.max_retries = {max_retries}); last cause: {cause}"
                            ) from exc
                        log.warning(
                            "batch %d: retry %d of %d after %s", b.batch_id, attempts[b.batch_id], max_retries, cause
                        )
                    if lost and recover is not None:
                        recover(exc)
                    queue = sorted(queue + failed, key=lambda b: b.batch_id)
                    continue
                meta["attempts"] = attempts[batch.batch_id] + 1
                metas[batch.batch_id] = meta
                tables[batch.batch_id] = table_ref
                if progress is not None:
                    progress(len(metas))
                log.info(
                    "level0: %s done in %.1fs (fit %.1fs, checkpoint %.2fs), %d of %d finished",
                    batch.name,
                    meta["seconds"],
                    meta["fit_seconds"],
                    meta.get("checkpoint_seconds", 0.0),
                    len(metas),
                    n,
                )
    except BaseException:
        if pending:
            if cancel is not None:
                cancel()
            _drain(list(pending))
        raise
    return metas, tables


def _drain(refs: list[Any]) -> None:
    """Wait for Level-0 tasks still in flight (their Spark jobs were cancelled), so none writes on."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception as exc:  # noqa: BLE001 - a running task may not be cancellable; we wait below
            log.debug("could not cancel a Level-0 task: %s", exc)
    ray.wait(refs, num_returns=len(refs), timeout=120)


def progress_gauge(run_id: str, total: int, restored: int) -> Callable[[int], None]:
    """Level-0 batches done / total as Ray metrics, for the dashboard's Metrics view and Prometheus."""
    from ray.util.metrics import Gauge

    done_gauge = Gauge("rstack_level0_batches_done", "Level-0 batches finished", tag_keys=("run",))
    total_gauge = Gauge("rstack_level0_batches_total", "Level-0 batches in the run", tag_keys=("run",))
    tags = {"run": run_id}
    total_gauge.set(total, tags=tags)
    done_gauge.set(restored, tags=tags)

    def update(done: int) -> None:
        done_gauge.set(done, tags=tags)

    return update
