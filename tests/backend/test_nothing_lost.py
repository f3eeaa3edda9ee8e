"""A failed run loses nothing: full disks, failed renames, bad output paths, huge batches, killed runs.

Write failures are real where the machine allows: ``RLIMIT_FSIZE`` makes libtiff's writes fail with
EFBIG in a subprocess (small sidecar writes still fit: a disk that "frees up"), a tmpfs that stays
full gives ENOSPC, and a sticky folder with another user's file refuses the rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backend.bundle import ModelBundle, load_bundle
from backend.contract import output_files
from backend.errors import InputError, ModelError, OutputError
from backend.inference import MAX_BATCH_SIZE, SegmentParams, segment
from backend.outputs import OutputSet, backup_path, remove_stale_temps, replace_problem
from tests.backend.conftest import IdentityRuntime
from tests.conftest import REPO
from tests.data.rasters import random_rgb, write_raster

LIBTIFF_NOISE = ("_tiffWriteProc", "TIFFAppendToStrip", "TIFFWrite")

#: Runs segment() with the identity runtime in a fresh process; options as JSON in argv[1].
DRIVER = textwrap.dedent("""
    import json, os, resource, sys, time
    opts = json.loads(sys.argv[1])
    full_at = None
    if opts.get("fsize"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (opts["fsize"], opts["fsize"]))
    if opts.get("uid"):
        os.setgid(opts["uid"]); os.setuid(opts["uid"])
    from pathlib import Path
    from backend.bundle import ModelBundle
    from backend.errors import LandcoverError
    from backend.inference import segment
    from tests.backend.conftest import IdentityRuntime
    import backend.write_guard as write_guard
    gdal_failure = write_guard.WriteGuard._gdal_failure
    def first_failure(self, message):
        global full_at
        if full_at is None:
            full_at = time.perf_counter()  # GDAL reports the failed write as it happens
        gdal_failure(self, message)
    write_guard.WriteGuard._gdal_failure = first_failure
    if opts.get("no_precheck"):
        import backend.outputs as outputs
        outputs.replace_problem = lambda final: None
        import backend.inference as inference
        inference.check_replaceable = lambda finals: None
    runtime = IdentityRuntime()
    calls = []
    folder = Path(opts["output"]).parent
    def disk_full():
        # A limit reached by the raster's temporary file, or a full disk, before GDAL reported a failure.
        if opts.get("fsize"):
            parts = folder.glob("." + Path(opts["output"]).name + ".part-*")
            return any(p.stat().st_size >= opts["fsize"] for p in parts)
        return os.statvfs(folder).f_bavail == 0
    predict = runtime.predict
    def timed(batch):
        global full_at
        now = time.perf_counter()
        if full_at is None and disk_full():
            full_at = now
        calls.append(now)
        time.sleep(opts.get("delay", 0))
        return predict(batch)
    runtime.predict = timed
    bundle = ModelBundle(name="t", architecture="Unet", backbone="resnet18", tile_size=opts.get("tile", 64),
                         gsd_m=0.25)
    code, message, failed_at = 0, "", None
    try:
        segment(opts["input"], opts["output"], bundle, runtime=runtime, batch_size=opts.get("batch", 1))
    except LandcoverError as exc:
        failed_at = time.perf_counter()
        code, message = exc.exit_code, str(exc)
        print(f"error: {exc}", file=sys.stderr)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"code": code, "message": message, "calls": [c - calls[0] for c in calls] if calls else [],
                      "failed_at": None if failed_at is None or not calls else failed_at - calls[0],
                      "full_at": None if full_at is None or not calls else full_at - calls[0],
                      "maxrss_kb": usage.ru_maxrss}))
    sys.exit(code)
""")


def run_driver(**opts) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    opts = {k: str(v) if isinstance(v, Path) else v for k, v in opts.items()}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(opts)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stderr
    return proc, json.loads(lines[-1])


def hashes(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (hidden ones too) and its SHA-256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def good_result(tmp_path: Path, out: Path, seed: int = 1, size: int = 96) -> dict[str, str]:
    """An earlier successful run into ``out``'s folder; the hashes of its set."""
    src = write_raster(tmp_path / f"earlier-{seed}.tif", random_rgb(size, size, seed=seed))
    bundle = ModelBundle(name="earlier", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25)
    segment(src, out, bundle, runtime=IdentityRuntime())
    before = hashes(out.parent)
    assert set(before) == {p.name for p in output_files(out).all()}
    return before


