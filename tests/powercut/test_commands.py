"""Power cuts during every command that writes the spool.

A *cut* freezes the process (SIGSTOP), makes the power-cut filesystem
(``tests/support/powercut``) forget everything not fsync'd, kills the process
(SIGKILL) and remounts the disk: what a power failure leaves behind. Each
scenario cuts at random moments from a seeded RNG, restarts, and asserts:

* the spool opens after every cut (or is quarantined and salvaged, the
  corrupt file never deleted);
* every row committed at the moment of the cut (read while the victim is
  frozen: at FULL a commit is visible only once fsync'd) is still queued or was
  delivered; every reading whose ``enqueue`` exited 0 is delivered; at the end
  every seq up to the high-water mark was delivered or counted in
  ``status --json`` ``dropped``;
* no id is ever used for two different readings (every payload the recorder
  saw, compared per id);
* duplicates caused by one cut are at most ``bridge.max_resend`` (set below
  the window's worth of batches, so the cap is what is tested).

Bugs the campaigns found (now fixed) are reproduced deterministically by the
tests at the end, where an *armed* cut replaces one exact fsync: a cut mid
``drain`` (at most ``max_resend`` resent), at every step of a salvage
(resumed, nothing lost or counted twice), right after a spool's creation (the
next start succeeds), and at ``synchronous = "normal"`` (a new epoch, no id
reused).

Scenarios: ``enqueue``, ``run`` (simulated sensor; the broker reachable or
refused through a proxy), ``drain`` of a backlog (per-reading and batch
payloads, each at ``synchronous`` ``full`` and ``normal``), ``dead-letters
requeue``, salvage of a corrupt spool.

Campaign size: ``MQTTSPOOL_POWERCUT_CUTS=N`` spreads N cuts over the eight
scenarios (the full campaign is ``N=200``); unset, each scenario makes
``DEFAULT_CUTS`` cuts. ``MQTTSPOOL_POWERCUT_SEED`` (an integer) changes the
cut moments; a failure message names the seed and the cut. Full campaign
(about 9 minutes on two shared cores; the default run of tests/powercut/ about 45 s)::

    MQTTSPOOL_POWERCUT_CUTS=200 python3 -m pytest -q tests/powercut/test_commands.py
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.broker import BrokerFactory, MosquittoBroker
from support.daemon import Daemon, mqttspool_env, run_cli
from support.powercut import PowerCutMount
from support.powercut.fixture import powercut
from support.proxy import ProxyFactory
from support.recorder import Recorder, RecorderFactory

from mqttspool.config import SpoolConfig
from mqttspool.reading import Reading, from_us
from mqttspool.spool import open_spool

__all__ = ["powercut"]  # the fixture, re-exported so pytest finds it here

pytestmark = pytest.mark.integration

DEFAULT_CUTS = 2
SCENARIOS = 8  # enqueue, run, drain x 4 (payload x synchronous), requeue, salvage
CUTS = int(os.environ.get("MQTTSPOOL_POWERCUT_CUTS") or 0)
PER_SCENARIO = max(1, CUTS // SCENARIOS) if CUTS else DEFAULT_CUTS
SEED = int(os.environ.get("MQTTSPOOL_POWERCUT_SEED") or 20261129)
# Generous: a full campaign makes 40 cuts per scenario, each a few seconds.
TIMEOUT = 90 + 12 * PER_SCENARIO
MAX_INFLIGHT = 20
# Below one window of batches (20 x BATCH_READINGS): max_resend, not the window, bounds them.
MAX_RESEND = 300
BATCH_READINGS = 50
DEVICE = "edge-01"


# ------------------------------------------------------------------ checks


def content(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a reading this reading (``replay`` legitimately differs on a resend)."""
    return (doc["device"], doc["sensor"], doc["metric"], doc["value"], doc["unit"], doc["ts"])


def assert_ids_never_reused(recorder: Recorder, where: str) -> None:
    """Every id the recorder saw always carried the same reading."""
    by_id: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for doc in recorder.data():
        by_id[str(doc["id"])].add(content(doc))
    reused = {rid: sorted(c) for rid, c in by_id.items() if len(c) > 1}
    assert not reused, f"{where}: {len(reused)} id(s) carried different readings: " + str(
        list(reused.items())[:3]
    )


