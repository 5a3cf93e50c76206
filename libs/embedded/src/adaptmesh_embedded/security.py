"""The embedded broker locked down: TLS, one SCRAM user per principal, and the mesh's ACLs.

`EmbeddedKafka(secure=True)` keeps what this module generates under `<data_dir>/secure/` (a
0700 directory): a CA and the broker's certificate for 127.0.0.1/localhost (PEM, made with
`cryptography`), a password per principal (`credentials.json`, 0600) and, per principal, a
`<name>.env` file (0600, rewritten at each start with the broker's address) with the
`MESH_KAFKA_*` settings a client needs. Passwords are drawn
at the first secure start and kept, because the SCRAM credentials are written into the
cluster's metadata when its storage is formatted (`StorageTool format --add-scram`); a later
start on the same directory must present the same ones.

Principals: one per service (its name), `admin` (the super user that creates the ACLs) and
`user` (people, apps and the CLI). What each may do is `mesh_acls`, derived from the
schemas' topic table: a service writes the topics it produces and the dead letters, reads
what it consumes; only the gate writes `mesh.models.ready.v1`, only ingestion writes
`mesh.datasets.v1`, and `user` writes only changes and feedback.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.admin import CreateAclsRequest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adaptmesh_schemas.topics import TOPIC_SPECS, Stream, topic_name

SERVICE_PRINCIPALS = ("ingestion", "drift-sensing", "training", "evaluation-gate", "serving")
ADMIN = "admin"
USER = "user"
PRINCIPALS = (*SERVICE_PRINCIPALS, ADMIN, USER)
SCRAM_MECHANISM = "SCRAM-SHA-512"
BROKER_SUBJECT = "CN=adaptmesh-broker"
"""The broker's certificate subject: its principal on the controller listener (mutual TLS)."""

# Reads the topic table does not list (it names a stream's main consumers): training and the
# gate follow the production models to warm-start from and compare against.
_EXTRA_READS: Mapping[str, frozenset[Stream]] = {
    "training": frozenset({Stream.MODELS_READY}),
    "evaluation-gate": frozenset({Stream.MODELS_READY}),
}
_USER_WRITES = frozenset({Stream.CHANGES, Stream.FEEDBACK})
_CERT_DAYS = 3650  # kept with the broker's data: a work directory must not expire under it


class ResourceType(IntEnum):
    """Kafka's `ResourceType` codes (CreateAcls wire values)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Operation(IntEnum):
    """Kafka's `AclOperation` codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