@pytest.fixture
def big_input(tmp_path) -> Path:
    # Random classes compress badly: the class raster is ~0.4 MB, far above the size limits below.
    return write_raster(tmp_path / "big.tif", random_rgb(1024, 1024, seed=7))


# ------------------------------------------------------------------------------- full disks


@pytest.mark.slow
def test_disk_full_during_the_raster_then_free_again_fails_and_keeps_the_earlier_result(tmp_path, big_input):
    """libtiff's writes fail (EFBIG through RLIMIT_FSIZE), the small sidecars would still fit."""
    out = tmp_path / "out" / "lc.tif"
    before = good_result(tmp_path, out)
    limit = 64 * 1024
    proc, report = run_driver(input=big_input, output=out, fsize=limit, delay=0.002)
    assert report["code"] == 2 and proc.returncode == 2, proc.stderr
    assert str(out) in report["message"] and "lc.qml" not in report["message"]
    assert "File too large" in report["message"] and "choose another folder" in report["message"]
    assert "\n" not in report["message"]
    assert not any(noise in proc.stderr for noise in LIBTIFF_NOISE), proc.stderr
    assert hashes(out.parent) == before  # byte-identical, and no hidden temporary file left
    assert_stopped_at_the_full_disk(report)


TOTAL_CALLS = 19 * 19  # tiles of 64 px every 56 px over 1024 x 1024, one per call


def assert_stopped_at_the_full_disk(report: dict) -> None:
    """No tile was predicted once the disk was full, and the run ended within a second of it."""
    assert report["full_at"] is not None, report
    after = [t for t in report["calls"] if t > report["full_at"]]
    stop = report["failed_at"] - report["full_at"]
    print(f"stopped {stop * 1000:.1f} ms after the disk filled; {len(report['calls'])} of {TOTAL_CALLS} calls, "
          f"{len(after)} after it")
    assert len(after) <= 1 and 0 <= stop < 1.0
    assert len(report["calls"]) < TOTAL_CALLS


def _mount_tmpfs(path: Path, size: str) -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True)
    return result.returncode == 0


@pytest.mark.slow
def test_a_disk_that_stays_full_stops_the_run_names_the_raster_and_keeps_the_earlier_result(tmp_path, big_input):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "lc.tif"
        before = good_result(tmp_path, out)
        filler = disk / "filler"
        with open(filler, "wb") as f:  # leave ~64 KiB
            free = shutil.disk_usage(disk).free - 64 * 1024
            f.write(b"\0" * max(0, free))
        before["filler"] = hashlib.sha256(filler.read_bytes()).hexdigest()
        proc, report = run_driver(input=big_input, output=out, delay=0.002)
        assert report["code"] == 2, proc.stderr
        assert report["message"].startswith(f"writing {out} failed (No space left on device)"), report["message"]
        assert "free space" in report["message"]
        assert not any(noise in proc.stderr for noise in LIBTIFF_NOISE), proc.stderr
        assert hashes(disk) == before
        assert_stopped_at_the_full_disk(report)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------------- renames


def test_a_rename_failing_in_the_middle_of_the_commit_rolls_back(tmp_path, monkeypatch):
    out = tmp_path / "out" / "lc.tif"
    before = good_result(tmp_path, out)
    src = write_raster(tmp_path / "new.tif", random_rgb(96, 96, seed=2))
    real_replace = os.replace
    calls = []

    def flaky(a, b, *args, **kw):
        calls.append((Path(a).name, Path(b).name))
        if len(calls) == 3:  # two sidecars are in place, the third rename fails
            raise OSError(5, "Input/output error")
        return real_replace(a, b, *args, **kw)

    monkeypatch.setattr(os, "replace", flaky)
    bundle = ModelBundle(name="new", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25)
    with pytest.raises(OutputError, match="could not replace .*previous result is unchanged"):
        segment(src, out, bundle, runtime=IdentityRuntime())
    assert len(calls) > 3  # the rollback renamed back
    assert hashes(out.parent) == before


