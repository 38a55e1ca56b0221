"""Opening a spool: create or attach for writers, attach-only for read-only commands, recover."""

from __future__ import annotations

import logging
from pathlib import Path

from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolCorruptError, SpoolError, SpoolFullError
from mqttspool.spool import schema
from mqttspool.spool.headroom import Reserve
from mqttspool.spool.readonly import read_meta_if_ours
from mqttspool.spool.salvage import (
    SalvageReport,
    aside_name,
    clear_intent,
    pending_aside,
    quarantine,
    record_intent,
    salvage_into,
    salvage_lock,
)
from mqttspool.spool.store import Spool
from mqttspool.timekeeping import Clock, SystemClock

logger = logging.getLogger(__name__)


def open_spool(
    config: SpoolConfig,
    clock: Clock | None = None,
    integrity_check: bool = False,
    create: bool = True,
) -> Spool:
    """Open (or, with ``create``, create) the spool at ``config.path``.

    A file that is not an mqttspool database is refused with
    :class:`~mqttspool.errors.NotASpoolError` and never touched. With
    ``create=False`` (read-only commands) a missing or empty file is refused
    with :class:`SpoolError` and nothing is created or migrated. With
    ``integrity_check`` a spool failing ``PRAGMA quick_check`` is quarantined
    and salvaged; so is one that cannot be read at all, unless ``create`` is
    False (read-only commands then raise :class:`SpoolCorruptError`).
    """
    clock = clock or SystemClock()
    path = Path(config.path)
    if create and pending_aside(path) is not None:
        with salvage_lock(path):  # another writer may be finishing it right now
            aside = pending_aside(path)
            if aside is not None:  # a salvage was cut short: finish it first
                _salvage(path, aside)
    _create_if_missing(path, create)
    try:
        epoch, disk_full = _attach(path, migrate=create)
        spool = Spool(path, config, clock, epoch, disk_full)
        if integrity_check and not spool.integrity_ok():
            spool.close()
            raise SpoolCorruptError(path, "PRAGMA quick_check failed")
    except SpoolCorruptError as exc:
        if not create:  # a read-only command never moves the spool (a daemon may hold it)
            raise _left_as_is(path, exc) from exc
        logger.error("%s", exc)
        return recover_spool(config, clock)
    if create:
        spool.reserve.ensure()
    return spool


def _create_if_missing(path: Path, create: bool) -> None:
    """Refuse a foreign file; create a missing or empty spool (refuse it if not ``create``)."""
    kind = schema.classify_file(path)
    schema.refuse_foreign(path, kind)
    if kind in ("missing", "empty"):
        if not create:
            raise SpoolError(
                path, f"no spool here ({kind} file); nothing was created. Check spool.path"
            )
        schema.create(path)


def _left_as_is(path: Path, exc: SpoolCorruptError) -> SpoolCorruptError:
    detail = str(exc).removeprefix(f"spool {path}: ")
    return SpoolCorruptError(
        path,
        f"is corrupt ({detail}); nothing was changed. `mqttspool run` or `mqttspool drain`"
        " moves it aside and salvages every readable reading",
    )


def _attach(path: Path, migrate: bool) -> tuple[str, bool]:
    """Attach; on a full disk (SQLite cannot create ``-shm``) use the reserve and retry once.

    Returns the epoch and whether the disk was full (so the spool keeps what is
    left of the headroom for deletes and drop counters).
    """
    try:
        return schema.attach(path, migrate), False
    except SpoolFullError:
        if not Reserve(path).release():
            raise
    return schema.attach(path, migrate), True


def recover_spool(config: SpoolConfig, clock: Clock | None = None) -> Spool:
    """Move a corrupt spool aside (``<name>.corrupt-<utc>``) and salvage it into a fresh one.

    The corrupt file is never deleted. Every readable row keeps its seq; the
    epoch is kept when readable so ids stay stable. Queued rows that could not
    be read are counted as dropped with reason ``corrupt``.

    Crash- and power-cut-safe: ``<name>.salvage`` (fsync'd before anything
    moves) names the quarantined file until the salvaged spool, built and
    fsync'd in ``<name>.salvage-tmp``, is in place. A start that finds it
    resumes: it salvages again from the quarantined file (from scratch, so
    nothing is counted twice), or only clears it when the salvage had landed.
    """
    clock = clock or SystemClock()
    path = Path(config.path)
    with salvage_lock(path):
        aside = pending_aside(path)
        if aside is None:
            aside = aside_name(path)
            record_intent(path, aside)
        _salvage(path, aside)
    spool = Spool(path, config, clock, schema.attach(path, migrate=True))
    spool.reserve.ensure()
    return spool


def _salvage(path: Path, aside: Path) -> None:
    """Quarantine (what is still at ``path``), salvage from ``aside``, install, clear the intent."""
    if _salvaged_from(path) != str(aside):
        quarantine(path, aside)
        if not aside.exists():  # nothing at either name: nothing left to salvage
            logger.error("spool %s: the file %s to salvage is gone; starting empty", path, aside)
            schema.create(path)
        else:
            _log_salvage(path, salvage_into(aside, path))
    clear_intent(path)


def _salvaged_from(path: Path) -> str | None:
    """``meta.salvaged_from`` of the spool at ``path`` if it is a readable spool, else None."""
    if schema.classify_file(path) != "ours":
        return None
    return read_meta_if_ours(path, "salvaged_from")


def _log_salvage(path: Path, report: SalvageReport) -> None:
    logger.error(
        "spool %s was corrupt: moved aside to %s; salvaged %d reading(s) and %d dead letter(s),"
        " %d reading(s) unreadable (counted as dropped, reason corrupt%s); epoch %s",
        path,
        report.quarantined,
        report.rows,
        report.dead_letters,
        report.lost,
        "" if report.exact else ", estimated: the row counters were unreadable",
        "kept" if report.epoch_kept else "renewed",
    )