_ALLOW = 3  # AclPermissionType.ALLOW; nothing is denied explicitly: no ACL means no access


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One ALLOW rule: `principal` may `operation` on the resource, from any host."""

    principal: str
    resource: ResourceType
    name: str
    operation: Operation
    pattern: PatternType = PatternType.LITERAL


class SecuritySetupError(RuntimeError):
    """Certificates, credentials or ACLs could not be prepared."""


@dataclass(frozen=True, slots=True)
class KafkaCredentials:
    """Where the secure broker's CA and the principals' passwords are."""

    directory: Path
    passwords: Mapping[str, str]

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def broker_certificate_file(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def broker_key_file(self) -> Path:
        return self.directory / "broker-key.pem"

    def env_file(self, principal: str) -> Path:
        return self.directory / f"{principal}.env"

    def client_environment(self, principal: str) -> dict[str, str]:
        """The `MESH_KAFKA_*` settings (without the bootstrap address) of `principal`."""
        return {
            "MESH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "MESH_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "MESH_KAFKA_SASL_USERNAME": principal,
            "MESH_KAFKA_SASL_PASSWORD": self.passwords[principal],
            "MESH_KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    def write_env_files(self, bootstrap_servers: str) -> None:
        """`<principal>.env` (0600) per principal: `set -a; . user.env; set +a` configures a
        shell's clients (the CLI included) to connect as that principal."""
        for principal in PRINCIPALS:
            settings = {"MESH_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
            settings |= self.client_environment(principal)
            lines = [f"{key}={value}" for key, value in settings.items()]
            _write_private(self.env_file(principal), "\n".join(lines) + "\n")

    def client_kwargs(self, principal: str, bootstrap_servers: str) -> dict[str, Any]:
        """aiokafka keyword arguments of `principal` (for the broker's own admin work)."""
        return {
            "bootstrap_servers": bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "ssl_context": create_ssl_context(cafile=self.ca_file),
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": principal,
            "sasl_plain_password": self.passwords[principal],
        }

    def scram_arguments(self) -> list[str]:
        """`StorageTool format` arguments creating every principal's SCRAM credential."""
        arguments: list[str] = []
        for principal, password in sorted(self.passwords.items()):
            arguments += [
                "--add-scram",
                f"{SCRAM_MECHANISM}=[name={principal},password={password}]",
            ]
        return arguments

    def broker_properties(self, broker: str, controller: str) -> dict[str, str]:
        """Listeners, TLS, SASL and the authorizer of a single combined KRaft node.

        Clients and the broker's own inter-broker traffic use SASL_SSL with SCRAM-SHA-512.
        The controller listener is SSL with client certificates required: SCRAM cannot
        authenticate there (its credentials live in the metadata the controller serves), and
        plain text would make anyone on the machine an anonymous caller of the controller;
        the broker presents its own certificate and is a super user by that subject.
        """
        listener_jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{self.passwords[ADMIN]}";'
        )
        return {
            "listeners": f"SASL_SSL://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"SASL_SSL://{broker}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": listener_jaas,
            # Inline PEM: a PEM key *file* would need ssl.key.password (Kafka refuses an
            # unencrypted key file), inline keys do not; server.properties is kept 0600.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": self.broker_certificate_file.read_text(),
            "ssl.keystore.key": self.broker_key_file.read_text(),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": self.ca_file.read_text(),
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN};User:{BROKER_SUBJECT}",
            "allow.everyone.if.no.acl.found": "false",
        }