def test_without_hard_links_the_previous_files_are_set_aside_and_restored(tmp_path, monkeypatch):
    out = tmp_path / "out" / "lc.tif"
    before = good_result(tmp_path, out)

    def no_links(*args, **kw):
        raise OSError(1, "Operation not permitted")

    real_replace = os.replace
    n = []

    def flaky(a, b, *args, **kw):
        n.append(1)
        if len(n) == 8:  # the 4th file: set aside, then its replacement fails
            raise OSError(13, "Permission denied")
        return real_replace(a, b, *args, **kw)

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "replace", flaky)
    src = write_raster(tmp_path / "new.tif", random_rgb(96, 96, seed=3))
    bundle = ModelBundle(name="new", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25)
    with pytest.raises(OutputError, match="could not replace"):
        segment(src, out, bundle, runtime=IdentityRuntime())
    assert hashes(out.parent) == before


@pytest.fixture
def public_tmp():
    """A folder other users can reach (pytest's tmp_path is private to root)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="landcover-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _sticky_folder_with_foreign_raster(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    shared = tmp_path / "shared"
    shared.mkdir()
    out = shared / "lc.tif"
    before = good_result(tmp_path, out)
    nobody = 65534
    for p in shared.iterdir():
        os.chown(p, nobody, nobody)  # the sidecars are the runner's own ...
    os.chown(out, 12345, 12345)  # ... the raster another user's
    os.chmod(out, 0o644)
    os.chmod(shared, 0o1777)
    return out, before


needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="needs root to create another user's file")


@needs_root
@pytest.mark.slow
def test_another_users_raster_in_a_sticky_folder_is_refused_before_any_work(public_tmp):
    out, before = _sticky_folder_with_foreign_raster(public_tmp)
    src = write_raster(public_tmp / "new.tif", random_rgb(96, 96, seed=4))
    os.chmod(src, 0o644)
    proc, report = run_driver(input=src, output=out, uid=65534)
    assert report["code"] == 2, proc.stderr
    assert str(out) in report["message"] and "another user" in report["message"]
    assert report["calls"] == []  # refused before predicting anything
    assert hashes(out.parent) == before


@needs_root
@pytest.mark.slow
def test_a_real_rename_failure_at_commit_rolls_back_the_sidecars(public_tmp):
    """With the up-front checks switched off, the kernel refuses the raster's rename (EPERM)."""
    out, before = _sticky_folder_with_foreign_raster(public_tmp)
    src = write_raster(public_tmp / "new.tif", random_rgb(96, 96, seed=5))
    os.chmod(src, 0o644)
    proc, report = run_driver(input=src, output=out, uid=65534, no_precheck=True)
    assert report["code"] == 2, proc.stderr
    assert f"could not replace {out}" in report["message"] and "unchanged" in report["message"], report
    assert report["calls"]  # the run did its work; only the commit failed
    assert hashes(out.parent) == before


def test_commit_checks_every_name_before_the_first_rename(tmp_path):
    folder = tmp_path / "o"
    folder.mkdir()
    (folder / "a.txt").write_text("old a")
    (folder / "b.txt").mkdir()
    outputs = OutputSet()
    outputs.write_text(folder / "a.txt", "new a")
    outputs.write_text(folder / "b.txt", "new b")
    with pytest.raises(OutputError, match="b.txt exists and is a folder"):
        outputs.commit()
    outputs.discard()
    assert (folder / "a.txt").read_text() == "old a" and sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]
    assert replace_problem(folder / "a.txt") is None and replace_problem(folder / "new.txt") is None


# ------------------------------------------------------------------------------- bad paths and options


@pytest.mark.parametrize("which", ["raster", "sidecar"])
def test_an_output_name_that_is_a_folder_is_refused_before_any_work(tmp_path, bundle, which):
    src = write_raster(tmp_path / "in.tif", random_rgb(100, 100))
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "X.tif"
    blocker = out if which == "raster" else output_files(out).areas_csv
    blocker.mkdir()
    runtime = IdentityRuntime()
    with pytest.raises(OutputError, match=f"{blocker.name} exists and is a folder"):
        segment(src, out, bundle, runtime=runtime)
    assert runtime.calls == []
    assert [p.name for p in folder.iterdir()] == [blocker.name] and not any(blocker.iterdir())


