"""The one place a paho client is built (protocol, session, credentials, TLS, will)
and the one client-id rule; the publisher and both subscribers use it."""

from __future__ import annotations

import logging
import ssl

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from mqttspool.config import BrokerConfig
from mqttspool.errors import ConfigError
from mqttspool.mqtt.events import Will
from mqttspool.mqtt.fastack import Client

logger = logging.getLogger(__name__)


def check_tls_files(config: BrokerConfig) -> None:
    """Raise :class:`ConfigError` naming ``broker.tls.<key>`` if a TLS file cannot be read."""
    tls = config.tls
    if not tls.enabled:
        return
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"broker.tls.{key}", [(f"broker.tls.{key}", f"cannot read {path}: {exc}")]
                ) from exc


def _tls_context(config: BrokerConfig) -> ssl.SSLContext:
    tls = config.tls
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file or None)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.insecure:
        logger.warning(
            "broker %s: TLS hostname verification is OFF (broker.tls.insecure = true);"
            " anyone holding a certificate from this CA can impersonate the broker",
            config.address(),
        )
        ctx.check_hostname = False
    return ctx


def client_id_for(configured: str, *parts: str) -> str:
    """The configured client id, or ``mqttspool-<parts...>`` (``mqttspool-edge-01``,
    ``mqttspool-ingest-<group>-<host>``): the one naming rule of every client."""
    return configured or "-".join(("mqttspool", *parts))


def new_client(
    config: BrokerConfig,
    client_id: str,
    *,
    password: SecretStr | None,
    persistent: bool = False,
    manual_ack: bool = False,
    will: Will | None = None,
    force_v5: bool = False,
    reconnect_on_failure: bool = True,
) -> Client:
    """The one place a paho client is built: protocol, session, credentials, TLS, will.

    ``persistent``: the session outlives the connection (MQTT 3.1.1 clean
    session off; v5 sessions are set per connect). ``password`` is resolved
    once by the caller (``broker.password_file`` is read at start, not per
    connection). TLS files are checked here, so a missing one is a
    :class:`ConfigError` naming the setting.
    """
    v5 = force_v5 or config.protocol == "5"
    client = Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
        reconnect_on_failure=reconnect_on_failure,
    )
    if config.username:
        client.username_pw_set(config.username, password.get_secret_value() if password else None)
    if config.tls.enabled:
        check_tls_files(config)
        client.tls_set_context(_tls_context(config))
        if config.tls.insecure:
            client.tls_insecure_set(True)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=True)
    return client
