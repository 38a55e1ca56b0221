"""Service supervision: runtime spool corruption is quarantined and salvaged, sampling goes on."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from support.daemon import wait_until
from support.spooltools import all_seqs

from mqttspool.config import load_config
from mqttspool.errors import SpoolCorruptError
from mqttspool.sensor_config import SimulatedConfig
from mqttspool.service import Service
from mqttspool.spool import Spool, open_spool


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_corruption_reported_at_runtime_is_salvaged_and_sampling_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(None, environ={})
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host, cfg.broker.port = "127.0.0.1", unused_port()  # no broker: spool only
    cfg.sensors = [SimulatedConfig(name="sim", interval=0.05)]
    real_append = Spool.append
    calls = {"n": 0}

    def flaky_append(self: Spool, readings: Any, clock_stamped: Any = False) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise SpoolCorruptError(
                self.path, "SQLite reports corruption: database disk image is malformed"
            )
        return real_append(self, readings, clock_stamped)

    monkeypatch.setattr(Spool, "append", flaky_append)
    service = Service(cfg)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    runner.start()
    try:
        wait_until(lambda: service.recoveries == 1, 20, "the recovery")
        wait_until(lambda: calls["n"] >= 10, 20, "sampling to go on after the recovery")
    finally:
        service.request_stop()
        runner.join(30)
    assert codes == [0]
    aside = [
        p for p in tmp_path.glob("spool.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(aside) == 1  # kept (with its WAL), never deleted
    old = open_spool(cfg.spool.model_copy(update={"path": str(aside[0])}))
    new = open_spool(cfg.spool)
    try:
        old_seqs = all_seqs(old)
        assert old_seqs  # rows from before the error...
        assert all_seqs(new)[: len(old_seqs)] == old_seqs  # ...salvaged with their seqs
        assert new.epoch == old.epoch
        assert len(all_seqs(new)) > len(old_seqs)  # and sampling continued afterwards
    finally:
        old.close()
        new.close()
