"""``python -m backend batch``: sheets and mosaics on Dask, resumable, robust to lost workers and bad sheets.

The integration tests run the real default model on small rasters, on a LocalCluster or on a
``dask scheduler`` + ``dask worker`` started here; each compares with plain ``segment`` runs.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from backend.batch import (
    Item,
    Manifest,
    chunk_windows,
    dask_client,
    expand_inputs,
    local_layout,
    plan,
    run_batch,
)
from backend.bundle import resolve_model
from backend.cli import main
from backend.contract import BATCH_MANIFEST as MANIFEST
from backend.contract import BatchArgs
from backend.errors import InputError, OutputError
from backend.inference import segment
from backend.onnx_runtime import file_sha256
from tests.data.rasters import write_raster

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo" / "orthophoto.tif"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "SM_FRAMEWORK": "tf.keras", "TF_USE_LEGACY_KERAS": "1"}


def demo_crop(path: Path, row: int, col: int, height: int, width: int) -> Path:
    """A piece of the demo orthophoto (real-looking content) as its own georeferenced GeoTIFF."""
    from rasterio.windows import Window

    with rasterio.open(DEMO) as src:
        window = Window(col, row, width, height)
        data, transform, crs = src.read(window=window), src.window_transform(window), src.crs
    return write_raster(path, data, crs=crs.to_string(), transform=transform)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


# ------------------------------------------------------------------------------------------- planning


@pytest.mark.parametrize("height,width,chunk", [(600, 700, 256), (256, 256, 256), (1000, 300, 512), (9000, 9500, 8192)])
def test_chunk_windows_cover_the_raster_once_on_block_borders(height, width, chunk):
    covered = np.zeros((height, width), np.int8)
    for col, row, w, h in chunk_windows(height, width, chunk):
        assert col % 256 == 0 and row % 256 == 0 and w <= chunk + 255 and h <= chunk + 255
        covered[row:row + h, col:col + w] += 1
    assert (covered == 1).all()


def test_plan_makes_one_item_per_sheet_and_per_chunk_with_unique_outputs(tmp_path):
    sizes = {"a/x.tif": (200, 250), "b/x.tif": (100, 100), "big.vrt": (600, 530)}
    rasters = [tmp_path / name for name in sizes]
    items = plan(rasters, tmp_path / "out", 256, size_of=lambda p: sizes[str(p.relative_to(tmp_path))])
    sheets = [i for i in items if i.chunk is None]
    chunks = [i for i in items if i.chunk is not None]
    assert [i.key for i in sheets] == ["x", "x_2"]  # same file name in two folders: both kept
    assert len(chunks) == len(chunk_windows(600, 530, 256)) and all(i.input.endswith("big.vrt") for i in chunks)
    assert len({i.output for i in items}) == len(items)
    assert sheets[0] == Item("x", str(rasters[0]), str(tmp_path / "out" / "x.tif"))


def test_inputs_are_files_folders_and_globs(tmp_path):
    for name in ("a.tif", "b.tiff", "notes.txt", ".hidden.tif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.tif").write_bytes(b"x")
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["a.tif", "b.tiff"]
    assert [p.name for p in expand_inputs([str(tmp_path / "**" / "*.tif")])] == ["a.tif", "c.tif"]
    assert [p.name for p in expand_inputs([str(tmp_path / "a.tif"), str(tmp_path)])] == ["a.tif", "b.tiff"]
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs([str(tmp_path / "nope.tif")])
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jp2")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no rasters"):
        expand_inputs([str(tmp_path / "empty")])


@pytest.mark.parametrize("bad,message", [
    ({"inputs": ()}, "nothing to segment"), ({"chunk": 1000}, "multiple of 256"), ({"workers": 0}, "at least 1"),
    ({"threads_per_worker": 0}, "THREADS"),
    ({"scheduler": "tcp://x:1", "workers": 2}, "with --scheduler"), ({"precision": "int4"}, "unknown precision"),
    ({"tta": "d8"}, "test-time augmentation"),
])
def test_batch_args_are_checked(tmp_path, bad, message):
    with pytest.raises(InputError, match=message):
        BatchArgs(**{"inputs": ("a.tif",), "outdir": tmp_path, **bad})


def test_local_layout_fills_the_cores():
    assert local_layout(None, None, cores=8) == (8, 1)
    assert local_layout(None, 4, cores=8) == (2, 4)
    assert local_layout(2, None, cores=8) == (2, 4)
    assert local_layout(3, 3, cores=2) == (3, 3)


def test_manifest_keeps_the_newest_record_and_ignores_a_torn_line(tmp_path):
    manifest = Manifest(tmp_path / MANIFEST)
    manifest.append({"key": "a", "status": "failed"})
    manifest.append({"key": "a", "status": "ok"})
    manifest.append({"key": "b", "status": "ok"})
    with open(manifest.path, "a") as f:
        f.write('{"key": "c", "sta')  # a run killed mid-write
    assert {k: r["status"] for k, r in manifest.records().items()} == {"a": "ok", "b": "ok"}


# ------------------------------------------------------------------------------------------- on Dask


@pytest.fixture(scope="module")
def sheets(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sheets")
    for k, (row, col) in enumerate([(0, 0), (512, 1024), (1400, 300)]):
        demo_crop(folder / f"sheet_{k}.tif", row, col, 384, 448)
    return folder


@pytest.mark.slow
def test_a_folder_with_a_corrupt_sheet_maps_the_others_and_says_which_failed(sheets, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sheets.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.tif").write_bytes(b"II*\x00" + os.urandom(3000))
    out = tmp_path / "out"
    code = main(["batch", str(folder), str(out), "--workers", "2", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "3 done, 1 failed" in err and "broken.tif" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    records = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["failed", "ok", "ok", "ok"]
    bundle = resolve_model(None)
    for r in records:
        if r["status"] == "ok":
            solo = segment(r["input"], tmp_path / "solo" / Path(r["output"]).name, bundle)
            assert np.array_equal(read(Path(r["output"])), read(solo.output))
            assert r["sha256"] == file_sha256(Path(r["output"])) and r["seconds"] > 0
    failed = next(r for r in records if r["status"] == "failed")
    assert "broken.tif" in failed["input"] and failed["error"] and not Path(failed["output"]).exists()
    # The mosaic shows the three sheets; the totals are the sums of the sheets.
    with rasterio.open(out / "mosaic.vrt") as vrt:
        assert vrt.colormap(1)[1][:3] == tuple(bundle.classes[1].color) and vrt.nodata == 255
        assert (vrt.read(1) != 255).sum() == 3 * 384 * 448
    rows = list(csv.DictReader((out / "areas.csv").open()))
    for name in bundle.class_names:
        per_sheet = sum(int(r["pixels"]) for r in rows if r["class"] == name and r["item"] != "TOTAL")
        assert per_sheet == next(int(r["pixels"]) for r in rows if r["class"] == name and r["item"] == "TOTAL")
    total = json.loads((out / "areas.json").read_text())
    assert total["valid_pixels"] == 3 * 384 * 448 and (out / "mosaic.qml").is_file()


@pytest.mark.slow
def test_a_mosaic_in_chunks_equals_one_segment_of_it(tmp_path):
    mosaic = demo_crop(tmp_path / "mosaic.tif", 300, 200, 700, 900)
    out = tmp_path / "out"
    result = run_batch(BatchArgs((str(mosaic),), out, chunk=256, workers=2))
    assert result.succeeded == len(chunk_windows(700, 900, 256)) and not result.failed
    whole = segment(mosaic, tmp_path / "whole.tif", resolve_model(None))
    with rasterio.open(result.mosaic) as vrt, rasterio.open(whole.output) as ref:
        assert (vrt.width, vrt.height, vrt.crs, vrt.transform) == (ref.width, ref.height, ref.crs, ref.transform)
        np.testing.assert_array_equal(vrt.read(1), ref.read(1))
    assert result.areas["valid_pixels"] == 700 * 900
    assert [c["pixels"] for c in result.areas["classes"]] == [c["pixels"] for c in whole.areas.to_dict()["classes"]]


@pytest.mark.slow
def test_resume_after_the_whole_batch_is_killed_redoes_only_what_is_missing(sheets, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(8):
        (folder / f"s{k}.tif").write_bytes((sheets / f"sheet_{k % 3}.tif").read_bytes())
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "backend", "batch", str(folder), str(out), "--workers", "1", "--progress", "none"]
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(Manifest(out / MANIFEST).records()) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    done_before = Manifest(out / MANIFEST).records()
    assert 2 <= len(done_before) < 8
    result = run_batch(BatchArgs((str(folder),), out, resume=True, workers=1))
    assert result.skipped == len(done_before) and result.succeeded == 8 - len(done_before) and not result.failed
    for k in range(8):
        assert np.array_equal(read(out / f"s{k}.tif"), read(out / f"s{k % 3}.tif"))  # same content, same result
    leftovers = [p.name for p in out.iterdir() if ".part" in p.name]
    assert not leftovers
    with pytest.raises(OutputError, match="--resume"):
        run_batch(BatchArgs((str(folder),), out, workers=1))


@pytest.mark.slow
def test_a_worker_killed_mid_run_does_not_change_the_result(sheets, tmp_path):
    """Dask re-runs the tasks of a lost worker: the batch completes with the outputs of an undisturbed run."""
    from distributed import Client, LocalCluster

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(6):
        (folder / f"s{k}.tif").write_bytes((sheets / f"sheet_{k % 3}.tif").read_bytes())
    killed: list[int] = []

    def kill_a_busy_worker(client: Client) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                time.sleep(0.1)  # let it start loading the model and reading
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    from contextlib import contextmanager

    @contextmanager
    def cluster_with_a_killer(params):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          memory_limit=None) as cluster, Client(cluster) as client:
            killer = threading.Thread(target=kill_a_busy_worker, args=(client,), daemon=True)
            killer.start()
            yield client, 1
            killer.join(5)

    out = tmp_path / "out"
    result = run_batch(BatchArgs((str(folder),), out), client_factory=cluster_with_a_killer)
    assert killed, "no worker was killed"
    assert result.succeeded == 6 and not result.failed
    records = Manifest(out / MANIFEST).records()
    assert all(r["worker_pid"] not in killed for r in records.values())  # every item finished on a live worker
    for k in range(6):
        assert np.array_equal(read(out / f"s{k}.tif"), read(out / f"s{k % 3}.tif"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_scheduler_that_does_not_answer_is_one_clear_error(tmp_path, capsys, sheets):
    address = f"tcp://127.0.0.1:{_free_port()}"
    code = main(["batch", str(sheets), str(tmp_path / "out"), "--scheduler", address, "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and f"no Dask scheduler answers at {address}" in err and "dask scheduler" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_separately_started_scheduler_and_worker_run_the_batch(sheets, tmp_path):
    dask = Path(sys.executable).with_name("dask")
    info = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(dask), "scheduler", "--scheduler-file", str(info), "--no-dashboard",
                               "--host", "127.0.0.1", "--port", "0"], env=ENV, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not info.is_file():
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen([str(dask), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard"], env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        out = tmp_path / "out"
        result = run_batch(BatchArgs((str(sheets),), out, scheduler=address))
        assert result.succeeded == 3 and not result.failed
        records = Manifest(out / MANIFEST).records()
        assert {r["worker_pid"] for r in records.values()} != {os.getpid()}
        bundle = resolve_model(None)
        for r in records.values():
            solo = segment(r["input"], tmp_path / "solo" / Path(r["output"]).name, bundle)
            assert np.array_equal(read(Path(r["output"])), read(solo.output))
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def test_dask_client_without_dask_names_the_fix(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_dask(name, *args, **kw):
        if name.startswith("distributed"):
            raise ImportError("No module named 'distributed'")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(Exception, match="Dask") as exc, dask_client(BatchArgs(("a",), tmp_path)):
        pass
    assert exc.value.kind == "dependency"


def test_an_output_folder_holding_inputs_is_refused_before_any_work(tmp_path):
    write_raster(tmp_path / "a.tif", np.zeros((3, 16, 16), np.uint8))
    started = []
    with pytest.raises(InputError, match="inside the output folder"):
        run_batch(BatchArgs((str(tmp_path),), tmp_path), client_factory=lambda p: started.append(p))
    assert not started and not (tmp_path / MANIFEST).exists()