def delivered(recorder: Recorder, device: str = DEVICE) -> Counter[int]:
    """How often each seq of ``device`` arrived."""
    return Counter(int(doc["seq"]) for doc in recorder.data() if doc["device"] == device)


def duplicate_count(recorder: Recorder, device: str = DEVICE) -> int:
    """Deliveries beyond the first of each seq."""
    return sum(n - 1 for n in delivered(recorder, device).values())


def run_after_cut(
    args: list[str], env: dict[str, str], where: str, ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    """``mqttspool ARGS`` after a reboot; it must succeed (the spool opens)."""
    result = run_cli(args, env, timeout=90)
    assert result.returncode in ok, f"{where}: {args[0]} failed: {result.stdout}{result.stderr}"
    return result


def status(env: dict[str, str], where: str) -> dict[str, Any]:
    """``status --json`` -- it must work after every cut (the spool opens)."""
    return dict(json.loads(run_after_cut(["status", "--json"], env, where).stdout))


def drain_to_empty(env: dict[str, str], where: str, rejections: bool = False) -> None:
    """An uncut ``drain`` to the end (exit 1 expected when the broker rejects readings)."""
    result = run_after_cut(["drain", "--timeout", "60"], env, where, ok=(0, 1))
    assert result.returncode == (1 if rejections else 0), f"{where}: {result.stderr}"
    assert ("drained with rejections" in result.stderr) == rejections, result.stderr


def table_seqs(path: Path, table: str = "reading") -> dict[int, float]:
    """seq -> value of one spool table, read after a restart."""
    conn = sqlite3.connect(path)
    try:
        return {int(seq): float(v) for seq, v in conn.execute(f"SELECT seq, value FROM {table}")}
    finally:
        conn.close()


def committed_rows(path: Path) -> dict[int, tuple[Any, ...]]:
    """seq -> (device, sensor, metric, value) of every committed queued row, or {} if busy.

    In WAL mode a reader sees a commit only after it was written (and, at FULL,
    fsync'd), so these are exactly the rows a writer had been told were stored.
    """
    try:
        conn = sqlite3.connect(path, timeout=1)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute("SELECT seq, device, sensor, metric, value FROM reading").fetchall()
    except sqlite3.Error as exc:  # frozen mid-creation or mid-recovery: nothing to compare
        print(f"no snapshot of {path}: {exc}")
        return {}
    finally:
        conn.close()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def assert_committed_survived(
    committed: dict[int, tuple[Any, ...]], spool: Path, recorder: Recorder, where: str
) -> None:
    """Every row committed at the cut is still queued or was delivered, unchanged."""
    print(f"{where}: {len(committed)} rows committed at the cut")
    if not committed:
        return
    now = committed_rows(spool)
    sent = {
        int(d["seq"]): (d["device"], d["sensor"], d["metric"], d["value"]) for d in recorder.data()
    }
    lost = {seq: row for seq, row in committed.items() if now.get(seq, sent.get(seq)) != row}
    assert not lost, (
        f"{where}: {len(lost)} of {len(committed)} committed rows neither queued nor"
        f" delivered after the cut, e.g. {sorted(lost.items())[:3]}"
    )


def high_water(path: Path) -> int:
    """The spool's AUTOINCREMENT high-water mark."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'reading'").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def wait_quiet(recorder: Recorder, quiet: float = 0.4, timeout: float = 20) -> None:
    """Wait until nothing arrived for ``quiet`` s (what a dead publisher sent is in)."""
    deadline = time.monotonic() + timeout
    count, since = len(recorder.messages()), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("the recorder kept receiving after the publisher died")
        time.sleep(0.05)
        now_count = len(recorder.messages())
        if now_count != count:
            count, since = now_count, time.monotonic()


@dataclass
class Cutter:
    """Cuts at seeded random moments and remembers where it is, for failure messages."""

    fs: PowerCutMount
    scenario: str
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{SEED}-{self.scenario}")

    @property
    def where(self) -> str:
        """``seed S, SCENARIO cut N`` -- enough to replay the failing cut."""
        return f"seed {SEED}, {self.scenario} cut {self.fs.cuts}"

    def cut_after(
        self, delay: float, *victims: subprocess.Popen[str], spool: Path | None = None
    ) -> dict[int, tuple[Any, ...]]:
        """Let ``victims`` run ``delay`` s (a random moment, not a sync point), then cut."""
        time.sleep(delay)
        return self.cut(*victims, spool=spool)

    def cut(
        self, *victims: subprocess.Popen[str], spool: Path | None = None
    ) -> dict[int, tuple[Any, ...]]:
        """Cut now, then remount: the reboot.

        With ``spool``, returns the rows committed in it at the cut (read while the
        victims are frozen; empty if it could not be read then).
        """
        committed: dict[int, tuple[Any, ...]] = {}

        def snapshot() -> None:
            if spool is not None and spool.exists():
                committed.update(committed_rows(spool))

        self.fs.cut(*victims, frozen=snapshot)
        self.fs.mount()
        return committed


def per_cut(totals: list[int]) -> list[int]:
    """Duplicates each cut caused: totals are taken after each run, the first before any cut."""
    return [b - a for a, b in itertools.pairwise(totals)]


# ----------------------------------------------------------------- enqueue

ENQUEUE_LINES = 300  # one commit per process; a full campaign stays ~50k readings


def enqueue_input(values: range) -> str:
    """JSON lines for ``enqueue``, one reading per value."""
    return "".join(
        json.dumps({"sensor": "pc", "metric": "n", "value": float(v)}) + "\n" for v in values
    )


def cut_enqueue(cutter: Cutter, proc: subprocess.Popen[str], spool: Path) -> None:
    """Cut a running ``enqueue``: what it had committed must survive."""
    committed = cutter.cut(proc, spool=spool)
    proc.communicate()
    if committed:
        stored = table_seqs(spool)
        lost = {seq for seq, row in committed.items() if stored.get(seq) != row[3]}
        assert not lost, f"{cutter.where}: committed rows lost at the cut: {sorted(lost)[:5]}"


def enqueue_until_cut(cutter: Cutter, env: dict[str, str], first: int) -> tuple[list[int], int]:
    """Run ``enqueue`` processes back to back until a random moment, then cut.

    Returns the values of every process that exited 0 before the cut, and the next value.
    """
    accepted: list[int] = []
    deadline = time.monotonic() + cutter.rng.uniform(0.2, 3.0)
    while True:
        values = range(first, first + ENQUEUE_LINES)
        first += ENQUEUE_LINES
        proc = subprocess.Popen(
            [sys.executable, "-m", "mqttspool", "enqueue", "-"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = proc.communicate(enqueue_input(values), max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            cut_enqueue(cutter, proc, Path(env["MQTTSPOOL_SPOOL__PATH"]))
            return accepted, first
        assert proc.returncode == 0, f"{cutter.where}: enqueue failed: {err}"
        accepted.extend(values)


@pytest.mark.timeout(TIMEOUT)
def test_powercut_enqueue(
    powercut: PowerCutMount, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    cutter = Cutter(powercut, "enqueue")
    spool = powercut.path / "spool.db"
    env = mqttspool_env(spool, broker.port, spool__min_free_bytes=0)
    accepted: list[int] = []
    first = 0
    for _ in range(PER_SCENARIO):
        more, first = enqueue_until_cut(cutter, env, first)
        accepted += more
        if not spool.exists():
            assert not accepted, f"{cutter.where}: the spool vanished"
            continue
        status(env, cutter.where)
        stored = set(table_seqs(spool).values())
        lost = sorted(set(map(float, accepted)) - stored)
        assert not lost, f"{cutter.where}: enqueue exited 0, then {len(lost)} were lost: {lost[:5]}"
    if spool.exists():
        drain_to_empty(env, cutter.where)
    total = high_water(spool) if spool.exists() else 0
    recorder.wait_data_ids(total, timeout=60)
    values = {doc["value"] for doc in recorder.data()}
    assert set(map(float, accepted)) <= values
    assert sorted(delivered(recorder)) == list(range(1, total + 1))
    assert_ids_never_reused(recorder, cutter.where)
    assert duplicate_count(recorder) == 0


# --------------------------------------------------------------------- run

SIMULATED = '[{"type": "simulated", "name": "sim", "interval": 0.05}]'


def run_and_cut(cutter: Cutter, env: dict[str, str], recorder: Recorder) -> None:
    """One ``run`` from start to a random cut; committed rows must survive it."""
    spool = Path(env["MQTTSPOOL_SPOOL__PATH"])
    daemon = Daemon(env)
    try:
        committed = cutter.cut_after(cutter.rng.uniform(0.3, 4.0), daemon.proc, spool=spool)
    finally:
        daemon.stop()
    wait_quiet(recorder)
    assert_committed_survived(committed, spool, recorder, cutter.where)


@pytest.mark.timeout(TIMEOUT)
def test_powercut_run(
    powercut: PowerCutMount,
    broker: MosquittoBroker,
    proxy_factory: ProxyFactory,
    recorder_factory: RecorderFactory,
) -> None:
    recorder = recorder_factory(broker)
    proxy = proxy_factory(broker)  # refused for some runs, so readings queue up
    cutter = Cutter(powercut, "run")
    spool = powercut.path / "spool.db"
    settings = {
        "spool__min_free_bytes": 0,
        "bridge__max_inflight": MAX_INFLIGHT,
        "bridge__max_resend": MAX_RESEND,
    }
    env = mqttspool_env(spool, proxy.port, bridge__max_rate=500, sensors=SIMULATED, **settings)
    epochs: set[str] = set()
    dup_totals: list[int] = []
    for _ in range(PER_SCENARIO):
        proxy.refuse() if cutter.rng.random() < 0.4 else proxy.restore()
        run_and_cut(cutter, env, recorder)
        dup_totals.append(duplicate_count(recorder))
        if spool.exists():
            epochs.add(status(env, cutter.where)["epoch"])
    drain_to_empty(mqttspool_env(spool, broker.port, **settings), cutter.where)
    wait_quiet(recorder)
    dup_totals.append(duplicate_count(recorder))
    report = status(env, cutter.where)
    assert len(epochs | {report["epoch"]}) == 1  # at FULL no cut needs a new epoch
    missing = set(range(1, high_water(spool) + 1)) - set(delivered(recorder))
    assert len(missing) <= sum(report["dropped"].values()), (
        f"{cutter.where}: {len(missing)} seqs neither delivered nor counted: {sorted(missing)[:5]}"
    )
    assert_ids_never_reused(recorder, cutter.where)
    assert dup_totals[0] == 0
    check_duplicates(per_cut(dup_totals), "run")


def check_duplicates(per_cut_dups: list[int], scenario: str) -> None:
    """At most max_resend duplicates per cut."""
    print(f"{scenario}: duplicates per cut {per_cut_dups} (max_resend {MAX_RESEND})")
    over = [(n, dups) for n, dups in enumerate(per_cut_dups, start=1) if dups > MAX_RESEND]
    assert not over, f"seed {SEED}, {scenario}: (cut, duplicates) over {MAX_RESEND}: {over}"


# ------------------------------------------------------------------- drain

BACKLOG = 5000


def backlog(path: Path, n: int, device: str = DEVICE) -> list[int]:
    """Append ``n`` readings (in this process) and close; returns their seqs."""
    spool = open_spool(SpoolConfig(path=str(path), min_free_bytes=0))
    try:
        ts = from_us(time.time_ns() // 1000)
        batch = [
            Reading(device=device, sensor="backlog", metric="n", value=float(i), ts=ts)
            for i in range(n)
        ]
        return spool.append(batch).seqs
    finally:
        spool.close()


# Messages/s: the backlog outlasts the latest cut (batches carry BATCH_READINGS each).
DRAIN_RATE = {"reading": "1200", "batch": "24"}


@pytest.mark.parametrize("level", ["full", "normal"])
@pytest.mark.parametrize("payload", ["reading", "batch"])
@pytest.mark.timeout(TIMEOUT)
def test_powercut_drain(
    powercut: PowerCutMount,
    broker: MosquittoBroker,
    recorder_factory: RecorderFactory,
    payload: str,
    level: str,
) -> None:
    recorder = recorder_factory(broker)
    cutter = Cutter(powercut, f"drain-{payload}-{level}")
    spool = powercut.path / "spool.db"
    env = mqttspool_env(
        spool,
        broker.port,
        spool__min_free_bytes=0,
        spool__synchronous=level,
        bridge__max_inflight=MAX_INFLIGHT,
        bridge__max_resend=MAX_RESEND,
        bridge__payload=payload,
        bridge__batch_max_readings=BATCH_READINGS,
        bridge__max_rate=DRAIN_RATE[payload],
    )
    dup_totals = [0]
    for _ in range(PER_SCENARIO):
        if not spool.exists() or len(table_seqs(spool)) < BACKLOG // 2:
            backlog(spool, BACKLOG)  # FULL commits: durable before the cut
        daemon = Daemon(env, ("drain", "--timeout", "60"))
        try:
            committed = cutter.cut_after(cutter.rng.uniform(0.3, 3.0), daemon.proc, spool=spool)
        finally:
            daemon.stop()
        wait_quiet(recorder)
        assert_committed_survived(committed, spool, recorder, cutter.where)
        status(env, cutter.where)
        # What the cut resurrected is resent here.
        drain_to_empty(dict(env, MQTTSPOOL_BRIDGE__MAX_RATE="0"), cutter.where)
        wait_quiet(recorder)
        dup_totals.append(duplicate_count(recorder))
    total = high_water(spool)
    assert sorted(delivered(recorder)) == list(range(1, total + 1))
    assert_ids_never_reused(recorder, cutter.where)
    check_duplicates(per_cut(dup_totals), cutter.scenario)


# ---------------------------------------------------------- requeue

FOREIGN = 40


@pytest.mark.timeout(TIMEOUT)
def test_powercut_dead_letters_requeue(
    powercut: PowerCutMount, broker_factory: BrokerFactory, recorder_factory: RecorderFactory
) -> None:
    broker = broker_factory("auth")  # the ACL rejects edge-02 readings sent as edge-01
    recorder = recorder_factory(broker)
    cutter = Cutter(powercut, "requeue")
    spool = powercut.path / "spool.db"
    backlog(spool, 30)
    foreign = backlog(spool, FOREIGN, device="edge-02")
    env = mqttspool_env(
        spool,
        broker.port,
        spool__min_free_bytes=0,
        broker__username="edge-01",
        broker__password=broker.users["edge-01"],
    )
    for _ in range(PER_SCENARIO):
        if not table_seqs(spool, "dead_letter"):
            # rejected again: back to dead letters
            drain_to_empty(env, cutter.where, rejections=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mqttspool", "dead-letters", "requeue", "--all"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        cutter.cut_after(cutter.rng.uniform(0.0, 1.5), proc)
        status(env, cutter.where)
        queued, dead = table_seqs(spool), table_seqs(spool, "dead_letter")
        assert not set(queued) & set(dead), f"{cutter.where}: a seq is queued and dead"
        assert set(foreign) <= set(queued) | set(dead), f"{cutter.where}: dead letters lost"
    assert run_cli(["dead-letters", "requeue", "--all"], env).returncode == 0
    fixed = dict(env, MQTTSPOOL_BROKER__USERNAME="edge-02")
    fixed["MQTTSPOOL_BROKER__PASSWORD"] = broker.users["edge-02"]
    drain_to_empty(fixed, cutter.where)
    recorder.wait_for(lambda _: set(delivered(recorder, "edge-02")) == set(foreign), 30)
    assert {float(d["value"]) for d in recorder.data() if d["device"] == "edge-02"} == {
        float(i) for i in range(FOREIGN)
    }
    assert_ids_never_reused(recorder, cutter.where)


# ---------------------------------------------------------- salvage

SALVAGE_ROWS = 3000


@dataclass
class CorruptSpool:
    """A durable spool with two scrambled leaf pages, and what salvage can read of it."""

    path: Path
    epoch: str
    digest: str
    readable: set[int]


def leaf_pages(path: Path) -> list[int]:
    """Page numbers of the ``reading`` table's leaves."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'reading' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def readable_seqs(path: Path, top: int) -> set[int]:
    """Seqs a point lookup can still read (what salvage can recover)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    found: set[int] = set()
    try:
        for seq in range(1, top + 1):
            try:
                if conn.execute("SELECT value FROM reading WHERE seq = ?", (seq,)).fetchone():
                    found.add(seq)
            except sqlite3.DatabaseError:
                continue
    finally:
        conn.close()
    return found


def make_corrupt_spool(fs: PowerCutMount, path: Path, rng: random.Random) -> CorruptSpool:
    """A durable spool of SALVAGE_ROWS readings with two scrambled leaf pages."""
    path.parent.mkdir()
    backlog(path, SALVAGE_ROWS)
    conn = sqlite3.connect(path)
    try:
        epoch = str(conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    leaves = leaf_pages(path)
    with path.open("r+b") as fh:
        for page in rng.sample(leaves[1:-1], 2):
            fh.seek((page - 1) * page_size)
            fh.write(rng.randbytes(page_size))
        fh.flush()
        os.fsync(fh.fileno())
    fs.unmount()  # a clean reboot: the corrupt spool is what the disk holds
    fs.mount()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return CorruptSpool(path, epoch, digest, readable_seqs(path, SALVAGE_ROWS))


def asides(path: Path) -> list[Path]:
    """Quarantined copies of the spool at ``path`` (``<name>.corrupt-<utc>``)."""
    return [
        p
        for p in path.parent.glob(f"{path.name}.corrupt-*")
        if not p.name.endswith(("-wal", "-shm"))
    ]


def check_salvage(
    corrupt: CorruptSpool, recorder: Recorder, env: dict[str, str], cutter: Cutter
) -> None:
    """Check one salvage after its cut: nothing salvageable lost, the loss counted once."""
    report = status(env, cutter.where)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in asides(corrupt.path)]
    assert corrupt.digest in digests, f"{cutter.where}: the corrupt spool is gone"
    prefix = f"{DEVICE}:{corrupt.epoch}:"
    ours = {int(d["seq"]) for d in recorder.data() if str(d["id"]).startswith(prefix)}
    missing = corrupt.readable - ours
    assert not missing, (
        f"{cutter.where}: {len(missing)} of {len(corrupt.readable)} salvageable readings"
        f" never delivered; the spool has epoch {report['epoch']} (was {corrupt.epoch}),"
        f" dropped {report['dropped']}"
    )
    unreadable = SALVAGE_ROWS - len(corrupt.readable)
    assert report["dropped"].get("corrupt", 0) == unreadable, report


@pytest.mark.timeout(TIMEOUT)
def test_powercut_salvage(
    powercut: PowerCutMount, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    cutter = Cutter(powercut, "salvage")
    for n in range(PER_SCENARIO):
        corrupt = make_corrupt_spool(powercut, powercut.path / f"s{n}" / "spool.db", cutter.rng)
        env = mqttspool_env(corrupt.path, broker.port, spool__min_free_bytes=0)
        daemon = Daemon(env, ("drain", "--timeout", "60"))
        try:
            cutter.cut_after(cutter.rng.uniform(0.2, 1.5), daemon.proc)
        finally:
            daemon.stop()
        drain_to_empty(env, cutter.where)  # salvages if the cut came first
        wait_quiet(recorder)
        check_salvage(corrupt, recorder, env, cutter)
    assert_ids_never_reused(recorder, cutter.where)


# ---------------------------------- bugs the campaigns found, reproduced deterministically


@pytest.mark.timeout(60)
def test_a_cut_mid_drain_resends_at_most_max_resend(
    powercut: PowerCutMount, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    spool = powercut.path / "spool.db"
    seqs = backlog(spool, BACKLOG)
    env = mqttspool_env(
        spool,
        broker.port,
        bridge__max_inflight=MAX_INFLIGHT,
        bridge__max_resend=MAX_RESEND,
        bridge__max_rate=1500,
    )
    daemon = Daemon(env, ("drain", "--timeout", "60"))
    try:
        recorder.wait_data_ids(600, timeout=30)  # 600 acknowledged-and-deleted, roughly
        powercut.cut(daemon.proc)
    finally:
        daemon.stop()
    powercut.mount()
    wait_quiet(recorder)
    before = duplicate_count(recorder)
    drain_to_empty(dict(env, MQTTSPOOL_BRIDGE__MAX_RATE="0"), "after the cut")
    wait_quiet(recorder)
    assert sorted(delivered(recorder)) == seqs  # nothing lost: at-least-once holds
    resent = duplicate_count(recorder) - before
    assert resent <= MAX_RESEND, f"one cut: {resent} duplicates > max_resend {MAX_RESEND}"


@pytest.mark.timeout(60)
def test_a_cut_during_salvage_loses_no_salvageable_reading(
    powercut: PowerCutMount, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    cutter = Cutter(powercut, "salvage-window")
    corrupt = make_corrupt_spool(powercut, powercut.path / "s" / "spool.db", cutter.rng)
    env = mqttspool_env(corrupt.path, broker.port, spool__min_free_bytes=0)
    # The power fails just before the first commit into the new spool's WAL: the
    # quarantine rename and the fresh spool are on the disk, the salvaged rows not.
    powercut.arm_cut_at_fsync("spool.db-wal")
    daemon = Daemon(env, ("drain", "--timeout", "60"))
    try:
        powercut.wait_cut(30)
        powercut.finish_cut(daemon.proc)
    finally:
        daemon.stop()
    powercut.mount()
    drain_to_empty(env, "after the cut")
    wait_quiet(recorder)
    check_salvage(corrupt, recorder, env, cutter)


@pytest.mark.timeout(60)
def test_a_cut_right_after_a_spool_is_created_leaves_it_openable(
    powercut: PowerCutMount,
) -> None:
    env = mqttspool_env(powercut.path / "spool.db", 1, spool__min_free_bytes=0)
    # _create() commits the schema in rollback-journal mode, then switches to WAL.
    # The 3rd journal fsync is the first of the WAL switch: the power fails just
    # before it, after the schema commit, with the journal's unlink not yet durable.
    powercut.arm_cut_at_fsync("spool.db-journal", 3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttspool", "enqueue", "-"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    proc.communicate(enqueue_input(range(1)))
    powercut.wait_cut(30)
    powercut.finish_cut(proc)
    powercut.mount()
    assert sorted(p.name for p in powercut.path.iterdir()) == ["spool.db", "spool.db-journal"]
    result = run_cli(["status", "--json"], env)  # the first start after the cut
    assert result.returncode == 0, result.stderr
    # The schema never committed durably: the creation was rolled back, the file is empty.
    assert json.loads(result.stdout)["epoch"] is None
    assert "rolled back the journal of an interrupted creation" in result.stderr
    assert not (powercut.path / "spool.db-journal").exists()
    result = run_cli(["enqueue", "-"], env, stdin=enqueue_input(range(5, 6)))
    assert result.returncode == 0, result.stderr
    assert status(env, "after the cut")["depth"] == 1
    assert table_seqs(powercut.path / "spool.db") == {1: 5.0}


# ------------------------------------------------- ids never reused at NORMAL


def ids_by_epoch(recorder: Recorder) -> dict[str, set[int]]:
    """epoch -> seqs delivered under it (edge-01)."""
    found: dict[str, set[int]] = defaultdict(set)
    for doc in recorder.data():
        if doc["device"] == DEVICE:
            found[str(doc["id"]).split(":")[1]].add(int(doc["seq"]))
    return found


def sensor_deliveries(recorder: Recorder) -> int:
    """Deliveries of simulated-sensor readings so far (resends included)."""
    return sum(1 for d in recorder.data() if d["sensor"] == "sim")


def run_until_delivered(env: dict[str, str], recorder: Recorder, more: int) -> Daemon:
    """Start ``run`` and return once ``more`` further sensor readings were delivered."""
    target = sensor_deliveries(recorder) + more
    daemon = Daemon(env)
    try:
        recorder.wait_for(lambda _: sensor_deliveries(recorder) >= target, 30)
    except BaseException:
        daemon.stop()
        raise
    return daemon


@pytest.mark.timeout(90)
def test_a_cut_at_normal_starts_a_new_epoch_so_no_id_is_reused(
    powercut: PowerCutMount, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    spool = powercut.path / "spool.db"
    old = backlog(spool, 200)  # durable before the cut (FULL), published after it
    env = mqttspool_env(
        spool,
        broker.port,
        spool__synchronous="normal",
        bridge__max_inflight=MAX_INFLIGHT,
        sensors=SIMULATED,
    )
    first_epoch = status(env, "before the cut")["epoch"]
    daemon = run_until_delivered(env, recorder, 60)  # published; at NORMAL not yet durable
    try:
        powercut.cut(daemon.proc)
    finally:
        daemon.stop()
    powercut.mount()
    wait_quiet(recorder)
    daemon = run_until_delivered(env, recorder, 60)
    daemon.terminate()
    assert daemon.wait(20) == 0
    second_epoch = status(env, "after the restart")["epoch"]
    assert second_epoch != first_epoch  # the unclean stop at NORMAL began a new epoch
    daemon = run_until_delivered(env, recorder, 10)  # after a clean stop: same epoch
    daemon.terminate()
    assert daemon.wait(20) == 0
    assert status(env, "after a clean restart")["epoch"] == second_epoch
    drain_to_empty(env, "final")
    wait_quiet(recorder)
    # A consumer deduping on id never drops a new reading: no id means two readings.
    assert_ids_never_reused(recorder, "NORMAL cut")
    epochs = ids_by_epoch(recorder)
    assert set(old) <= epochs[first_epoch]  # the old epoch's rows kept their ids...
    resent = {str(d["id"]).split(":")[1] for d in recorder.data() if d["sensor"] == "backlog"}
    assert resent == {first_epoch}  # ...also when resent after the new epoch began
    assert set(epochs) == {first_epoch, second_epoch}


@pytest.mark.parametrize(
    ("target", "nth"),
    [
        ("spool.db.salvage", 1),  # the intent: nothing moved yet
        ("spool.db.salvage-tmp", 1),  # the salvaged spool's schema
        ("spool.db.salvage-tmp-wal", 1),  # the salvaged rows' commit
    ],
)
@pytest.mark.timeout(60)
def test_a_cut_at_any_step_of_a_salvage_is_resumed_exactly(
    powercut: PowerCutMount,
    broker: MosquittoBroker,
    recorder_factory: RecorderFactory,
    target: str,
    nth: int,
) -> None:
    recorder = recorder_factory(broker)
    cutter = Cutter(powercut, f"salvage-at-{target}")
    corrupt = make_corrupt_spool(powercut, powercut.path / "s" / "spool.db", cutter.rng)
    env = mqttspool_env(corrupt.path, broker.port, spool__min_free_bytes=0)
    powercut.arm_cut_at_fsync(target, nth)
    daemon = Daemon(env, ("drain", "--timeout", "60"))
    try:
        powercut.wait_cut(30)
        powercut.finish_cut(daemon.proc)
    finally:
        daemon.stop()
    powercut.mount()
    # The cut hit the salvage: before its intent was durable nothing moved; after
    # it the corrupt spool is quarantined and no spool is in place yet.
    first_step = target == "spool.db.salvage"
    assert corrupt.path.exists() == first_step
    assert corrupt.path.with_name("spool.db.salvage").exists() != first_step
    drain_to_empty(env, f"after a cut at {target}")  # resumes (or redoes) the salvage
    wait_quiet(recorder)
    # Every salvageable reading delivered under the old epoch, the unreadable ones
    # counted once, the corrupt file kept byte for byte, nothing left half-done.
    check_salvage(corrupt, recorder, env, cutter)
    left = sorted(p.name for p in corrupt.path.parent.iterdir() if ".salvage" in p.name)
    assert left == ["spool.db.salvage-lock"]  # no intent, no tmp left
    assert_ids_never_reused(recorder, cutter.where)
