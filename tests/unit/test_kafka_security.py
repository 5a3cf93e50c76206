"""Kafka security settings: what reaches aiokafka, and which combinations are refused at start."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faststream.security import SASLScram512
from pydantic import ValidationError

from adaptmesh_embedded.security import (
    ADMIN,
    SERVICE_PRINCIPALS,
    USER,
    Operation,
    ResourceType,
    mesh_acls,
    prepare_credentials,
)
from adaptmesh_kit import MeshSettings, kafka_client_kwargs, kafka_security
from adaptmesh_schemas.topics import Stream, topic_name


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = MeshSettings(kafka_bootstrap_servers="10.0.0.1:9092")
    assert kafka_security(settings) is None
    assert kafka_client_kwargs(settings) == {"bootstrap_servers": "10.0.0.1:9092"}


def test_sasl_ssl_reaches_aiokafka_with_the_ca(tmp_path: Path) -> None:
    credentials = prepare_credentials(tmp_path / "secure")
    settings = MeshSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="user",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]  # pydantic makes a SecretStr
        kafka_ssl_cafile=credentials.ca_file,
    )
    assert isinstance(kafka_security(settings), SASLScram512)
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("user", "s3cret")
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert "s3cret" not in repr(settings)


def test_the_environment_configures_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    credentials = prepare_credentials(tmp_path / "secure")
    for key, value in credentials.client_environment(USER).items():
        monkeypatch.setenv(key, value)
    kwargs = kafka_client_kwargs(MeshSettings())
    assert kwargs["sasl_plain_username"] == USER
    assert kwargs["sasl_plain_password"] == credentials.passwords[USER]


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs MESH_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "needs MESH_KAFKA_SASL_USERNAME and MESH_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "sends no credentials"),
        ({"kafka_ssl_cafile": "/etc/hostname"}, "MESH_KAFKA_SSL_CAFILE is set but"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"},
            "MESH_KAFKA_SSL_CAFILE=/no/such/ca.pem is not a file",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/etc/hostname"},
            "MESH_KAFKA_SSL_KEYFILE needs MESH_KAFKA_SSL_CERTFILE",
        ),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
    ],
)
def test_inconsistent_settings_fail_at_start(settings: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        MeshSettings(**settings)  # type: ignore[arg-type]


def test_credentials_are_private_and_kept(tmp_path: Path) -> None:
    first = prepare_credentials(tmp_path / "secure")
    assert (tmp_path / "secure").stat().st_mode & 0o777 == 0o700
    for private in (first.directory / "credentials.json", first.broker_key_file):
        assert private.stat().st_mode & 0o777 == 0o600
    first.write_env_files("127.0.0.1:9093")
    assert first.env_file(USER).stat().st_mode & 0o777 == 0o600
    assert "MESH_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9093\n" in first.env_file(USER).read_text()
    # The broker was formatted with these passwords: a restart must find the same ones.
    assert prepare_credentials(tmp_path / "secure").passwords == first.passwords
    assert set(first.passwords) == {*SERVICE_PRINCIPALS, ADMIN, USER}
    assert len(set(first.passwords.values())) == len(first.passwords)


def _writers(stream: Stream, prefix: str = "p.") -> set[str]:
    return {
        acl.principal
        for acl in mesh_acls(prefix)
        if acl.resource is ResourceType.TOPIC
        and acl.name == topic_name(stream, prefix)
        and acl.operation is Operation.WRITE
    }


def test_only_the_gate_writes_models_ready_and_only_ingestion_datasets() -> None:
    assert _writers(Stream.MODELS_READY) == {"evaluation-gate"}
    assert _writers(Stream.DATASETS) == {"ingestion"}
    assert _writers(Stream.CHANGES) == {USER}
    assert _writers(Stream.FEEDBACK) == {USER}
    assert _writers(Stream.DEADLETTER) == set(SERVICE_PRINCIPALS)


def test_users_write_only_changes_and_feedback() -> None:
    written = {
        acl.name
        for acl in mesh_acls()
        if acl.principal == USER and acl.operation is Operation.WRITE
    }
    assert written == {topic_name(Stream.CHANGES), topic_name(Stream.FEEDBACK)}
    assert not any(
        acl.principal == USER
        and acl.resource is ResourceType.GROUP
        and acl.operation is Operation.READ
        for acl in mesh_acls()
    ), "a user that may join a service's consumer group could take its partitions"
