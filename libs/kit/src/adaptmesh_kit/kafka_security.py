"""How every Kafka client of the mesh connects: TLS and SASL from `MeshSettings`.

FastStream's `KafkaBroker` takes a `faststream.security` object and turns it into aiokafka's
keyword arguments (`faststream.kafka.security.parse_security`). The clients the kit and the
CLI make themselves (transactional producers, admin clients, topic-end readers, watchers) get
the same arguments from the same object, so one setting can never reach some clients and miss
others:

    KafkaBroker(settings.kafka_bootstrap_servers, security=kafka_security(settings))
    AIOKafkaConsumer(topic, **kafka_client_kwargs(settings), group_id=None)
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from adaptmesh_kit.settings import MeshSettings

__all__ = ["kafka_client_kwargs", "kafka_security"]

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def kafka_security(settings: MeshSettings) -> BaseSecurity | None:
    """FastStream's security object for `settings`; None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    # MeshSettings has checked that SASL comes with a user name and password.
    assert settings.kafka_sasl_username is not None
    assert settings.kafka_sasl_password is not None
    return _SASL[settings.kafka_sasl_mechanism](
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=context is not None,
    )


def kafka_client_kwargs(settings: MeshSettings) -> dict[str, Any]:
    """`bootstrap_servers` and the security arguments of an aiokafka client for `settings`."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **parse_security(kafka_security(settings)),
    }


def _ssl_context(settings: MeshSettings) -> ssl.SSLContext:
    # aiokafka's helper verifies the broker's certificate and host name (no option to turn
    # that off, which is the point); with no CA file the system's trust store is used.
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )
    return context
