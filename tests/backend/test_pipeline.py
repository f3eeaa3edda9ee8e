"""Reading ahead and writing behind (backend.pipeline): same order, same output, and nothing left after a failure."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio

from backend import inference
from backend.contract import output_files
from backend.errors import InputError, OutputError
from backend.inference import segment
from backend.pipeline import OrderedWorker, Prefetcher
from backend.raster_io import RasterSource
from tests.backend.conftest import IdentityRuntime, expected_classes
from tests.data.rasters import random_rgb, write_raster

WAIT = 10  # seconds: only a bound for a hung thread, never a timing assertion


@pytest.fixture
def pool():
    with ThreadPoolExecutor(1, thread_name_prefix="test-io") as executor:
        yield executor


# ------------------------------------------------------------------------------ Prefetcher

@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("count", [0, 1, 5])
def test_prefetcher_yields_every_item_in_order(pool, threaded, count):
    fetched = []

    def fetch(i):
        fetched.append(i)
        return i * i

    assert list(Prefetcher(fetch, count, pool if threaded else None)) == [i * i for i in range(count)]
    assert fetched == list(range(count))


def test_prefetcher_reads_the_next_item_while_the_consumer_works(pool):
    started = {i: threading.Event() for i in range(3)}

    def fetch(i):
        started[i].set()
        return i

    items = iter(Prefetcher(fetch, 3, pool))
    assert next(items) == 0
    assert started[1].wait(WAIT)  # fetched in the background while the consumer holds item 0
    assert next(items) == 1


@pytest.mark.parametrize("threaded", [False, True])
def test_a_fetch_error_reaches_the_consumer_at_that_item(pool, threaded):
    def fetch(i):
        if i == 2:
            raise OSError("read failed at 2")
        return i

    got = []
    with pytest.raises(OSError, match="read failed at 2"):
        for item in Prefetcher(fetch, 5, pool if threaded else None):
            got.append(item)
    assert got == [0, 1]


def test_cancel_waits_for_the_fetch_in_flight(pool):
    running, release, finished = threading.Event(), threading.Event(), threading.Event()

    def fetch(i):
        if i == 1:
            running.set()
            release.wait(WAIT)
            finished.set()
        return i

    reads = Prefetcher(fetch, 3, pool)
    assert next(iter(reads)) == 0
    assert running.wait(WAIT)
    canceller = threading.Thread(target=reads.cancel)
    canceller.start()
    try:
        canceller.join(0.2)
        assert canceller.is_alive()  # still waiting: the dataset must not be closed under the read
    finally:
        release.set()
    canceller.join(WAIT)
    assert not canceller.is_alive() and finished.is_set()
    reads.cancel()  # a second cancel has nothing to wait for


def test_cancel_swallows_the_error_of_the_fetch_in_flight(pool):
    def fetch(i):
        if i == 1:
            raise OSError("the run is failing anyway")
        return i

    reads = Prefetcher(fetch, 3, pool)
    assert next(iter(reads)) == 0
    reads.cancel()


# ------------------------------------------------------------------------------ OrderedWorker

class Recorder:
    """Calls made on the worker: what, in which order, on which thread; can hold at a gate or fail."""

    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.events: list = []
        self.threads: set[str] = set()
        self.fail_at, self.gate = fail_at, gate

    def __call__(self, item) -> None:
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(WAIT)
        if len(self.events) + 1 == self.fail_at:
            self.events.append(("failed", item))
            raise OutputError(f"call {self.fail_at} failed")
        self.events.append(item)


@pytest.mark.parametrize("threaded", [False, True])
def test_worker_runs_every_call_in_submission_order(pool, threaded):
    gate = threading.Event()  # threaded: every call is queued before the first one runs
    if not threaded:
        gate.set()
    calls = Recorder(gate=gate)
    worker = OrderedWorker(pool if threaded else None, max_pending=20)
    for item in range(12):
        worker.submit(calls, item)
    if not threaded:
        assert calls.events == list(range(12))  # serial: each call ran inline
    gate.set()
    worker.drain()
    assert calls.events == list(range(12))
    if threaded:
        assert calls.threads and all(name.startswith("test-io") for name in calls.threads)
    else:
        assert calls.threads == {threading.main_thread().name}


def test_the_producer_waits_when_max_pending_calls_are_queued(pool):
    gate = threading.Event()
    calls = Recorder(gate=gate)
    worker = OrderedWorker(pool, max_pending=2)
    for item in (0, 1):  # one running (held at the gate), one waiting
        worker.submit(calls, item)
    producer = threading.Thread(target=worker.submit, args=(calls, 2))
    producer.start()
    try:
        producer.join(0.2)
        assert producer.is_alive()  # memory stays bounded: the next call waits for the worker
    finally:
        gate.set()
    producer.join(WAIT)
    assert not producer.is_alive()
    worker.submit(calls, 3)
    worker.drain()
    assert calls.events == [0, 1, 2, 3]


@pytest.mark.parametrize("threaded", [False, True])
def test_a_worker_error_surfaces_at_a_later_submit_or_at_drain(pool, threaded):
    calls = Recorder(fail_at=2)
    worker = OrderedWorker(pool if threaded else None)
    with pytest.raises(OutputError, match="call 2 failed"):
        for item in range(10):
            worker.submit(calls, item)
        worker.drain()
    assert calls.events[:2] == [0, ("failed", 1)]


def test_an_error_in_the_last_call_surfaces_at_drain_once(pool):
    gate = threading.Event()
    calls = Recorder(fail_at=1, gate=gate)
    worker = OrderedWorker(pool)
    worker.submit(calls, 0)  # returns while the call is still held at the gate
    gate.set()
    with pytest.raises(OutputError, match="call 1 failed"):
        worker.drain()
    worker.drain()  # reported once


def test_abandon_never_raises_and_leaves_the_worker_idle(pool):
    gate = threading.Event()
    calls = Recorder(fail_at=1, gate=gate)
    worker = OrderedWorker(pool, max_pending=5)
    for item in range(3):  # queued behind the first call, which will fail
        worker.submit(calls, item)
    gate.set()
    worker.abandon()
    worker.drain()  # nothing left to raise
    assert pool.submit(lambda: "idle").result(WAIT) == "idle"
    OrderedWorker(None).abandon()  # serial: nothing queued, nothing to do


# ------------------------------------------------------------------------------ whole runs

def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("height,width,block,overlap,batch", [
    (300, 333, 16384, 8, 4),   # one column block
    (280, 300, 128, 16, 3),    # several column blocks
    (70, 520, 128, 32, 5),     # wide and short: every block's rows finish in the last tile row
])
def test_overlapped_io_gives_byte_identical_outputs(tmp_path, bundle, height, width, block, overlap, batch):
    rgb = random_rgb(height, width, seed=height)
    src = write_raster(tmp_path / "in.tif", rgb)
    results = {}
    for overlap_io in (False, True):
        folder = tmp_path / f"io_{overlap_io}"
        results[overlap_io] = segment(src, folder / "out.tif", bundle, overlap=overlap, batch_size=batch,
                                      runtime=IdentityRuntime(), max_block_width=block, overlap_io=overlap_io,
                                      confidence_path=folder / "conf.tif")
    serial, threaded = _files(tmp_path / "io_False"), _files(tmp_path / "io_True")
    assert sorted(serial) == sorted(threaded) == sorted(
        ["out.tif", "conf.tif", "out.qml", "out.areas.csv", "out.areas.json", "out.tif.aux.xml"])
    for name in serial:
        assert serial[name] == threaded[name], name
    with rasterio.open(results[True].output) as ds:
        np.testing.assert_array_equal(ds.read(1), expected_classes(rgb))
    areas = json.loads(output_files(results[True].output).areas_json.read_text())
    assert [c["pixels"] for c in areas["classes"]] == np.bincount(expected_classes(rgb).ravel(), minlength=5).tolist()
    assert results[True].tiles_predicted == results[False].tiles_predicted == results[True].tiles_total


def test_the_run_really_reads_and_writes_in_its_own_threads(tmp_path, bundle, monkeypatch):
    threads = {"read": set(), "write": set()}
    read, write = RasterSource.read, inference._AlignedWriter._write

    def reading(self, *args, **kw):
        threads["read"].add(threading.current_thread().name)
        return read(self, *args, **kw)

    def writing(self, data):
        threads["write"].add(threading.current_thread().name)
        return write(self, data)

    monkeypatch.setattr(RasterSource, "read", reading)
    monkeypatch.setattr(inference._AlignedWriter, "_write", writing)
    src = write_raster(tmp_path / "in.tif", random_rgb(300, 200))
    segment(src, tmp_path / "a.tif", bundle, runtime=IdentityRuntime(), overlap_io=False)
    assert threads == {"read": {threading.main_thread().name}, "write": {threading.main_thread().name}}
    threads["read"].clear()
    threads["write"].clear()
    segment(src, tmp_path / "b.tif", bundle, runtime=IdentityRuntime(), overlap_io=True)
    assert {n.rsplit("_", 1)[0] for n in threads["read"]} == {"landcover-read"}
    assert {n.rsplit("_", 1)[0] for n in threads["write"]} == {"landcover-write"}


def test_a_write_failure_in_the_writer_thread_leaves_nothing(tmp_path, bundle, monkeypatch):
    write = inference._AlignedWriter._write
    calls = []

    def failing(self, data):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise OutputError("cannot write the class raster: the disk went away")
        return write(self, data)

    monkeypatch.setattr(inference._AlignedWriter, "_write", failing)
    src = write_raster(tmp_path / "in.tif", random_rgb(700, 150))
    out_dir = tmp_path / "out"
    with pytest.raises(OutputError, match="the disk went away"):
        segment(src, out_dir / "out.tif", bundle, runtime=IdentityRuntime(), overlap_io=True,
                confidence_path=out_dir / "conf.tif")
    assert calls[1].startswith("landcover-write")
    assert list(out_dir.iterdir()) == []


def test_a_write_failure_keeps_the_previous_result(tmp_path, bundle, monkeypatch):
    src = write_raster(tmp_path / "in.tif", random_rgb(600, 120))
    segment(src, tmp_path / "out" / "out.tif", bundle, runtime=IdentityRuntime())
    before = _files(tmp_path / "out")

    def failing(self, data):
        raise OutputError("cannot write the class raster")

    monkeypatch.setattr(inference._AlignedWriter, "_write", failing)
    with pytest.raises(OutputError):
        segment(src, tmp_path / "out" / "out.tif", bundle, runtime=IdentityRuntime(), overlap_io=True)
    assert _files(tmp_path / "out") == before


class _Boom(IdentityRuntime):
    def __init__(self, on_call: int, exc: BaseException) -> None:
        super().__init__()
        self.on_call, self.exc = on_call, exc

    def predict(self, batch):
        if len(self.calls) + 1 == self.on_call:
            raise self.exc
        return super().predict(batch)


@pytest.mark.parametrize("exc", [RuntimeError("network failed"), KeyboardInterrupt()])
def test_a_network_failure_mid_run_with_overlapped_io_leaves_nothing(tmp_path, bundle, exc):
    src = write_raster(tmp_path / "in.tif", random_rgb(400, 300))
    out_dir = tmp_path / "out"
    runtime = _Boom(3, exc)
    with pytest.raises(type(exc)):
        segment(src, out_dir / "out.tif", bundle, batch_size=2, runtime=runtime, overlap_io=True,
                confidence_path=out_dir / "conf.tif")
    assert len(runtime.calls) == 2
    assert list(out_dir.iterdir()) == []


def test_a_read_failure_in_the_reader_thread_leaves_nothing(tmp_path, bundle, monkeypatch):
    read = RasterSource.read
    calls = []

    def failing(self, *args, **kw):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise InputError("reading in.tif failed: the network drive went away")
        return read(self, *args, **kw)

    monkeypatch.setattr(RasterSource, "read", failing)
    src = write_raster(tmp_path / "in.tif", random_rgb(400, 200))
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match="network drive"):
        segment(src, out_dir / "out.tif", bundle, runtime=IdentityRuntime(), overlap_io=True)
    assert calls[2].startswith("landcover-read")
    assert list(out_dir.iterdir()) == []