@pytest.mark.slow
def test_cli_output_folder_is_a_one_line_user_error(tmp_path):
    from tests.backend.test_cli import run_cli

    src = write_raster(tmp_path / "in.tif", random_rgb(50, 50))
    out = tmp_path / "X.tif"
    out.mkdir()
    result = run_cli("segment", str(src), str(out), "--progress", "json")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "is a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.tif", "in.tif"]


@pytest.mark.parametrize("batch", [MAX_BATCH_SIZE + 1, 100_000])
def test_absurd_batch_sizes_are_a_user_error_naming_the_limit(batch):
    with pytest.raises(InputError, match=f"--batch-size {batch} is above the limit of {MAX_BATCH_SIZE}"):
        SegmentParams(tile_size=256, overlap=32, batch_size=batch)


@pytest.mark.slow
def test_cli_batch_size_100000_exits_2_with_one_line(tmp_path):
    from tests.backend.test_cli import run_cli

    src = write_raster(tmp_path / "in.tif", random_rgb(400, 400))
    result = run_cli("segment", str(src), str(tmp_path / "o.tif"), "--batch-size", "100000", "--progress", "none")
    assert result.returncode == 2 and "above the limit" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_batch_larger_than_the_raster_gives_the_same_result_in_one_call(tmp_path, bundle):
    src = write_raster(tmp_path / "in.tif", random_rgb(150, 150, seed=9))
    small, big = IdentityRuntime(), IdentityRuntime()
    segment(src, tmp_path / "a.tif", bundle, runtime=small, batch_size=8)
    segment(src, tmp_path / "b.tif", bundle, runtime=big, batch_size=MAX_BATCH_SIZE)
    assert max(big.calls) == sum(small.calls)  # capped by the tile count, not padded to the batch
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


@pytest.mark.slow
def test_peak_memory_of_a_huge_batch_stays_that_of_a_normal_run(tmp_path):
    src = write_raster(tmp_path / "in.tif", random_rgb(400, 400, seed=3))
    peaks = {}
    for batch in (8, 1000, MAX_BATCH_SIZE):
        proc, report = run_driver(input=src, output=tmp_path / f"o{batch}.tif", batch=batch, tile=256)
        assert report["code"] == 0, proc.stderr
        peaks[batch] = report["maxrss_kb"]
    print("peak RSS kB:", peaks)
    assert peaks[1000] <= 1.5 * peaks[8] and peaks[MAX_BATCH_SIZE] <= 1.5 * peaks[8], peaks


# ------------------------------------------------------------------------------- killed runs


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the PID no longer exists (until reused, which only keeps files)
    return child.pid


def test_temporary_files_of_dead_runs_are_removed_and_those_of_live_runs_kept(tmp_path, bundle):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "lc.tif"
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [folder / f".lc.tif.part-{dead}", folder / f".lc.areas.csv.part-{dead}",
                 folder / f".other.tif.part-{dead}", folder / f".areas.csv.part-{dead}",  # and a batch's tables
                 folder / f".mosaic.vrt.part-{dead}", folder / f".areas.json.part-{dead}"]
        kept = [folder / f".lc.tif.part-{live.pid}", folder / f".lc.qml.part-{live.pid}",
                folder / f".notes.txt.part-{dead}", folder / "lc.tif.part-1"]
        for p in stale + kept:
            p.write_bytes(b"partial")
        src = write_raster(tmp_path / "in.tif", random_rgb(70, 70))
        segment(src, out, bundle, runtime=IdentityRuntime())
        names = {p.name for p in folder.iterdir()}
        assert not names & {p.name for p in stale}
        assert {p.name for p in kept} <= names
        assert {p.name for p in output_files(out).all()} <= names
    finally:
        live.kill()
        live.wait()


