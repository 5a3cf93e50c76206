"""The start-up heap, frozen once per process so the cyclic collector stops re-scanning it.

A service builds most of its objects once (modules, pydantic schemas, the broker and its
subscribers, an ML framework) and keeps them for its whole life, yet each of CPython's full
collections traverses every one of them again. A batch subscription keeps thousands of objects
alive per batch (its events, contexts and span links), so enough of them reach the oldest
generation to set off a full collection every few batches: ≈ 0.1 s each with the ~130k objects
of a bare service, much more with torch loaded. Measured on bench/backbone's batch path, that was
about half of what the kit cost over raw aiokafka.

`gc.freeze()` moves everything alive into a permanent generation the collector skips. Frozen
objects are still freed by reference counting; only a reference cycle among them that becomes
garbage later is never collected, which is why this happens once per process, right after a
full collection, and not at every start.
"""

from __future__ import annotations

import functools
import gc
import logging

log = logging.getLogger(__name__)


@functools.cache
def freeze_startup_heap() -> None:
    gc.collect()  # what is garbage now is collected, not frozen
    gc.freeze()
    log.debug("froze the start-up heap: %d objects", gc.get_freeze_count())
