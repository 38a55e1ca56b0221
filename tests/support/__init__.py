"""Test infrastructure for integration and fault tests against a real mosquitto.

* `broker.MosquittoBroker` — a mosquitto process configured from `mosquitto/`.
* `proxy.TcpProxy` — a TCP proxy that can cut, blackhole, refuse or delay traffic.
* `recorder.Recorder` — a persistent-session subscriber that records what arrives.
* `certs.generate_certs` — a throw-away test PKI made with `openssl`.
* `postgres.PostgresServer` — a PostgreSQL server on an ephemeral port.
* `strict_broker.StrictBroker` — a raw-socket MQTT 5 server that enforces Receive Maximum.
* `daemon` — `mqttspool` commands as subprocesses (`Daemon`, `run_cli`, `mqttspool_env`).
* `powercut` — a FUSE filesystem that forgets everything not fsync'd, and its fixture.
* `servers` — only a test marked `integration` may start one of the servers above.
* `ci` — `unavailable()`: a missing tool skips a test, and fails it when CI=true.
* `spooltools`, `tmpfs`, `crash_writer.py` (run by path by the kill -9 test).

The pytest fixtures wrapping these live in `tests/conftest.py`.
"""
