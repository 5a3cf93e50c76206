"""Dynamic batching: the texts of concurrent requests, gathered into one model call.

A request's texts join the queue of their *batch key* as rows `(model, text)`; each key has
one worker task, which takes up to `max_batch_size` rows at a time and hands them to the
executor, `run(rows) -> predictions` (one prediction per row, in order), in the key's own
thread. So:

* the event loop never runs a model: `/health`, `/ready` and every other request answer while
  models work;
* a key's model calls happen one at a time, in one thread (tokenizers and torch modules are not
  safe to share between threads), and while one runs the next batch fills up — unless the key
  allows more (`concurrency_of`): then up to that many calls run at once, each in a thread of
  the key's, a batch forming whenever one of them is free;
* the first row of a batch waits at most `max_wait_seconds` for others to join it; when the
  worker was busy, rows that have waited that long already go at once;
* at most `max_queue` rows wait per key: a request that would go beyond is refused at once
  (`Overloaded`, with a Retry-After estimate) rather than queued without bound;
* a request waits for its answers until its deadline (`timeout_seconds` from when it was
  queued); then it is answered `DeadlineExceeded`, and its rows not yet in a model call are
  taken out of the queue (rows already in one finish, and their answers are dropped);
* a model call that raises fails the requests of that batch (`ModelCallError`), and only those:
  the next batch is called as usual.

A row carries its model, so each request is answered by the model it was given when it
started, however the models change meanwhile. What a key is, and how rows are run, are the
caller's: serving batches per model (`key_of` = the model, `run` = its `predict`); batching
several domains that share one base model is the same machinery with `key_of` = the base and
`run` = the base's mixed-adapter call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
"""A batch key: rows of one key may share a model call."""
M = TypeVar("M")
"""The model a row is run with."""
P = TypeVar("P")
"""What the executor answers for one row."""

Executor = Callable[[list[tuple[M, str]]], Sequence[P]]
"""Runs rows `(model, text)`, blocking, and answers one prediction per row, in order."""

# Until a key has timed a batch, a batch is guessed to take this long (for Retry-After).
_FIRST_BATCH_GUESS_SECONDS = 0.1
# Weight of the newest batch in the running estimate of a batch's duration.
_BATCH_TIME_WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How batches form and how much may wait (`MESH_SERVING_*` settings)."""

    max_batch_size: int = 64
    """Most rows in one model call."""
    max_wait_seconds: float = 0.005
    """How long the first row of a batch waits for more before the call goes ahead."""
    max_queue: int = 1024
    """Most rows waiting per key (not yet in a model call)."""
    timeout_seconds: float = 10.0
    """A request's deadline, from when it is queued."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        if self.max_wait_seconds < 0 or self.timeout_seconds <= 0:
            raise ValueError("max_wait_seconds must be >= 0 and timeout_seconds > 0")


class Refused(Exception):  # noqa: N818  (a refusal, not an error of the server's)
    """The request was not queued; the client may try again after `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Overloaded(Refused):
    """The key's queue cannot take the request's rows (HTTP 429)."""


class ShuttingDown(Refused):
    """Batching has stopped: the process is shutting down (HTTP 503)."""


class DeadlineExceeded(Exception):  # noqa: N818
    """No answer within the request's deadline (HTTP 504)."""


class ModelCallError(Exception):
    """The model call of a batch holding the request's rows raised (HTTP 500)."""


class Pending(Generic[P]):
    """A queued request: wait for its answers with `result()`."""

    __slots__ = (
        "_future",
        "_remaining",
        "_timeout_seconds",
        "_withdraw",
        "answers",
        "deadline",
        "queued",
    )

    def __init__(
        self,
        size: int,
        deadline: float,
        timeout_seconds: float,
        withdraw: Callable[[Pending[P]], None],
    ) -> None:
        self._future: asyncio.Future[list[P]] = asyncio.get_running_loop().create_future()
        self._timeout_seconds = timeout_seconds
        self._withdraw = withdraw
        self.deadline = deadline
        """Event-loop time past which the request is answered `DeadlineExceeded`."""
        self.answers: list[P | None] = [None] * size
        self._remaining = size
        self.queued = size
        """Rows still in the queue (not yet in a model call)."""
        if size == 0:
            self._future.set_result([])

    async def result(self) -> list[P]:
        """The answers, in row order; raises `DeadlineExceeded`, `ModelCallError` or
        `ShuttingDown`.

        However it ends (answered, failed, past its deadline, or the caller cancelled), the
        request's rows still queued are taken out of the queue.
        """
        try:
            async with asyncio.timeout_at(self.deadline):
                return await asyncio.shield(self._future)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer within {self._timeout_seconds * 1000:g} ms "
                "(MESH_SERVING_REQUEST_TIMEOUT_MS)"
            ) from None
        finally:
            if not self._future.done():
                self._future.cancel()
            if self.queued:
                self._withdraw(self)

    def answer(self, index: int, prediction: P) -> None:
        """The row at `index` has its prediction."""
        if self._future.done():
            return
        self.answers[index] = prediction
        self._remaining -= 1
        if self._remaining == 0:
            self._future.set_result(cast("list[P]", self.answers))

    def fail(self, error: Exception) -> None:
        if not self._future.done():
            self._future.set_exception(error)


@dataclass(slots=True, eq=False)
class _Row(Generic[M, P]):
    model: M
    text: str
    pending: Pending[P]
    index: int
    queued_at: float


class Batcher(Generic[K, M, P]):
    """One key's queue, its worker task and its model threads (`concurrency` of them: how many
    model calls of the key may run at once; 1 unless the key's executor is safe to call from
    several threads)."""

    def __init__(
        self, key: K, name: str, run: Executor[M, P], limits: BatchLimits, concurrency: int = 1
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.key = key
        self.name = name
        self.limits = limits
        self._run = run
        self._queue: deque[_Row[M, P]] = deque()
        self._in_call: set[_Row[M, P]] = set()
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots = asyncio.Semaphore(concurrency)
        self._calls: set[asyncio.Task[None]] = set()
        self._thread = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"predict-{name}"
        )
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._batch_seconds = _FIRST_BATCH_GUESS_SECONDS
        self.batches = 0
        """Model calls made so far."""

    @property
    def queued(self) -> int:
        """Rows waiting for a model call."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued and no model call running."""
        return self._idle.is_set()

    def retry_after(self) -> int:
        """Seconds until the queue has likely room again: the batches ahead, at the running
        estimate of a batch's duration (at least 1 s)."""
        batches_ahead = len(self._queue) / self.limits.max_batch_size + 1
        return max(1, math.ceil(batches_ahead * self._batch_seconds))

    def submit(self, rows: Sequence[tuple[M, str]]) -> Pending[P]:
        """Queue `rows` as one request; raises `Overloaded` or `ShuttingDown` at once."""
        if self._closed:
            raise ShuttingDown("serving is shutting down", retry_after=1)
        if len(self._queue) + len(rows) > self.limits.max_queue:
            raise Overloaded(
                f"{len(self._queue)} texts are already waiting for {self.name} "
                f"(at most {self.limits.max_queue})",
                retry_after=self.retry_after(),
            )
        now = asyncio.get_running_loop().time()
        pending: Pending[P] = Pending(
            len(rows), now + self.limits.timeout_seconds, self.limits.timeout_seconds, self.withdraw
        )
        for index, (model, text) in enumerate(rows):
            self._queue.append(_Row(model, text, pending, index, now))
        if rows:
            self._idle.clear()
            self._arrived.set()
            if self._worker is None:
                self._worker = asyncio.create_task(self._work(), name=f"batcher {self.name}")
                self._worker.add_done_callback(self._worker_ended)
        return pending

    def _worker_ended(self, worker: asyncio.Task[None]) -> None:
        if worker.cancelled():
            return
        # Only a bug gets here; the next request starts a new worker rather than waiting.
        log.error("%s: batch worker died", self.name, exc_info=worker.exception())
        self._worker = None

    def withdraw(self, pending: Pending[P]) -> None:
        """Take the rows of `pending` still waiting out of the queue."""
        kept = [row for row in self._queue if row.pending is not pending]
        self._queue.clear()
        self._queue.extend(kept)
        pending.queued = 0

    async def close(self, grace_seconds: float = 0.0) -> None:
        """Refuse new requests, give the queued ones up to `grace_seconds` to be answered,
        then refuse what is left (`ShuttingDown`) and let the model thread go."""
        self._closed = True
        if grace_seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_seconds):
                    await self._idle.wait()
        left = [*self._in_call, *self._queue]
        for task in [*([self._worker] if self._worker else []), *self._calls]:
            task.cancel()
        for task in [*([self._worker] if self._worker else []), *self._calls]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for row in left:
            row.pending.fail(ShuttingDown("serving is shutting down", retry_after=1))
        self._queue.clear()
        # A model call still running finishes in its thread; nothing waits for it here.
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _work(self) -> None:
        while True:
            while not self._queue:
                if not self._calls:
                    self._idle.set()
                self._arrived.clear()
                await self._arrived.wait()
            # A batch forms once a model thread is free: meanwhile more rows join the queue.
            await self._slots.acquire()
            await self._fill()
            size = min(len(self._queue), self.limits.max_batch_size)
            rows = [self._queue.popleft() for _ in range(size)]
            for row in rows:
                row.pending.queued -= 1
            if not rows:  # withdrawn while waiting for a thread
                self._slots.release()
                continue
            self._in_call.update(rows)
            call = asyncio.create_task(self._call(rows), name=f"{self.name} call")
            self._calls.add(call)
            call.add_done_callback(functools.partial(self._call_ended, rows))

    def _call_ended(self, rows: list[_Row[M, P]], call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._in_call.difference_update(rows)
        self._slots.release()
        if not self._queue and not self._calls:
            self._idle.set()

    async def _fill(self) -> None:
        """Wait until a full batch is queued, or the oldest row has waited `max_wait`."""
        loop = asyncio.get_running_loop()
        while self._queue and len(self._queue) < self.limits.max_batch_size:
            left = self._queue[0].queued_at + self.limits.max_wait_seconds - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(left):
                    await self._arrived.wait()
            except TimeoutError:
                return

    async def _call(self, rows: list[_Row[M, P]]) -> None:
        """Run one batch in the key's thread and answer its rows."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.debug(
            "%s: a model call of %d texts (%d queued)", self.name, len(rows), len(self._queue)
        )
        try:
            predictions = await loop.run_in_executor(
                self._thread, self._run_checked, [(row.model, row.text) for row in rows]
            )
        except Exception as error:
            log.exception("%s: a model call of %d texts failed", self.name, len(rows))
            for pending in {id(row.pending): row.pending for row in rows}.values():
                pending.fail(
                    ModelCallError(f"the model call failed ({type(error).__name__}); retry later")
                )
            return
        finally:
            self.batches += 1
            elapsed = loop.time() - started
            self._batch_seconds += _BATCH_TIME_WEIGHT * (elapsed - self._batch_seconds)
            log.debug("%s: a call of %d texts took %.1f ms", self.name, len(rows), elapsed * 1000)
        for row, prediction in zip(rows, predictions, strict=True):
            row.pending.answer(row.index, prediction)

    def _run_checked(self, rows: list[tuple[M, str]]) -> Sequence[P]:
        predictions = self._run(rows)
        if len(predictions) != len(rows):
            raise RuntimeError(f"{len(predictions)} predictions for {len(rows)} texts")
        return predictions


class Batching(Generic[K, M, P]):
    """The batchers of every key, made when a key is first used and let go once their key is
    no longer live and they are idle."""

    def __init__(
        self,
        run: Executor[M, P],
        limits: BatchLimits,
        *,
        key_of: Callable[[M], K],
        is_live: Callable[[K], bool] = lambda _: True,
        name_of: Callable[[K], str] = str,
        concurrency_of: Callable[[K], int] = lambda _: 1,
    ) -> None:
        self.limits = limits
        self._run = run
        self._key_of = key_of
        self._concurrency_of = concurrency_of
        self._is_live = is_live
        self._name_of = name_of
        self._batchers: dict[K, Batcher[K, M, P]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def submit(self, model: M, texts: Sequence[str]) -> Pending[P]:
        """Queue `texts` to be run with `model`; raises `Overloaded` or `ShuttingDown`."""
        if self._closed:
            raise ShuttingDown("serving is shutting down", retry_after=1)
        key = self._key_of(model)
        self._let_go_of_stale(but=key)
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = Batcher(
                key, self._name_of(key), self._run, self.limits, self._concurrency_of(key)
            )
            self._batchers[key] = batcher
        return batcher.submit([(model, text) for text in texts])

    def batcher(self, model: M) -> Batcher[K, M, P] | None:
        """The batcher `model`'s rows go to, if it has one now."""
        return self._batchers.get(self._key_of(model))

    @property
    def keys(self) -> list[K]:
        """The keys with a batcher now."""
        return list(self._batchers)

    async def close(self, grace_seconds: float = 0.0) -> None:
        """Stop every batcher (see `Batcher.close`)."""
        self._closed = True
        batchers = list(self._batchers.values())
        self._batchers.clear()
        await asyncio.gather(*(batcher.close(grace_seconds) for batcher in batchers))
        if self._closing:
            await asyncio.gather(*self._closing)

    def _let_go_of_stale(self, *, but: K) -> None:
        """Close the idle batchers of keys no longer live (e.g. a model swapped out)."""
        for key, batcher in list(self._batchers.items()):
            if key != but and batcher.idle and not self._is_live(key):
                del self._batchers[key]
                # Idle: closing only stops its worker task and lets its thread go.
                task = asyncio.get_running_loop().create_task(batcher.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
