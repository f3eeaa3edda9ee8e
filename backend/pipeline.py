"""Overlapping reading and writing with prediction: one reader thread and one writer thread per run.

The network call (ONNX Runtime or TensorFlow) releases the GIL, and so do GDAL's block reads, decoding
and compression inside rasterio and numpy's large array operations. So while the network predicts one
batch, the reader can fetch and decode the next tile row and the writer thread, which owns the blending
accumulator, can weight and add the previous batch, and argmax, count, compress and write the rows that
just became final. Each side has exactly one thread, so the order of reads and of
writes is the serial order: the output is byte-identical to a serial run.

Memory stays bounded: at most one row is read ahead, and at most ``max_pending`` calls (each holding
at most one batch of predictions) wait for the writer; the producer blocks on the oldest one beyond
that. An error in a thread is raised in the main thread at its next hand-over, and the run waits for
both threads to go idle (:meth:`Prefetcher.cancel`, :meth:`OrderedWorker.abandon`) before it closes
the datasets they use.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Prefetcher:
    """Runs ``fetch(i)`` for the next index in a background thread while the caller works on the current one."""

    def __init__(self, fetch: Callable[[int], T], count: int, pool: ThreadPoolExecutor | None) -> None:
        self._fetch, self._count, self._pool = fetch, count, pool
        self._next: Future | None = None

    def __iter__(self):
        if self._pool is None:  # serial mode: the plain loop
            for i in range(self._count):
                yield self._fetch(i)
            return
        if self._count:
            self._next = self._pool.submit(self._fetch, 0)
        for i in range(self._count):
            assert self._next is not None
            item = self._next.result()  # re-raises the reader's error here
            self._next = self._pool.submit(self._fetch, i + 1) if i + 1 < self._count else None
            yield item

    def cancel(self) -> None:
        """Wait for a read still in flight (its result is dropped) so the dataset can be closed."""
        if self._next is not None:
            self._next.cancel()
            try:
                self._next.result()
            except Exception:  # noqa: BLE001, S110 - the run is already ending with its own error
                pass
            self._next = None


class OrderedWorker:
    """Runs submitted calls one after another on a single thread (inline without a pool), with a bounded queue.

    The blending side of a run (accumulating weighted tile predictions, releasing finished rows, argmax,
    counting, writing) is a sequence of such calls: one thread owns the accumulator, so no call needs a
    lock or a copy of its arguments, and the calls happen in exactly the serial order.
    """

    def __init__(self, pool: ThreadPoolExecutor | None, max_pending: int = 4) -> None:
        self._pool, self._max = pool, max_pending
        self._pending: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; blocks while ``max_pending`` calls wait; raises an earlier call's error."""
        if self._pool is None:
            fn(*args)
            return
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._max:
            self._pending.popleft().result()  # back-pressure; re-raises the worker's error here
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()

    def drain(self) -> None:
        """Wait until every queued call has run; raises the first error."""
        while self._pending:
            self._pending.popleft().result()

    def abandon(self) -> None:
        """Wait for queued calls without raising (the run is failing already)."""
        while self._pending:
            future = self._pending.popleft()
            future.cancel()
            try:
                future.result()
            except Exception:  # noqa: BLE001, S110 - the first error is the one reported
                pass
