"""Test infrastructure for integration and fault tests against a real mosquitto.

* `broker.MosquittoBroker` — a mosquitto process configured from `mosquitto/`.
* `proxy.TcpProxy` — a TCP proxy that can cut, blackhole, refuse or delay traffic.
* `recorder.Recorder` — a persistent-session subscriber that records what arrives.
* `certs.generate_certs` — a throw-away test PKI made with `openssl`.

The pytest fixtures wrapping these live in `tests/conftest.py`.
"""
