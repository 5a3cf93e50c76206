"""adaptmesh runtime kit: what every service is built from."""

from adaptmesh_kit._internal.provisioning import provision_topics
from adaptmesh_kit.app import Delivery, EventContext, MeshApp, RejectedEvent, create_app
from adaptmesh_kit.artifacts import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactPathError,
    ArtifactStore,
    ResidencyError,
)
from adaptmesh_kit.kafka_security import kafka_client_kwargs, kafka_security
from adaptmesh_kit.settings import MeshSettings
from adaptmesh_kit.telemetry import tracer_provider_from_env

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactPathError",
    "ArtifactStore",
    "Delivery",
    "EventContext",
    "MeshApp",
    "MeshSettings",
    "RejectedEvent",
    "ResidencyError",
    "create_app",
    "kafka_client_kwargs",
    "kafka_security",
    "provision_topics",
    "tracer_provider_from_env",
]
