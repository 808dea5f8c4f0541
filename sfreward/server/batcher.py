"""Dynamic batching of scoring work across concurrent requests.

Requests put their items on one bounded queue; a single worker task takes up to
`max_batch_size` items, waiting at most `max_wait_ms` after the oldest one arrived, and runs the
model call in a dedicated worker thread so the event loop keeps accepting requests. While the
model is busy, new items pile up and go together in the next call: under load, batches fill by
themselves; at low load, an item waits at most `max_wait_ms`.

The queue is bounded by `max_queue` items: `submit` raises `QueueFull` instead of buffering
without limit (the server answers 503 with Retry-After).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The batcher's queue cannot take this many more items now."""


class SettingError(ValueError):
    """A server setting is out of range; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def check_int(obj: object, name: str, low: int = 1) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise SettingError(name, f"must be an integer >= {low}, got {v!r}")


def check_float(obj: object, name: str, low: float = 0.0, strict: bool = True) -> None:
    v = getattr(obj, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        and (v > low if strict else v >= low)
    if not ok:
        raise SettingError(name, f"must be a finite number {'>' if strict else '>='} {low}, got {v!r}")


@dataclass
class BatcherConfig:
    max_batch_size: int = field(default=32, metadata={"help": "items per model call"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "batching wait for the oldest item, ms"})
    max_queue: int = field(default=256, metadata={"help": "items waiting (not yet running); more -> 503"})

    def __post_init__(self) -> None:
        # max_batch_size 0 made the worker loop spin without ever taking an item.
        check_int(self, "max_batch_size")
        check_float(self, "max_wait_ms", 0.0, strict=False)
        check_int(self, "max_queue")


@dataclass
class BatcherStats:
    calls: int = 0
    items: int = 0
    max_batch_seen: int = 0


class DynamicBatcher(Generic[T, R]):
    """`fn(list[T]) -> list[R]` (same length, same order) called on batches of submitted items."""

    def __init__(self, fn: Callable[[list[T]], list[R]], config: BatcherConfig | None = None):
        self.fn = fn
        self.config = config or BatcherConfig()
        self.stats = BatcherStats()
        self._queue: collections.deque[tuple[T, asyncio.Future, float]] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread: model calls are serialized (one device, no contention between calls).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sfr-model")

    @property
    def pending(self) -> int:
        return len(self._queue)

    def has_room(self, n: int) -> bool:
        return len(self._queue) + n <= self.config.max_queue

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="sfr-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue:
            _, fut, _ = self._queue.popleft()
            if not fut.done():
                fut.set_exception(RuntimeError("server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue all items (all or none) and wait for their results, in order."""
        if not items:
            return []
        if self._task is None or self._wakeup is None:
            raise RuntimeError("batcher is not started")
        if not self.has_room(len(items)):
            raise QueueFull(f"queue holds {len(self._queue)} of {self.config.max_queue} items; "
                            f"cannot add {len(items)}")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futs = []
        for it in items:
            fut = loop.create_future()
            self._queue.append((it, fut, now))
            futs.append(fut)
        self._wakeup.set()
        return list(await asyncio.gather(*futs))

    async def _loop(self) -> None:
        assert self._wakeup is not None
        cfg = self.config
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._queue[0][2] + cfg.max_wait_ms / 1000.0
            while len(self._queue) < cfg.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=left)
                except asyncio.TimeoutError:
                    break
            batch = [self._queue.popleft() for _ in range(min(cfg.max_batch_size, len(self._queue)))]
            # Requests whose client went away need no work.
            batch = [b for b in batch if not b[1].done()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [b[0] for b in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as e:  # the requests of this batch get the error; the server goes on
                log.exception("model call failed for a batch of %d items", len(batch))
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.stats.calls += 1
            self.stats.items += len(batch)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(batch))
            for (_, fut, _), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

