"""`adaptmesh watch rollout`: has every serving replica taken each domain's production model?

The production model per domain comes from `mesh.models.ready.v1` (the highest promotion
number); what each replica actually serves from `mesh.rollout.v1`: `model.loaded`,
`model.load_failed`, and `serving.replica_status`, which every replica publishes at start and
periodically (a replica silent for three of its intervals counts as gone). A domain's rollout
is complete when every live replica serves its production model.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from adaptmesh_cli.logs import history_reader
from adaptmesh_kit import MeshSettings
from adaptmesh_schemas import DecodeError, MeshEvent, Stream, decode_event, read_envelope
from adaptmesh_schemas.events import ModelLoaded, ModelLoadFailed, ModelReady, ReplicaStatus
from adaptmesh_schemas.topics import topic_name

SILENT_INTERVALS = 3

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class _Seen:
    """A replica's last word about one domain: the version it serves, or a failure."""

    version: str | None
    failure: str | None
    at: datetime


class RolloutView:
    """What should serve each domain, and what each replica serves."""

    def __init__(self) -> None:
        self.targets: dict[str, ModelReady] = {}
        self._status: dict[str, tuple[ReplicaStatus, datetime]] = {}
        self._seen: dict[tuple[str, str], _Seen] = {}

    def apply(self, event: MeshEvent, at: datetime) -> None:
        """Take one event of `mesh.models.ready.v1` or `mesh.rollout.v1`, seen at `at`."""
        if isinstance(event, ModelReady):
            known = self.targets.get(event.domain)
            if known is None or (event.promotion or 0) >= (known.promotion or 0):
                self.targets[event.domain] = event
        elif isinstance(event, ReplicaStatus):
            self._status[event.replica_id] = (event, at)
            for domain, version in event.serving.items():
                self._remember(event.replica_id, domain, _Seen(version, None, at))
        elif isinstance(event, ModelLoaded):
            self._remember(event.replica_id, event.domain, _Seen(event.model_version, None, at))
        elif isinstance(event, ModelLoadFailed):
            self._remember(
                event.replica_id,
                event.domain,
                _Seen(event.still_serving, f"{event.model_version}: {event.reason}", at),
            )

    def _remember(self, replica: str, domain: str, seen: _Seen) -> None:
        known = self._seen.get((replica, domain))
        if known is None or seen.at >= known.at:
            self._seen[(replica, domain)] = seen

    def live_replicas(self, now: datetime) -> list[str]:
        """Replicas that said they are alive within three of their intervals."""
        return sorted(
            replica
            for replica, (status, at) in self._status.items()
            if now - at <= timedelta(seconds=SILENT_INTERVALS * status.interval_seconds)
        )

    def complete(self, domain: str, now: datetime) -> bool:
        target = self.targets.get(domain)
        replicas = self.live_replicas(now)
        return (
            target is not None
            and bool(replicas)
            and all(self._serves(r, domain) == target.model_version for r in replicas)
        )

    def _serves(self, replica: str, domain: str) -> str | None:
        seen = self._seen.get((replica, domain))
        return seen.version if seen else None

    def line(self, domain: str, now: datetime) -> str:
        """One line: the production model and how many live replicas serve it."""
        target = self.targets[domain]
        replicas = self.live_replicas(now)
        on_target = [r for r in replicas if self._serves(r, domain) == target.model_version]
        promotion = f" (promotion {target.promotion})" if target.promotion else ""
        head = f"{domain}  {target.model_version}{promotion}: {len(on_target)}/{len(replicas)} "
        if not replicas:
            return head + "replicas (none alive on the rollout topic)"
        if len(on_target) == len(replicas):
            return head + "replicas serve it — rollout complete"
        behind = []
        for replica in replicas:
            if replica in on_target:
                continue
            seen = self._seen.get((replica, domain))
            if seen is not None and seen.failure is not None:
                behind.append(f"{replica} failed ({seen.failure}), serves {seen.version}")
            else:
                behind.append(f"{replica} serves {seen.version if seen else 'nothing'}")
        return head + "replicas serve it; " + "; ".join(behind)

    def lines(self, now: datetime) -> list[str]:
        return [self.line(domain, now) for domain in sorted(self.targets)]


async def watch_rollout(settings: MeshSettings, *, say: Say = print) -> None:
    """Print each domain's rollout line whenever it changes, until interrupted."""
    topics = [
        topic_name(stream, settings.topic_prefix)
        for stream in (
            Stream.MODELS_READY,
            Stream.ROLLOUT,
        )
    ]
    consumer = history_reader(settings, *topics)
    await consumer.start()
    view = RolloutView()
    shown: dict[str, str] = {}
    say(f"watching the rollout of {', '.join(topics)} (Ctrl-C to stop)")
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    try:
                        event = decode_event(read_envelope(record.headers), record.value)
                    except DecodeError:
                        continue
                    at = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
                    view.apply(event, at)
            now = datetime.now(UTC)
            for domain in sorted(view.targets):
                text = view.line(domain, now)
                if shown.get(domain) != text:
                    shown[domain] = text
                    say(f"{now:%H:%M:%S}  {text}")
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
