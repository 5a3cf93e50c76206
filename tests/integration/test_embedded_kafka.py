"""The embedded broker is a real Kafka, starts and stops cleanly, and never outlives Python."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from adaptmesh_embedded import EmbeddedKafka, ensure_kafka_jars

pytestmark = pytest.mark.kafka

FIVE_MB = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def kafka_jars() -> Path:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH")
    return ensure_kafka_jars()


async def _produce(bootstrap: str, topic: str, value: bytes, **producer_options: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def _consume_one(bootstrap: str, topic: str, group: str) -> tuple[bytes | None, bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert record.value is not None
    return record.key, record.value


def _process_gone(pid: int) -> bool:
    """True when the PID no longer runs; a zombie awaiting its reaper counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The way any server binds; TIME_WAIT leftovers from Kafka's own connections are fine.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_one_record_round_trips(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"t-{unique_name}.embedded.roundtrip"

    await _produce(kafka_bootstrap, topic, b"hello mesh")
    key, value = await _consume_one(kafka_bootstrap, topic, f"g-{unique_name}")

    assert (key, value) == (b"k", b"hello mesh")


async def test_five_megabyte_record_round_trips(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"t-{unique_name}.embedded.large"
    body = os.urandom(FIVE_MB)  # incompressible, so the full size crosses the wire

    await _produce(kafka_bootstrap, topic, body, max_request_size=FIVE_MB + 1024 * 1024)
    _, value = await _consume_one(kafka_bootstrap, topic, f"g-{unique_name}")

    assert len(value) == FIVE_MB
    assert value == body


def test_stop_leaves_no_jvm_and_frees_ports(kafka_jars: Path, tmp_path: Path) -> None:
    kafka = EmbeddedKafka(kafka_jars, tmp_path / "kafka", heap="256m")
    with kafka:
        pid, ports = kafka.pid, (kafka.port, kafka.controller_port)
        assert pid is not None
        assert None not in ports
        assert not _process_gone(pid)
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=5):
            pass

    assert not kafka.is_running
    assert not Path(f"/proc/{pid}").exists()  # stopped *and* reaped, not a zombie
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in the JVM's process group either
    assert all(_port_is_free(port) for port in ports if port is not None)


def test_jvm_dies_when_python_is_killed(kafka_jars: Path, tmp_path: Path) -> None:
    """SIGKILL skips atexit and every finally; only the kernel can take the JVM down."""
    script = textwrap.dedent(
        """
        import sys, threading, time
        from pathlib import Path
        from adaptmesh_embedded import EmbeddedKafka
        kafka = EmbeddedKafka(Path(sys.argv[1]), Path(sys.argv[2]), heap="256m")
        # Started from a short-lived thread: the broker must outlive that thread.
        starter = threading.Thread(target=kafka.start)
        starter.start()
        starter.join()
        print(kafka.pid, flush=True)
        time.sleep(300)
        """
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", script, str(kafka_jars), str(tmp_path / "kafka")],
        stdout=subprocess.PIPE,
        text=True,
    )
    jvm_pid = 0
    try:
        assert launcher.stdout is not None
        jvm_pid = int(launcher.stdout.readline())
        time.sleep(1)
        assert not _process_gone(jvm_pid), "the JVM died with its starter thread"

        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)

        deadline = time.monotonic() + 10
        while not _process_gone(jvm_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _process_gone(jvm_pid)
    finally:
        launcher.kill()
        launcher.wait()
        if jvm_pid and not _process_gone(jvm_pid):  # do not leak it even when failing
            os.killpg(jvm_pid, signal.SIGKILL)
