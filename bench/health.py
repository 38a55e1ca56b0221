"""``mqttspool health`` cost: what Docker's HEALTHCHECK pays every few seconds.

Runs ``python -m mqttspool health`` against a fresh heartbeat (the healthy
answer, the common case) and, in the same run, the raw baseline: the same
interpreter starting and doing nothing (``python -c pass``). Prints wall and
CPU time per call (median of N, and the best), their ratio to the baseline,
and which modules the healthy answer imports beyond the interpreter's own
(``-X importtime``), so an import that creeps in shows up by name. Goal:
< 150 ms wall under load on the development machine.

    python3 bench/health.py [--runs 30] [--config config/mqttspool.toml]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mqttspool.health import Heartbeat, heartbeat_path, write_heartbeat  # noqa: E402


def _timed(cmd: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def _imports(cmd: list[str], env: dict[str, str]) -> list[tuple[int, str]]:
    err = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd[1:]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit() and not name.startswith("  "):
                rows.append((int(cumulative), name.strip()))  # top-level imports only
    return rows


def main() -> None:
    """Print the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--config", default=None, help="also pass -c FILE (read by the fast path)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool.db"
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MQTTSPOOL_")}
        env["MQTTSPOOL_SPOOL__PATH"] = str(spool)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        health = [sys.executable, "-m", "mqttspool", *(["-c", args.config] * bool(args.config))]
        health.append("health")
        baseline = [sys.executable, "-c", "pass"]
        results = {}
        for name, cmd in (("python -c pass (baseline)", baseline), ("mqttspool health", health)):
            # A fresh heartbeat for every call: refreshed in a loop would cost the runs.
            wall_us = time.time_ns() // 1000 + 3_600_000_000
            beat = Heartbeat(state="running", pid=os.getpid(), wall_us=wall_us, threads={"b": True})
            write_heartbeat(heartbeat_path(spool), beat)
            results[name] = _timed(cmd, env, args.runs)
        base_names = {name for _, name in _imports(baseline, env)}
        ours = [(us, name) for us, name in _imports(health, env) if name not in base_names]
    print(f"load average {os.getloadavg()[0]:.2f}, {args.runs} runs each")
    base_wall = statistics.median(results["python -c pass (baseline)"][0])
    base_cpu = statistics.median(results["python -c pass (baseline)"][1])
    for name, (walls, cpus) in results.items():
        print(
            f"{name:28s} wall median {statistics.median(walls) * 1e3:6.1f} ms"
            f" (best {min(walls) * 1e3:5.1f}, x{statistics.median(walls) / base_wall:.2f}),"
            f" CPU median {statistics.median(cpus) * 1e3:6.1f} ms"
            f" (x{statistics.median(cpus) / base_cpu:.2f})"
        )
    print("imported by the healthy answer beyond the baseline (cumulative µs):")
    for micros, name in sorted(ours, reverse=True):
        print(f"  {micros:7d}  {name}")


if __name__ == "__main__":
    main()
