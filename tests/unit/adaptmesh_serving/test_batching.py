"""Dynamic batching: batches up to the size, the wait bound, overload, deadlines, order,
failures confined to their batch, model calls off the loop, and the API answering meanwhile."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from adaptmesh_serving.api import ServingRuntime, create_api
from adaptmesh_serving.batching import (
    Batching,
    BatchLimits,
    DeadlineExceeded,
    ModelCallError,
    Overloaded,
    ShuttingDown,
)
from adaptmesh_serving.predictions import PredictionService, predict_rows
from adaptmesh_serving.registry import ModelRegistry
from tests.unit.adaptmesh_serving.fakes import DOMAIN, FakeClassifier, model_ready, origin

PREDICT = f"/v1/domains/{DOMAIN}/predict"


class Model:
    """An executor over rows `(model name, text)`: answers `name:text`, records its calls and
    threads; `gate` holds each call until set, a text equal to `fail_on` fails the call."""

    def __init__(self, gate: threading.Event | None = None, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()
        self._gate = gate
        self._fail_on = fail_on

    def __call__(self, rows: list[tuple[str, str]]) -> list[str]:
        texts = [text for _, text in rows]
        self.calls.append(texts)
        self.threads.add(threading.get_ident())
        if self._gate is not None:
            self._gate.wait(10)
        if self._fail_on in texts:
            raise RuntimeError("the model fell over")
        return [f"{model}:{text}" for model, text in rows]


@asynccontextmanager
async def batching(model: Model, **limits: float) -> AsyncIterator[Batching[str, str, str]]:
    values: dict[str, float] = {"max_wait_seconds": 0.0, **limits}
    made: Batching[str, str, str] = Batching(
        model,
        BatchLimits(**values),  # type: ignore[arg-type]
        key_of=lambda name: name,
    )
    try:
        yield made
    finally:
        await made.close()


@contextmanager
def opened(gate: threading.Event) -> Iterator[threading.Event]:
    """`gate`, set on the way out whatever happens (no model thread left waiting)."""
    try:
        yield gate
    finally:
        gate.set()


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.005)


async def ask(made: Batching[str, str, str], model: str, *texts: str) -> list[str]:
    return await made.submit(model, texts).result()


async def test_concurrent_requests_form_batches_up_to_the_size() -> None:
    with opened(threading.Event()) as gate:
        model = Model(gate)
        async with batching(model, max_batch_size=4) as made:
            first = asyncio.create_task(ask(made, "v1", "t0"))
            await until(lambda: len(model.calls) == 1)  # the model is busy with t0
            rest = [asyncio.create_task(ask(made, "v1", f"t{i}")) for i in range(1, 10)]
            await until(lambda: made.batcher("v1").queued == 9)  # type: ignore[union-attr]
            gate.set()
            answers = await asyncio.gather(first, *rest)
    # While the model worked, the 9 requests queued up; they went in batches of at most 4.
    assert model.calls == [["t0"], ["t1", "t2", "t3", "t4"], ["t5", "t6", "t7", "t8"], ["t9"]]
    assert answers == [[f"v1:t{i}"] for i in range(10)]


async def test_a_full_batch_does_not_wait_and_a_lone_text_waits_at_most_max_wait() -> None:
    model = Model()
    # A wait bound far longer than the test: a full batch must go at once.
    async with batching(model, max_batch_size=3, max_wait_seconds=30.0) as made:
        started = time.monotonic()
        answers = await asyncio.gather(
            ask(made, "v1", "a"), ask(made, "v1", "b"), ask(made, "v1", "c")
        )
        assert time.monotonic() - started < 5
    assert list(answers) == [["v1:a"], ["v1:b"], ["v1:c"]]
    assert model.calls == [["a", "b", "c"]]

    lone = Model()
    async with batching(lone, max_batch_size=8, max_wait_seconds=0.05) as made:
        started = time.monotonic()
        assert await ask(made, "v1", "alone") == ["v1:alone"]
        waited = time.monotonic() - started
    assert 0.04 <= waited < 2, "a lone text waits for company, but only about max_wait"


async def test_a_request_of_many_texts_is_answered_in_order_across_batches() -> None:
    model = Model()
    async with batching(model, max_batch_size=2) as made:
        texts = [f"t{i}" for i in range(5)]
        answers, other = await asyncio.gather(ask(made, "v1", *texts), ask(made, "v1", "x"))
    assert answers == [f"v1:{text}" for text in texts]
    assert other == ["v1:x"]
    assert all(len(call) <= 2 for call in model.calls)
    assert sorted(text for call in model.calls for text in call) == sorted([*texts, "x"])


async def test_overload_is_refused_at_once_with_a_retry_after() -> None:
    with opened(threading.Event()) as gate:
        model = Model(gate)
        async with batching(model, max_batch_size=2, max_queue=4) as made:
            busy = asyncio.create_task(ask(made, "v1", "busy"))
            await until(lambda: len(model.calls) == 1)
            waiting = [
                asyncio.create_task(ask(made, "v1", "a", "b")),
                asyncio.create_task(ask(made, "v1", "c", "d")),
            ]
            await asyncio.sleep(0)
            with pytest.raises(Overloaded) as refused:
                made.submit("v1", ["e"])
            assert refused.value.retry_after >= 1
            assert "4 texts are already waiting" in str(refused.value)
            gate.set()
            # Nothing queued was lost: every accepted request is answered.
            assert await asyncio.gather(busy, *waiting) == [
                ["v1:busy"],
                ["v1:a", "v1:b"],
                ["v1:c", "v1:d"],
            ]
            assert await ask(made, "v1", "e") == ["v1:e"], "room again once the queue drains"


async def test_past_its_deadline_a_request_fails_and_its_queued_texts_are_dropped() -> None:
    with opened(threading.Event()) as gate:
        model = Model(gate)
        async with batching(model, timeout_seconds=0.2) as made:
            in_call = made.submit("v1", ["in-call"])
            await until(lambda: len(model.calls) == 1)
            queued = made.submit("v1", ["queued-1", "queued-2"])
            with pytest.raises(DeadlineExceeded, match="200 ms"):
                await queued.result()
            assert made.batcher("v1").queued == 0  # type: ignore[union-attr]
            with pytest.raises(DeadlineExceeded):
                await in_call.result()
            gate.set()
            assert await ask(made, "v1", "later") == ["v1:later"]
    assert model.calls == [["in-call"], ["later"]], "dropped texts never reach the model"


async def test_a_cancelled_request_takes_its_texts_out_of_the_queue() -> None:
    with opened(threading.Event()) as gate:
        model = Model(gate)
        async with batching(model) as made:
            busy = asyncio.create_task(ask(made, "v1", "busy"))
            await until(lambda: len(model.calls) == 1)
            gone = asyncio.create_task(ask(made, "v1", "gone"))
            await until(lambda: made.batcher("v1").queued == 1)  # type: ignore[union-attr]
            gone.cancel()  # the client hung up
            await asyncio.gather(gone, return_exceptions=True)
            assert made.batcher("v1").queued == 0  # type: ignore[union-attr]
            gate.set()
            await busy
    assert model.calls == [["busy"]]


async def test_a_failing_model_call_fails_only_its_batch() -> None:
    with opened(threading.Event()) as gate:
        model = Model(gate, fail_on="boom")
        async with batching(model, max_batch_size=2) as made:
            first = asyncio.create_task(ask(made, "v1", "first"))
            await until(lambda: len(model.calls) == 1)
            same_batch = [
                asyncio.create_task(ask(made, "v1", "boom")),
                asyncio.create_task(ask(made, "v1", "unlucky")),
            ]
            next_batch = [
                asyncio.create_task(ask(made, "v1", "fine-1")),
                asyncio.create_task(ask(made, "v1", "fine-2")),
            ]
            await until(lambda: made.batcher("v1").queued == 4)  # type: ignore[union-attr]
            gate.set()
            failed = await asyncio.gather(*same_batch, return_exceptions=True)
            assert await first == ["v1:first"]
            assert await asyncio.gather(*next_batch) == [["v1:fine-1"], ["v1:fine-2"]]
            assert await ask(made, "v1", "after") == ["v1:after"]
    assert all(isinstance(error, ModelCallError) for error in failed)
    assert "RuntimeError" in str(failed[0])


async def test_model_calls_run_off_the_loop_one_thread_and_one_call_at_a_time_per_key() -> None:
    calls_in_progress = 0
    most_at_once = 0
    lock = threading.Lock()
    threads: dict[str, set[int]] = {"v1": set(), "v2": set()}

    def run(rows: list[tuple[str, str]]) -> list[str]:
        nonlocal calls_in_progress, most_at_once
        threads[rows[0][0]].add(threading.get_ident())
        with lock:
            calls_in_progress += 1
            most_at_once = max(most_at_once, calls_in_progress)
        time.sleep(0.01)
        with lock:
            calls_in_progress -= 1
        return [text for _, text in rows]

    made: Batching[str, str, str] = Batching(
        run, BatchLimits(max_batch_size=2, max_wait_seconds=0.0), key_of=lambda name: name
    )
    try:
        await asyncio.gather(*(ask(made, "v1", f"t{i}") for i in range(8)))
        await asyncio.gather(*(ask(made, "v2", f"t{i}") for i in range(4)))
    finally:
        await made.close()
    assert most_at_once == 1
    assert len(threads["v1"]) == 1
    assert len(threads["v2"]) == 1
    assert threads["v1"] != threads["v2"], "each key has its own thread"
    assert threading.get_ident() not in threads["v1"] | threads["v2"]


async def test_a_batcher_whose_key_is_no_longer_live_is_let_go_once_idle() -> None:
    live = {"v1"}
    made: Batching[str, str, str] = Batching(
        Model(),
        BatchLimits(max_wait_seconds=0.0),
        key_of=lambda name: name,
        is_live=lambda name: name in live,
    )
    try:
        await ask(made, "v1", "a")
        live = {"v2"}  # swapped
        await ask(made, "v2", "b")
        assert made.keys == ["v2"]
    finally:
        await made.close()


async def test_after_close_requests_are_refused_and_the_queued_ones_told() -> None:
    with opened(threading.Event()) as gate:
        model = Model(gate)
        made: Batching[str, str, str] = Batching(
            model, BatchLimits(max_wait_seconds=0.0), key_of=lambda name: name
        )
        busy = made.submit("v1", ["busy"])
        await until(lambda: len(model.calls) == 1)
        queued = made.submit("v1", ["queued"])
        await made.close(grace_seconds=0.05)
        with pytest.raises(ShuttingDown):
            made.submit("v1", ["late"])
        with pytest.raises(ShuttingDown):
            await queued.result()
        # The call in progress is left to finish in its thread; its caller is told at once.
        with pytest.raises(ShuttingDown):
            await busy.result()


# -- through the API ----------------------------------------------------------------------


class Api:
    """The HTTP API over a registry and the real prediction service, without a broker."""

    def __init__(self, limits: BatchLimits, *, ready: bool = True) -> None:
        self.registry = ModelRegistry()
        self.ready = ready
        self.predictions = PredictionService(
            self.registry,
            tracer=TracerProvider().get_tracer("test"),
            publish=self._publish,
            sample_rate=0.0,
            limits=limits,
            sampler=random.Random(1),
        )
        runtime = ServingRuntime(
            registry=self.registry,
            predictions=self.predictions,
            is_ready=lambda: self.ready,
            is_healthy=self._healthy,
            max_batch=8,
            max_text_chars=100,
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_api(runtime)), base_url="http://serving"
        )

    def install(self, classifier: FakeClassifier, offset: int) -> None:
        ready = model_ready(classifier.model_version)
        self.registry.install(classifier, ready, origin(offset))

    async def _publish(self, *_: object) -> None:
        return None

    async def _healthy(self) -> bool:
        return True

    async def close(self) -> None:
        await self.client.aclose()
        await self.predictions.close()


@asynccontextmanager
async def api(limits: BatchLimits, *, ready: bool = True) -> AsyncIterator[Api]:
    made = Api(limits, ready=ready)
    try:
        yield made
    finally:
        await made.close()


async def test_health_and_readiness_answer_while_the_model_is_busy() -> None:
    with opened(threading.Event()) as gate:
        async with api(BatchLimits(max_wait_seconds=0.0)) as serving:
            classifier = FakeClassifier("v1", gate=gate)
            serving.install(classifier, 0)
            busy = [
                asyncio.create_task(serving.client.post(PREDICT, json={"text": f"oil {i}"}))
                for i in range(5)
            ]
            await until(lambda: len(classifier.calls) == 1)
            started = time.monotonic()
            assert (await serving.client.get("/health")).status_code == 204
            assert (await serving.client.get("/ready")).status_code == 200
            assert (await serving.client.get(f"/v1/domains/{DOMAIN}/model")).status_code == 200
            assert time.monotonic() - started < 1, "the loop is free while the model works"
            gate.set()
            answers = await asyncio.gather(*busy)
    assert [answer.status_code for answer in answers] == [200] * 5
    assert {answer.json()["model_version"] for answer in answers} == {"v1"}
    assert len(classifier.calls) <= 2, "the requests waiting behind the first went together"


async def test_overload_is_429_past_the_deadline_504_and_a_failed_call_500() -> None:
    limits = BatchLimits(max_batch_size=2, max_wait_seconds=0.0, max_queue=2, timeout_seconds=2)
    with opened(threading.Event()) as gate:
        async with api(limits) as serving:
            classifier = FakeClassifier("v1", gate=gate)
            serving.install(classifier, 0)
            busy = asyncio.create_task(serving.client.post(PREDICT, json={"text": "a"}))
            await until(lambda: len(classifier.calls) == 1)
            waiting = asyncio.create_task(serving.client.post(PREDICT, json={"texts": ["b", "c"]}))
            await until(lambda: serving.predictions.batching.keys != [])
            await asyncio.sleep(0.05)
            refused = await serving.client.post(PREDICT, json={"text": "d"})
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert "already waiting" in refused.json()["detail"]
            late = await waiting  # the model is still held: its 2 s deadline passes
            assert late.status_code == 504
            assert "2000 ms" in late.json()["detail"]
            gate.set()
            assert (await busy).status_code == 504

    async with api(BatchLimits(max_wait_seconds=0.0)) as serving:
        serving.install(FakeClassifier("v1", fail_on="boom"), 0)
        failed = await serving.client.post(PREDICT, json={"texts": ["fine", "boom"]})
        assert failed.status_code == 500
        assert "model call failed" in failed.json()["detail"]
        after = await serving.client.post(PREDICT, json={"text": "fine"})
        assert after.status_code == 200


async def test_without_a_model_it_is_503_while_starting_and_404_once_ready() -> None:
    async with api(BatchLimits(), ready=False) as serving:
        starting = await serving.client.post(PREDICT, json={"text": "oil"})
        assert starting.status_code == 503
        assert starting.headers["retry-after"] == "2"
        assert "starting" in starting.json()["detail"]
        serving.ready = True
        assert (await serving.client.post(PREDICT, json={"text": "oil"})).status_code == 404


async def test_requests_in_flight_during_a_swap_finish_on_their_model() -> None:
    with opened(threading.Event()) as gate:
        async with api(BatchLimits(max_wait_seconds=0.0)) as serving:
            old = FakeClassifier("v1", gate=gate)
            serving.install(old, 0)
            first = asyncio.create_task(serving.client.post(PREDICT, json={"text": "oil"}))
            await until(lambda: len(old.calls) == 1)
            queued = asyncio.create_task(serving.client.post(PREDICT, json={"text": "gas"}))
            await until(lambda: serving.predictions.batching.keys != [])
            await asyncio.sleep(0.05)  # queued behind the call in progress, pinned to v1
            new = FakeClassifier("v2")
            serving.install(new, 1)
            after = await serving.client.post(PREDICT, json={"text": "oil"})
            assert after.json()["model_version"] == "v2", "it does not wait for the old model"
            gate.set()
            assert (await first).json()["model_version"] == "v1"
            assert (await queued).json()["model_version"] == "v1"
    assert old.calls == [["oil"], ["gas"]]
    assert new.calls == [["oil"]]


async def test_batching_beats_one_call_per_request_on_a_model_with_a_fixed_cost() -> None:
    """Evidence: 16 clients, a model costing 20 ms a call plus 1 ms a text (sleeping)."""

    async def throughput(max_batch_size: int) -> float:
        limits = BatchLimits(max_batch_size=max_batch_size, max_wait_seconds=0.002)
        async with api(limits) as serving:
            serving.install(FakeClassifier("v1", seconds_per_call=0.02, seconds_per_text=0.001), 0)

            async def client() -> None:
                for _ in range(4):
                    response = await serving.client.post(PREDICT, json={"text": "oil"})
                    assert response.status_code == 200

            started = time.monotonic()
            await asyncio.gather(*(client() for _ in range(16)))
            return 64 / (time.monotonic() - started)

    one_by_one = await throughput(1)
    batched = await throughput(32)
    print(f"\n16 clients: {one_by_one:.0f} req/s one call per request, {batched:.0f} batched")
    assert batched > 2 * one_by_one


def test_the_executor_calls_each_model_once_and_answers_in_row_order() -> None:
    """A batch of one key may hold rows of several models (a base shared by domains, later):
    each model is called once with its texts, the answers come back in row order."""
    registry = ModelRegistry()
    old, new = FakeClassifier("v1"), FakeClassifier("v2")
    v1 = registry.install(old, model_ready("v1"), origin(0))
    v2 = registry.install(new, model_ready("v2"), origin(1))
    rows = [(v1, "oil"), (v2, "wheat"), (v1, "wheat"), (v2, "gas")]
    answers = predict_rows(rows, batch_size=8)
    assert [answer.label for answer in answers] == ["crude", "grain", "grain", "crude"]
    assert old.calls == [["oil", "wheat"]]
    assert new.calls == [["wheat", "gas"]]


async def test_a_key_allowing_two_calls_runs_two_batches_at_once_in_two_threads() -> None:
    running, release = threading.Semaphore(0), threading.Event()
    concurrent: list[int] = []
    active = [0]
    guard = threading.Lock()

    def model(rows: list[tuple[str, str]]) -> list[str]:
        with guard:
            active[0] += 1
            concurrent.append(active[0])
        running.release()
        release.wait(10)
        with guard:
            active[0] -= 1
        return [text for _, text in rows]

    made: Batching[str, str, str] = Batching(
        model,
        BatchLimits(max_batch_size=2, max_wait_seconds=0.0),
        key_of=lambda name: name,
        concurrency_of=lambda _: 2,
    )
    first = made.submit("m", ["a", "b"])
    second = made.submit("m", ["c", "d"])
    third = made.submit("m", ["e"])
    # Two calls start at once; the third batch waits for a free thread.
    assert await asyncio.to_thread(running.acquire, timeout=10)
    assert await asyncio.to_thread(running.acquire, timeout=10)
    assert not await asyncio.to_thread(running.acquire, timeout=0.2)
    release.set()
    assert await first.result() == ["a", "b"]
    assert await second.result() == ["c", "d"]
    assert await third.result() == ["e"]
    assert max(concurrent) == 2
    await made.close()
