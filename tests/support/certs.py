"""Throw-away X.509 material for the TLS broker tests, made with the `openssl` CLI.

`generate_certs(directory)` writes, once per directory:

* a test CA (`ca.crt`, `ca.key`),
* a server certificate for `localhost` / `127.0.0.1` (subjectAltName) signed by it,
* a client certificate (CN `edge-01`) signed by it, for mutual TLS,
* a second, unrelated CA (`other-ca.crt`) and a client certificate signed by
  that CA, for the "wrong CA" tests.

Keys are EC P-256 so generation takes milliseconds. The extensions (basic
constraints, key usage, SKI/AKI) are written explicitly so strict verifiers
(Python's VERIFY_X509_STRICT, OpenSSL 3) accept the chain.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertBundle", "OpensslMissingError", "find_openssl", "generate_certs"]

_DAYS = "3650"

_CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

_CLIENT_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

# A minimal config so `openssl req` does not depend on the system openssl.cnf.
_REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
"""


class OpensslMissingError(RuntimeError):
    """The `openssl` command-line tool is not installed."""


@dataclass(frozen=True)
class CertBundle:
    """Paths of the generated PEM files (all in one directory)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_ca_key: Path
    other_client_cert: Path
    other_client_key: Path


def find_openssl() -> str:
    """Return the path of the `openssl` binary or raise `OpensslMissingError`."""
    path = shutil.which("openssl")
    if path is None:
        raise OpensslMissingError("the `openssl` command is not installed")
    return path


def generate_certs(directory: Path) -> CertBundle:
    """Create (or reuse, if already complete) the test PKI in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    bundle = _bundle_paths(directory)
    if all(path.exists() for path in _files(bundle)):
        return bundle
    openssl = find_openssl()
    req_config = directory / "req.cnf"
    req_config.write_text(_REQ_CONFIG)
    _make_ca(openssl, req_config, bundle.ca_cert, bundle.ca_key, "mqttspool test CA")
    _make_ca(openssl, req_config, bundle.other_ca_cert, bundle.other_ca_key, "unrelated test CA")
    _make_leaf(
        openssl,
        req_config,
        "localhost",
        _SERVER_EXTENSIONS,
        (bundle.ca_cert, bundle.ca_key),
        (bundle.server_cert, bundle.server_key),
    )
    _make_leaf(
        openssl,
        req_config,
        "edge-01",
        _CLIENT_EXTENSIONS,
        (bundle.ca_cert, bundle.ca_key),
        (bundle.client_cert, bundle.client_key),
    )
    _make_leaf(
        openssl,
        req_config,
        "edge-01",
        _CLIENT_EXTENSIONS,
        (bundle.other_ca_cert, bundle.other_ca_key),
        (bundle.other_client_cert, bundle.other_client_key),
    )
    return bundle


def _bundle_paths(directory: Path) -> CertBundle:
    return CertBundle(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca_cert=directory / "other-ca.crt",
        other_ca_key=directory / "other-ca.key",
        other_client_cert=directory / "other-client.crt",
        other_client_key=directory / "other-client.key",
    )


def _files(bundle: CertBundle) -> list[Path]:
    return [
        bundle.ca_cert,
        bundle.ca_key,
        bundle.server_cert,
        bundle.server_key,
        bundle.client_cert,
        bundle.client_key,
        bundle.other_ca_cert,
        bundle.other_ca_key,
        bundle.other_client_cert,
        bundle.other_client_key,
    ]


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")


def _make_ca(openssl: str, req_config: Path, cert: Path, key: Path, name: str) -> None:
    extensions = cert.with_suffix(".ext")
    extensions.write_text(_CA_EXTENSIONS)
    _new_key(openssl, key)
    csr = cert.with_suffix(".csr")
    _run(
        [
            openssl,
            "req",
            "-new",
            "-config",
            str(req_config),
            "-key",
            str(key),
            "-subj",
            f"/CN={name}",
            "-out",
            str(csr),
        ]
    )
    _run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-signkey",
            str(key),
            "-days",
            _DAYS,
            "-extfile",
            str(extensions),
            "-out",
            str(cert),
        ]
    )


def _make_leaf(
    openssl: str,
    req_config: Path,
    common_name: str,
    extensions_text: str,
    issuer: tuple[Path, Path],
    leaf: tuple[Path, Path],
) -> None:
    issuer_cert, issuer_key = issuer
    cert, key = leaf
    extensions = cert.with_suffix(".ext")
    extensions.write_text(extensions_text)
    _new_key(openssl, key)
    csr = cert.with_suffix(".csr")
    _run(
        [
            openssl,
            "req",
            "-new",
            "-config",
            str(req_config),
            "-key",
            str(key),
            "-subj",
            f"/CN={common_name}",
            "-out",
            str(csr),
        ]
    )
    _run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(issuer_cert),
            "-CAkey",
            str(issuer_key),
            "-set_serial",
            _serial(),
            "-days",
            _DAYS,
            "-extfile",
            str(extensions),
            "-out",
            str(cert),
        ]
    )


def _new_key(openssl: str, key: Path) -> None:
    _run(
        [
            openssl,
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(key),
        ]
    )


def _serial() -> str:
    # Certificates from one issuer must have distinct serial numbers.
    return str(secrets.randbits(63))