def prepare_credentials(directory: Path) -> KafkaCredentials:
    """The kept credentials under `directory`, made on first use (certificates, passwords)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    passwords_file = directory / "credentials.json"
    if passwords_file.is_file():
        passwords: dict[str, str] = json.loads(passwords_file.read_text())
        missing = set(PRINCIPALS) - passwords.keys()
        if missing:
            raise SecuritySetupError(
                f"{passwords_file} lacks {', '.join(sorted(missing))}; the broker was formatted "
                "without them: start on a fresh work directory"
            )
    else:
        passwords = {principal: secrets.token_urlsafe(24) for principal in PRINCIPALS}
        _write_private(passwords_file, json.dumps(passwords, indent=2) + "\n")
    credentials = KafkaCredentials(directory, passwords)
    if not (credentials.ca_file.is_file() and credentials.broker_key_file.is_file()):
        _write_certificates(credentials)
    return credentials


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (also when it existed before)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def _write_certificates(credentials: KafkaCredentials) -> None:
    now = datetime.datetime.now(datetime.UTC)
    valid_from, valid_to = now - datetime.timedelta(hours=1), now + datetime.timedelta(_CERT_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "adaptmesh embedded CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string(BROKER_SUBJECT))
        .issuer_name(ca_name)
        .public_key(broker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Clients check the host name they dialled: the broker is only ever reached on
        # loopback, by address or by name.
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        # serverAuth for its listeners, clientAuth for its calls to the controller listener.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    credentials.ca_file.write_bytes(ca.public_bytes(pem))
    credentials.broker_certificate_file.write_bytes(broker.public_bytes(pem))
    # PKCS#8, unencrypted: the only key form Kafka's PEM key store reads without a password.
    _write_private(
        credentials.broker_key_file,
        broker_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


def mesh_acls(topic_prefix: str = "") -> list[Acl]:
    """Every ALLOW rule of the mesh whose topics carry `topic_prefix`."""

    def topic(stream: Stream) -> str:
        return topic_name(stream, topic_prefix)

    acls: set[Acl] = set()
    for principal in (*SERVICE_PRINCIPALS, USER):
        # Provisioning: any principal may see every mesh topic and create a missing one with
        # the contract's configs (as `provision_topics` does at start); creating is not writing.
        for stream in Stream:
            acls.add(Acl(principal, ResourceType.TOPIC, topic(stream), Operation.DESCRIBE))
            acls.add(Acl(principal, ResourceType.TOPIC, topic(stream), Operation.CREATE))
    for service in SERVICE_PRINCIPALS:
        group = f"adaptmesh.{service}"
        writes = {s for s, spec in TOPIC_SPECS.items() if spec.producer == service}
        reads = {s for s, spec in TOPIC_SPECS.items() if service in spec.consumers}
        for stream in writes | {Stream.DEADLETTER}:
            acls.add(Acl(service, ResourceType.TOPIC, topic(stream), Operation.WRITE))
        for stream in reads | _EXTRA_READS.get(service, frozenset()):
            acls.add(Acl(service, ResourceType.TOPIC, topic(stream), Operation.READ))
        acls.add(Acl(service, ResourceType.GROUP, group, Operation.READ))
        # Exactly-once streams: one transactional id per input partition, named after the
        # group (`<group>.<topic>.<partition>`), so a service can fence only its own.
        for operation in (Operation.WRITE, Operation.DESCRIBE):
            acls.add(
                Acl(
                    service,
                    ResourceType.TRANSACTIONAL_ID,
                    f"{group}.",
                    operation,
                    PatternType.PREFIXED,
                )
            )
        acls.add(Acl(service, ResourceType.CLUSTER, "kafka-cluster", Operation.IDEMPOTENT_WRITE))
    for stream in Stream:
        # The operator's CLI reads every stream (status, lineage, audit, watch).
        acls.add(Acl(USER, ResourceType.TOPIC, topic(stream), Operation.READ))
    for stream in _USER_WRITES:
        acls.add(Acl(USER, ResourceType.TOPIC, topic(stream), Operation.WRITE))
    # Consumer lag per service group (`adaptmesh status`); DESCRIBE does not let it join one.
    acls.add(Acl(USER, ResourceType.GROUP, "adaptmesh.", Operation.DESCRIBE, PatternType.PREFIXED))
    return sorted(acls)


class _CreateAclsBatch(CreateAclsRequest):  # type: ignore[misc]  # aiokafka is untyped
    """CreateAcls carrying many rules: aiokafka's builder puts one in each request, and the
    broker handles a connection's requests one by one (200 rules took 6.5 s)."""

    def __init__(self, acls: Sequence[Acl]) -> None:
        self._acls = list(acls)

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION < 1:  # v0 has no pattern type (Kafka < 2.0)
            raise SecuritySetupError("the broker is too old for prefixed ACLs")
        return request_struct_class(
            [
                (
                    int(acl.resource),
                    acl.name,
                    int(acl.pattern),
                    f"User:{acl.principal}",
                    "*",
                    int(acl.operation),
                    _ALLOW,
                )
                for acl in self._acls
            ]
        )


async def create_acls(client_kwargs: Mapping[str, Any], acls: Sequence[Acl]) -> None:
    """Create `acls` (existing ones are left as they are) as the principal of `client_kwargs`.

    aiokafka's admin client has no ACL calls, so this sends Kafka's CreateAcls request through
    aiokafka's own client and protocol classes.
    """
    client = AIOKafkaClient(**client_kwargs)
    await client.bootstrap()
    try:
        response = await client.send(client.get_random_node(), _CreateAclsBatch(acls))
    finally:
        await client.close()
    failures = [
        f"{acl}: error {code} {message}"
        for acl, (code, message) in zip(acls, response.creation_responses, strict=True)
        if code
    ]
    if failures:
        raise SecuritySetupError("could not create ACLs: " + "; ".join(failures))


def create_acls_blocking(client_kwargs: Mapping[str, Any], acls: Sequence[Acl]) -> None:
    """`create_acls` from synchronous code, also inside a running event loop (own thread)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(create_acls(client_kwargs, acls))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)

    worker = threading.Thread(target=run, name="kafka-acls")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
