"""Fixtures of the end-to-end tests. Each test module brings its own `mesh` fixture (its
topics, environment and collector); `user` publishes to whichever mesh the test uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adaptmesh_embedded import EmbeddedMesh
from tests.e2e.outside import OutsideUser


@pytest.fixture
async def user(mesh: EmbeddedMesh) -> AsyncIterator[OutsideUser]:
    outside = OutsideUser(mesh.bootstrap_servers, mesh.topic_prefix)
    await outside.producer.start()
    yield outside
    await outside.producer.stop()
