"""Contract tests: the backend and the plugin agree on every rule that crosses the worker boundary.

The backend imports ``backend.contract``; the plugin loads the same file as ``landcover_plugin.contract``
(no QGIS needed for that). Each test runs one side's half and checks it with the other side's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import landcover_plugin.contract as plugin
from backend import contract as backend
from backend.bundle import load_bundle, resolve_model
from backend.cli import build_parser
from backend.inference import segment
from tests.backend.conftest import expected_classes
from tests.data.rasters import random_rgb, write_raster

REPO = Path(__file__).resolve().parents[2]


def test_the_plugin_loads_the_backends_contract_file_without_importing_the_backend_package() -> None:
    assert Path(plugin.__file__) == Path(backend.__file__) == REPO / "backend" / "contract.py"
    assert plugin.__name__ == "landcover_plugin.contract" and plugin is not backend
    code = "import sys, landcover_plugin.contract; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('backend', 'numpy', 'rasterio', 'onnxruntime', 'tensorflow', 'qgis')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ argv
ARGS = [
    dict(input="in.tif", output="out.tif"),
    dict(input="/data/ortho 2024.tif", output="/res/landcover.2024.tif", model="/m/b.json", overlap=16,
         batch_size=2, bands=(3, 2, 1), window=(10, 20, 30, 40), resample=True, confidence="/res/c.tif"),
    dict(input="ü.tif", output="карта.tif", model="untrained:Unet:resnet18", runtime="onnx", seed=7, overlap=0),
    dict(input="a.tif", output="b.tif", model="default", runtime="tensorflow", progress="none", batch_size=1),
]


@pytest.mark.parametrize("values", ARGS)
def test_the_plugins_argv_parses_with_the_backends_own_parser(values) -> None:
    sent = plugin.SegmentArgs(**values)
    argv = sent.command("/usr/bin/python3")
    assert argv[:4] == ["/usr/bin/python3", "-m", "backend", "segment"]
    received = backend.SegmentArgs.from_namespace(build_parser().parse_args(argv[3:]))
    assert asdict(received) == asdict(sent)


BATCH_ARGS = [
    dict(inputs=("a.tif",), outdir="out"),
    dict(inputs=("/d/sheets", "/d/ortho 2024.vrt", "/d/**/*.tif"), outdir="/res/батч", model="/m/b.json", workers=3,
         threads_per_worker=2, resume=True, chunk=4096, precision="int8", tta="d4"),
    dict(inputs=("x.tif",), outdir="o", scheduler="tcp://10.0.0.5:8786", precision="fp32", progress="none"),
]


@pytest.mark.parametrize("values", BATCH_ARGS)
def test_the_plugins_batch_argv_parses_with_the_backends_own_parser(values) -> None:
    sent = plugin.BatchArgs(**values)
    argv = sent.command("/usr/bin/python3")
    assert argv[:4] == ["/usr/bin/python3", "-m", "backend", "batch"]
    received = backend.BatchArgs.from_namespace(build_parser().parse_args(argv[3:]))
    assert asdict(received) == asdict(sent)  # and run_batch takes what the parser made


def test_the_batch_file_names_are_the_ones_the_backend_writes(tmp_path) -> None:
    from backend.batch import write_areas, write_mosaic

    out = write_raster(tmp_path / "a.tif", np.zeros((1, 8, 8), np.uint8))
    classes = resolve_model(None).classes
    write_mosaic(tmp_path / plugin.BATCH_MOSAIC_VRT, [out], classes, [])
    write_areas(tmp_path, [], classes)
    assert {p.name for p in tmp_path.iterdir()} >= {plugin.BATCH_MOSAIC_VRT, plugin.BATCH_MOSAIC_QML,
                                                    plugin.BATCH_AREAS_CSV, plugin.BATCH_AREAS_JSON}


def test_bad_band_and_window_text_is_an_input_error() -> None:
    assert backend.parse_bands("3, 2,1") == (3, 2, 1) and backend.parse_bands("") is None
    for text in ("0,1,2", "r,g,b"):
        with pytest.raises(backend.InputError, match="band"):
            backend.parse_bands(text)
    for text in ("1,2", "a,b,c,d", "1,2,3,4,5", "0,0,0,5"):
        with pytest.raises(backend.InputError, match="COL_OFF"):
            backend.parse_window(text)


# --------------------------------------------------------------------------- sidecar names
@pytest.mark.parametrize("name", ["landcover.2024.tif", "my map.tif", "карта ü.v2.TIFF", "plain.tif"])
def test_the_files_the_backend_writes_are_the_files_the_plugin_expects(tmp_path, bundle, identity, name) -> None:
    rgb = random_rgb(80, 90, seed=3)
    src = write_raster(tmp_path / "in.tif", rgb)
    out_dir = tmp_path / "out"
    result = segment(src, out_dir / name, bundle, runtime=identity)
    expected = plugin.output_files(out_dir / name)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in expected.all())
    stem = name[: -len(Path(name).suffix)]
    assert expected.qml.name == f"{stem}.qml"  # QGIS applies <stem>.qml on load: landcover.2024.qml
    assert plugin.output_files(result.done_event().output).areas_json == expected.areas_json
    areas = json.loads(expected.areas_json.read_text(encoding="utf-8"))
    counts = np.bincount(expected_classes(rgb).ravel(), minlength=5)
    assert [c["pixels"] for c in areas["classes"]] == counts.tolist()


def test_temp_names_are_recognised_by_both_sides(tmp_path) -> None:
    final = tmp_path / "landcover.2024.tif"
    tmp = backend.temp_path(final, pid=12)
    assert plugin.is_temp_of(tmp, final) and not plugin.is_temp_of(tmp, tmp_path / "landcover.tif")


def test_an_atomic_write_replaces_the_file_only_when_it_completes(tmp_path) -> None:
    final = tmp_path / "areas.json"
    final.write_text("old")
    with pytest.raises(OSError, match="disk full"), plugin.atomic_path(final) as tmp:
        tmp.write_text("half a tab")
        assert backend.is_temp_of(tmp, final) and final.read_text() == "old"  # the reader still sees the old one
        raise OSError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["areas.json"] and final.read_text() == "old"
    assert backend.write_text_atomic(final, "new ü") == final and final.read_text(encoding="utf-8") == "new ü"
    assert [p.name for p in tmp_path.iterdir()] == ["areas.json"]


# -------------------------------------------------------------------------- model lookup
def _bundle(folder: Path, name: str, weights: bool = True, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        (folder / "w.weights.h5").write_bytes(b"")
    data = {"format": 1, "name": name, "architecture": "Unet", "backbone": "resnet18", "weights": "w.weights.h5",
            "classes": [c.to_dict() for c in backend.LANDCOVER_CLASSES], **extra}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_model_resolution_gives_the_same_answer_on_both_sides(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LANDCOVER_MODELS_DIR", str(tmp_path))
    by_key = _bundle(tmp_path / "mykey", "my-model")
    top = _bundle(tmp_path, "toplevel")
    _bundle(tmp_path / "broken", "bad-arch", architecture="Nope")
    specs = {"mykey": by_key, "my-model": by_key, "toplevel": top, str(by_key): by_key, str(by_key.parent): by_key}
    for spec, path in specs.items():
        assert plugin.resolve_model(spec).source == resolve_model(spec).source == path, spec
    assert plugin.resolve_model("default").source == resolve_model("default").source
    assert plugin.resolve_model("untrained:fpn:resnet50").spec == resolve_model("untrained:fpn:resnet50").spec
    for spec in ("nothing", "broken", "untrained:Unet", str(tmp_path / "none.json")):
        with pytest.raises(plugin.LandcoverError) as p_err:
            plugin.resolve_model(spec)
        with pytest.raises(backend.LandcoverError) as b_err:
            resolve_model(spec)
        assert p_err.value.kind == b_err.value.kind == "model" and str(p_err.value) == str(b_err.value), spec
    listed = {(m.key, m.origin, m.error is None) for m in plugin.list_models()}
    assert {("mykey", "user", True), ("toplevel", "user", True), ("broken", "user", False)} <= listed


def test_a_bundle_the_plugin_lists_loads_in_the_backend_with_the_same_metadata(tmp_path) -> None:
    path = _bundle(tmp_path / "m", "m", tile_size=128, gsd_m=0.5, default_overlap=8, input_bands=3)
    info, full = plugin.load_model_info(path), load_bundle(path)
    for field in ("name", "architecture", "backbone", "tile_size", "input_bands", "gsd_m", "default_overlap",
                  "default_batch_size", "source", "overlap", "spec"):
        assert getattr(info, field) == getattr(full, field), field
    assert [c.to_dict() for c in info.classes] == [c.to_dict() for c in full.classes]


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kind", backend.ERROR_KINDS)
def test_each_error_kind_round_trips_through_the_protocol(kind) -> None:
    raised = backend.error_for_kind(kind, f"a {kind} problem; the fix")
    line = backend.encode_event(backend.ErrorEvent.from_error(raised))
    assert json.loads(line) == {"stage": "error", "kind": kind, "message": f"a {kind} problem; the fix"}
    event = plugin.decode_event(line)
    received = event.to_error("log")
    assert isinstance(received, plugin.ERROR_CLASSES[kind]) and received.kind == kind
    assert str(received) == str(raised) and received.details == "log"


def test_unknown_kinds_are_internal() -> None:
    event = plugin.decode_event('{"stage": "error", "kind": "cosmic-ray", "message": "m"}')
    assert isinstance(event.to_error(), plugin.InternalError)


def _cli(*args: str, python: str = sys.executable) -> tuple[int, list]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([python, "-m", "backend", *args, "--progress", "json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, [plugin.decode_event(line) for line in out.stdout.splitlines()]


def test_the_cli_reports_each_kind_of_user_mistake_in_its_error_event(tmp_path) -> None:
    image = write_raster(tmp_path / "in.tif", random_rgb(40, 40))
    cases = {
        "input": ("segment", str(tmp_path / "missing.tif"), str(tmp_path / "o.tif"), "--model", "untrained:Unet:r"),
        "model": ("segment", str(image), str(tmp_path / "o.tif"), "--model", "no-such-model"),
        "output": ("segment", str(image), str(tmp_path / "o.png"), "--model", "untrained:Unet:resnet18"),
    }
    for kind, args in cases.items():
        code, events = _cli(*args)
        assert code == 2 and isinstance(events[-1], plugin.ErrorEvent) and events[-1].kind == kind, (kind, events)
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.skipif(not Path("/usr/bin/python3").is_file(), reason="needs a Python without the backend's packages")
def test_a_python_without_the_packages_gets_a_dependency_error_event() -> None:
    code, events = _cli("doctor", python="/usr/bin/python3")  # Debian's system Python: no rasterio/onnxruntime
    assert code == 2 and events[-1].kind == "dependency" and "lacks the package" in events[-1].message


# ---------------------------------------------------------------------- tolerance and environment
def test_pixel_size_tolerance_is_one_rule() -> None:
    assert plugin.GSD_TOLERANCE == backend.GSD_TOLERANCE == 2.0
    assert not backend.gsd_is_far((0.5, 0.5), 0.25) and backend.gsd_is_far((0.51, 0.51), 0.25)
    assert backend.gsd_is_far((0.12, 0.12), 0.25) and not backend.gsd_is_far(None, 0.25)


def test_the_worker_environment_configures_tensorflow_and_finds_the_backend() -> None:
    env = plugin.worker_env({"PYTHONHOME": "/qgis", "PYTHONPATH": "/qgis/python", "PATH": "/bin"})
    assert env["PYTHONPATH"] == str(REPO) and "PYTHONHOME" not in env
    assert {k: env[k] for k in backend.TENSORFLOW_ENV} == backend.TENSORFLOW_ENV


def test_ground_distance_and_the_scale_rule():
    """Both sides measure ground metres with this formula and switch to them past the same tolerance."""
    from backend.contract import SCALE_TOLERANCE, ground_distance_m, ground_pixel_size

    # One degree of latitude and longitude on WGS84 (geodesy tables: 111,132 m at 45°; 111,320 m at the equator).
    assert ground_distance_m(0, 44.5, 0, 45.5) == pytest.approx(111_132, abs=5)
    assert ground_distance_m(-0.5, 0, 0.5, 0) == pytest.approx(111_320, abs=5)
    inside, outside = 1 + SCALE_TOLERANCE * 0.9, 1 + SCALE_TOLERANCE * 1.1
    assert ground_pixel_size((2.0, 2.0), (2.0 / inside, 2.0)) == (2.0, 2.0)  # true to scale: the CRS's metres
    assert ground_pixel_size((2.0, 2.0), (2.0 / outside, 2.0)) == (2.0 / outside, 2.0)
    assert ground_pixel_size((2.0, 2.0), (0.0, 0.0)) == (2.0, 2.0)  # no measurement: keep what the CRS says