def test_a_previous_file_set_aside_by_a_killed_commit_is_put_back(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    final = folder / "lc.tif"
    dead = _dead_pid()
    aside = backup_path(final).with_name(backup_path(final).name.replace(f"-{os.getpid()}", f"-{dead}"))
    aside.write_bytes(b"the earlier result")
    (folder / "lc.qml").write_text("new style")
    qml_aside = folder / f".lc.qml.part-{dead}.old"
    qml_aside.write_text("old style")
    remove_stale_temps(folder)
    assert final.read_bytes() == b"the earlier result"  # the final name was missing: restored
    assert (folder / "lc.qml").read_text() == "new style" and not qml_aside.exists()


# ------------------------------------------------------------------------------- damaged model files


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    src = REPO / "backend" / "bundles" / "default"
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return next(dst.glob("*.json"))


def _truncate(path: Path, keep: float = 0.5) -> int:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return int(len(data) * keep)


def test_a_truncated_onnx_file_is_reported_as_truncated(bundle_copy):
    from backend.onnx_runtime import verified_onnx_path

    bundle = load_bundle(bundle_copy)
    size = _truncate(bundle.onnx.file)
    with pytest.raises(ModelError, match=rf"is truncated or corrupt \({size:,} bytes.*re-copy it") as info:
        verified_onnx_path(bundle)
    assert "retrained" not in str(info.value)


def test_truncated_weights_are_reported_as_truncated_not_retrained(bundle_copy):
    from backend.onnx_runtime import verified_onnx_path

    bundle = load_bundle(bundle_copy)
    if bundle.weights is None or not bundle.onnx.weights_sha256:
        pytest.skip("the default bundle records no weights checksum")
    size = _truncate(bundle.weights)
    with pytest.raises(ModelError, match=rf"weights file .* is truncated or corrupt \({size:,} bytes of the") as info:
        verified_onnx_path(bundle)
    assert "retrained" not in str(info.value)


def test_a_whole_but_different_weights_file_is_still_reported_as_other_weights(bundle_copy):
    from backend.onnx_runtime import verified_onnx_path

    bundle = load_bundle(bundle_copy)
    if bundle.weights is None or not bundle.onnx.weights_sha256:
        pytest.skip("the default bundle records no weights checksum")
    data = bytearray(bundle.weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    bundle.weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="retrained"):
        verified_onnx_path(bundle)


def test_load_weights_reports_a_truncated_file(bundle_copy):
    pytest.importorskip("h5py")
    from backend.models import load_weights

    bundle = load_bundle(bundle_copy)
    _truncate(bundle.weights, 0.3)
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_weights(object(), bundle.weights)



@pytest.mark.slow
def test_no_write_limit_ends_in_success_with_a_broken_raster(tmp_path):
    """A file-size limit anywhere in the raster's life — blocks, the last strip, the directory written at close —
    is a failed run with the earlier result kept, never exit 0 with a raster that cannot be read (found by
    ``make soak``: a failure while closing was only a libtiff line on stderr)."""
    import numpy as np
    import rasterio

    src = write_raster(tmp_path / "in.tif", random_rgb(512, 512, seed=3))
    out = tmp_path / "out" / "lc.tif"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "backend", "segment", str(src), str(out), "--progress", "none"]
    subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True)
    good = hashes(out.parent)
    size = out.stat().st_size
    code = ("import resource, signal, subprocess, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2)\n"
            "sys.exit(subprocess.run(sys.argv[2:]).returncode)\n")
    failed = 0
    for limit in np.linspace(600, size - 1, 24).astype(int):
        run = subprocess.run([sys.executable, "-c", code, str(limit), *argv], cwd=REPO, env=env, capture_output=True,
                             text=True)
        if run.returncode == 0:
            with rasterio.open(out) as ds:
                ds.read(1)  # raises on a truncated or corrupt raster
        else:
            failed += 1
            assert run.returncode == 2 and "File too large" in run.stderr and "Traceback" not in run.stderr
            assert "_tiffWriteProc" not in run.stderr  # libtiff's own lines stay off the terminal
            assert hashes(out.parent) == good
    assert failed >= 20  # the limits lie below the raster's size: nearly every run must fail


def test_a_zombie_process_counts_as_dead_so_its_temp_files_are_cleaned(tmp_path):
    """A killed worker whose parent died too stays a zombie where nothing reaps it (containers without init)."""
    import os
    import time

    from backend.outputs import pid_alive, remove_stale_temps

    pid = os.fork()
    if pid == 0:  # the child exits at once and is not waited for yet: a zombie
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.01)
        assert not pid_alive(pid)
        stale = tmp_path / f".sheet.tif.part-{pid}"
        stale.write_bytes(b"half a raster")
        assert remove_stale_temps(tmp_path) == [stale] and not stale.exists()
    finally:
        os.waitpid(pid, 0)
    assert pid_alive(os.getppid())
