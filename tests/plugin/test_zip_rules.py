"""scripts/check_plugin_zip.py applies the plugins.qgis.org rules; scripts/package_plugin.py builds a zip that passes.

Each rule test starts from a small zip that passes every rule and breaks exactly one thing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.plugin.helpers import REPO

SCRIPTS = REPO / "scripts"


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checker = _load("check_plugin_zip")
packager = _load("package_plugin")

META = {
    "name": "Tiny",
    "qgisMinimumVersion": "3.22",
    "description": "A tiny plugin.",
    "about": "Does tiny things, for tests.",
    "version": "1.0.0",
    "author": "Tiny Author",
    "email": "tiny.author@qgis.org",
    "tracker": "https://github.com/tiny-author/tiny/issues",
    "repository": "https://github.com/tiny-author/tiny",
    "homepage": "https://github.com/tiny-author/tiny",
    "icon": "icon.png",
    "experimental": "False",
}
INIT = b"def classFactory(iface):\n    from .plugin import Tiny\n    return Tiny(iface)\n"


def metadata_text(meta: dict[str, str | None]) -> str:
    """``[general]`` with the given fields (a None value leaves the field out)."""
    return "[general]\n" + "".join(f"{k}={v}\n" for k, v in meta.items() if v is not None)


def good_files(top: str = "tiny") -> dict[str, bytes]:
    return {
        f"{top}/__init__.py": INIT,
        f"{top}/plugin.py": b"class Tiny:\n    def __init__(self, iface):\n        self.iface = iface\n",
        f"{top}/metadata.txt": metadata_text(META).encode(),
        f"{top}/LICENSE": b"GPL-2.0-or-later\n",
        f"{top}/icon.png": b"\x89PNG\r\n\x1a\n",
    }


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
        path = tmp_path / f"plugin{next(counter)}.zip"
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return path

    return make


def with_meta(**changes: str | None) -> dict[str, bytes]:
    files = good_files()
    files["tiny/metadata.txt"] = metadata_text({**META, **changes}).encode()
    return files


def assert_error(report, *words: str) -> None:
    assert report.errors, "expected an error, the report has none"
    assert any(all(w in e for w in words) for e in report.errors), report.errors


# --------------------------------------------------------------------------------------------- the baseline


def test_good_zip_has_no_findings(make_zip) -> None:
    path = make_zip(good_files())
    report = checker.check_zip(path)
    assert report.errors == () and report.warnings == ()
    assert report.size == path.stat().st_size and report.ok


def test_report_is_frozen(make_zip) -> None:
    report = checker.check_zip(make_zip(good_files()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.errors = ()


# --------------------------------------------------------------------------------------------------- archive


def test_too_big(make_zip) -> None:
    path = make_zip(good_files())
    size = path.stat().st_size
    assert checker.check_zip(path, max_bytes=size).ok  # the limit itself is allowed, as in the validator
    report = checker.check_zip(path, max_bytes=size - 1)
    assert_error(report, "over the repository's limit")
    assert checker.MAX_ZIP_BYTES == 25_000_000


def test_incompressible_payload_counts_at_its_zip_size(make_zip) -> None:
    import os

    path = make_zip({**good_files(), "tiny/blob.bin": os.urandom(300_000)})
    assert_error(checker.check_zip(path, max_bytes=250_000), "MB")


def test_missing_license(make_zip) -> None:
    files = good_files()
    del files["tiny/LICENSE"]
    files["tiny/LICENSE.txt"] = b"GPL\n"  # the validator wants exactly <package>/LICENSE
    assert_error(checker.check_zip(make_zip(files)), "tiny/LICENSE is missing")


@pytest.mark.parametrize("name", ["__init__.py", "metadata.txt"])
def test_missing_plugin_file(make_zip, name: str) -> None:
    files = good_files()
    del files[f"tiny/{name}"]
    assert_error(checker.check_zip(make_zip(files)), f"tiny/{name} is missing")


@pytest.mark.parametrize("member,word", [
    ("tiny/__pycache__/plugin.cpython-311.pyc", "__pycache__"),
    ("tiny/__pycache__/readme.txt", "__pycache__"),
    ("tiny/plugin.pyc", ".pyc"),
    ("tiny/.git/config", ".git"),
    ("tiny/__MACOSX/x", "__MACOSX"),
])
def test_forbidden_members(make_zip, member: str, word: str) -> None:
    assert_error(checker.check_zip(make_zip({**good_files(), member: b"x"})), member, word)


@pytest.mark.parametrize("member", ["tiny/.gitignore", "tiny/.DS_Store", "tiny/.idea/workspace.xml"])
def test_hidden_members(make_zip, member: str) -> None:
    assert_error(checker.check_zip(make_zip({**good_files(), member: b"x"})), member, "hidden")


def test_path_traversal(make_zip) -> None:
    assert_error(checker.check_zip(make_zip({**good_files(), "tiny/../evil.py": b"x"})), "path information")


def test_two_top_folders(make_zip) -> None:
    path = make_zip({**good_files(), "other/readme.txt": b"x"})
    assert_error(checker.check_zip(path), "2 top-level folders", "tiny", "other")


def test_file_at_top_level(make_zip) -> None:
    assert_error(checker.check_zip(make_zip({**good_files(), "README.md": b"x"})), "'README.md'", "top level")


@pytest.mark.parametrize("top", ["Tiny", "tiny-plugin", "1tiny", "t", "class"])
def test_bad_package_name(make_zip, top: str) -> None:
    assert_error(checker.check_zip(make_zip(good_files(top))), "not a valid package name", repr(top))


def test_no_class_factory(make_zip) -> None:
    files = {**good_files(), "tiny/__init__.py": b"def class_factory(iface):\n    return None\n"}
    assert_error(checker.check_zip(make_zip(files)), "classFactory")


def test_class_factory_may_be_imported(make_zip) -> None:
    files = {**good_files(), "tiny/__init__.py": b"from .plugin import classFactory  # noqa\n"}
    assert checker.check_zip(make_zip(files)).ok


def test_crc_error(make_zip) -> None:
    payload = b"PAYLOAD-" * 64
    path = make_zip({**good_files(), "tiny/data.txt": payload}, compression=zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    at = raw.index(payload)
    raw[at + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert_error(checker.check_zip(path), "tiny/data.txt")


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "plugin.zip"
    path.write_bytes(b"not a zip at all")
    assert_error(checker.check_zip(path), "cannot open")


# -------------------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("field", checker.REQUIRED_METADATA)
def test_missing_required_field(make_zip, field: str) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(**{field: None}))), f"'{field}'", "missing")


def test_empty_required_field(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(about=""))), "'about'", "empty")


def test_field_names_are_case_sensitive(make_zip) -> None:
    files = with_meta(qgisMinimumVersion=None)
    files["tiny/metadata.txt"] += b"qgisminimumversion=3.22\n"
    assert_error(checker.check_zip(make_zip(files)), "'qgisMinimumVersion'", "missing")


def test_no_general_section(make_zip) -> None:
    files = {**good_files(), "tiny/metadata.txt": metadata_text(META).replace("[general]", "[plugin]").encode()}
    assert_error(checker.check_zip(make_zip(files)), "[general]")


def test_percent_breaks_the_parser(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(about="100% tiny"))), "cannot be parsed")


def test_metadata_not_utf8(make_zip) -> None:
    files = {**good_files(), "tiny/metadata.txt": metadata_text({**META, "author": "Jürgen"}).encode("latin-1")}
    assert_error(checker.check_zip(make_zip(files)), "cannot be parsed")


@pytest.mark.parametrize("version", ["one.two", "1.2.3.4.5", "1..2", "v1.0 beta 2 x", "1.0/2"])
def test_bad_version(make_zip, version: str) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(version=version))), "version", repr(version))


@pytest.mark.parametrize("version", ["0.2.0", "1", "version 1.2", "1.0.0-beta1", "2.3.1.4"])
def test_good_version(make_zip, version: str) -> None:
    assert checker.check_zip(make_zip(with_meta(version=version))).ok


@pytest.mark.parametrize("field,value", [("qgisMinimumVersion", "3"), ("qgisMinimumVersion", "3.x"),
                                         ("qgisMaximumVersion", "latest")])
def test_bad_qgis_version(make_zip, field: str, value: str) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(**{field: value}))), field, repr(value))


def test_max_below_min(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(qgisMaximumVersion="3.16"))), "above qgisMaximumVersion")


@pytest.mark.parametrize("email", ["not-an-email", "tiny@localhost-only", "a b@qgis.org", "tiny@", "@qgis.org"])
def test_bad_email(make_zip, email: str) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(email=email))), "email", repr(email))


def test_author_with_slash(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(author="Tiny/Author"))), "author")


@pytest.mark.parametrize("field", ["tracker", "repository", "homepage"])
@pytest.mark.parametrize("url", ["https://example.org/tiny", "http://www.example.com/tiny/issues",
                                 "http://localhost:8000/tiny", "https://127.0.0.1/tiny", "https://tiny.test/"])
def test_placeholder_url_is_a_warning_not_an_error(make_zip, field: str, url: str) -> None:
    report = checker.check_zip(make_zip(with_meta(**{field: url})))
    assert report.errors == (), report.errors
    assert any(field in w and url in w and "placeholder" in w for w in report.warnings), report.warnings


def test_placeholder_email_is_a_warning(make_zip) -> None:
    report = checker.check_zip(make_zip(with_meta(email="tiny@example.org")))
    assert report.ok and any("placeholder" in w and "tiny@example.org" in w for w in report.warnings)


@pytest.mark.parametrize("field", ["tracker", "repository", "homepage"])
@pytest.mark.parametrize("url", ["ftp://github.com/tiny", "github.com/tiny", "https  ://github.com/tiny",
                                 "https:///tiny"])
def test_bad_url(make_zip, field: str, url: str) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(**{field: url}))), field, "http(s) URL")


@pytest.mark.parametrize("field,template", list(checker.URL_METADATA.items()))
def test_template_url(make_zip, field: str, template: str) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(**{field: template}))), field, "template default")


def test_missing_homepage(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(homepage=None))), "homepage")


def test_boolean_flag(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(experimental="yes"))), "experimental")
    assert checker.check_zip(make_zip(with_meta(experimental="true", deprecated="0"))).ok


def test_html_in_about(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(about="Does <b>tiny</b> things."))), "about", "HTML")
    assert checker.check_zip(make_zip(with_meta(about="Raster > Tiny > Run; 1 < 2"))).ok


def test_icon_missing(make_zip) -> None:
    assert_error(checker.check_zip(make_zip(with_meta(icon="icons/tiny.png"))), "icon", "icons/tiny.png")
    assert checker.check_zip(make_zip(with_meta(icon="./icon.png"))).ok


# ---------------------------------------------------------------------------------------------- command line


def test_cli_exit_codes_and_output(make_zip, capsys) -> None:
    bad = good_files()
    del bad["tiny/LICENSE"]
    assert checker.main([str(make_zip(bad))]) == 1
    out = capsys.readouterr().out
    assert "error: tiny/LICENSE is missing" in out and "FAILED" in out and " MB " in out

    assert checker.main([str(make_zip(with_meta(tracker="https://example.com/t")))]) == 0
    out = capsys.readouterr().out
    assert "warning: metadata.txt: tracker" in out and "error:" not in out
    assert out.rstrip().splitlines()[-1].startswith("ok: ")


# ------------------------------------------------------------------------------------------------- packager


def _fake_repo(root: Path) -> Path:
    (root / "landcover_plugin").mkdir(parents=True)
    (root / "landcover_plugin" / "__init__.py").write_bytes(INIT)
    (root / "landcover_plugin" / "plugin.py").write_text("class Tiny:\n    pass\n")
    (root / "landcover_plugin" / "icon.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "landcover_plugin" / "__pycache__").mkdir()
    (root / "landcover_plugin" / "__pycache__" / "plugin.cpython-311.pyc").write_bytes(b"x")
    meta = {**META, "name": "Landcover"}
    (root / "metadata.txt").write_text(metadata_text(meta))
    (root / "landcover_plugin" / "metadata.txt").symlink_to("../metadata.txt")
    backend = root / "backend"
    (backend / "requirements").mkdir(parents=True)
    (backend / "__init__.py").write_text("")
    (backend / "requirements" / "runtime.txt").write_text("numpy\n")
    (backend / "requirements" / "dev.txt").write_text("pytest\n")
    onnx_bundle = backend / "bundles" / "default"
    onnx_bundle.mkdir(parents=True)
    (onnx_bundle / "landcover.json").write_text(json.dumps(
        {"weights": "landcover.weights.h5", "onnx": {"file": "landcover.onnx"},
         "onnx_int8": {"file": "landcover.int8.onnx"}}))
    (onnx_bundle / "landcover.weights.h5").write_bytes(b"tf weights")
    (onnx_bundle / "landcover.int8.onnx").write_bytes(b"onnx int8")
    (onnx_bundle / "landcover.onnx").write_bytes(b"fp32 export: too big to ship beside the int8 one")
    float_only = backend / "bundles" / "floatonly"
    float_only.mkdir()
    (float_only / "m.json").write_text(json.dumps({"onnx": {"file": "m.onnx"}}))
    (float_only / "m.onnx").write_bytes(b"fp32 only")
    tf_only = backend / "bundles" / "tfonly"
    tf_only.mkdir()
    (tf_only / "model.json").write_text(json.dumps({"weights": "model.weights.h5"}))
    (tf_only / "model.weights.h5").write_bytes(b"tf weights")
    for extra in ("LICENSE", "README.md", "requirements.txt", "requirements-nodeps.txt"):
        (root / extra).write_text(extra)
    return root


def test_packager_ships_only_what_the_plugin_needs(tmp_path: Path, capsys) -> None:
    repo = _fake_repo(tmp_path / "repo")
    out = tmp_path / "dist" / "landcover_plugin.zip"
    names = packager.build(out, repo=repo)
    assert sorted(names) == sorted(zipfile.ZipFile(out).namelist())
    top = "landcover_plugin"
    assert f"{top}/backend/bundles/default/landcover.json" in names
    assert f"{top}/backend/bundles/default/landcover.int8.onnx" in names  # the INT8 export, not both
    assert f"{top}/backend/bundles/floatonly/m.onnx" in names  # the float one when there is no INT8 export
    assert not [n for n in names if n.endswith(".h5") or n.endswith("/landcover.onnx") or "/tfonly/" in n], names
    assert "no ONNX export" in capsys.readouterr().err
    assert f"{top}/backend/requirements/runtime.txt" in names
    assert f"{top}/backend/requirements/dev.txt" not in names
    assert f"{top}/LICENSE" in names and f"{top}/README.md" in names and f"{top}/metadata.txt" in names
    assert f"{top}/requirements.txt" not in names and f"{top}/requirements-nodeps.txt" not in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert checker.check_zip(out).ok


def test_packager_refuses_a_missing_onnx_file(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path / "repo")
    (repo / "backend" / "bundles" / "default" / "landcover.int8.onnx").unlink()
    with pytest.raises(SystemExit, match="landcover.int8.onnx"):
        packager.build(tmp_path / "out.zip", repo=repo)


def test_packager_fails_on_check_errors_and_keeps_the_zip(tmp_path: Path, monkeypatch, capsys) -> None:
    repo = _fake_repo(tmp_path / "repo")
    (repo / "LICENSE").unlink()
    build = packager.build
    monkeypatch.setattr(packager, "build", lambda out_zip: build(out_zip, repo=repo))
    out = tmp_path / "out.zip"
    assert packager.main([str(out)]) == 1
    assert out.is_file()
    assert "error: landcover_plugin/LICENSE is missing" in capsys.readouterr().out
    assert packager.main([str(out), "--no-check"]) == 0


def test_real_package_passes_the_repository_rules(tmp_path: Path) -> None:
    """The zip `make package` builds from this checkout: what ships, and the repository's verdict.

    The size assertion holds because one export per bundle ships: with the 28.8 MB float export beside
    the INT8 one the zip would be ~40 MB.
    """
    out = tmp_path / "landcover_plugin.zip"
    run = subprocess.run([sys.executable, str(SCRIPTS / "package_plugin.py"), str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.is_file(), run.stdout + run.stderr
    names = zipfile.ZipFile(out).namelist()
    assert "landcover_plugin/LICENSE" in names
    assert not [n for n in names if n.endswith(".weights.h5")]
    assert not [n for n in names if "__pycache__" in n or ".pyc" in n]
    assert "landcover_plugin/requirements.txt" not in names
    default = REPO / "backend" / "bundles" / "default"
    for bundle_json in sorted(default.glob("*.json")):
        data = json.loads(bundle_json.read_text())
        assert f"landcover_plugin/backend/bundles/default/{data['onnx_int8']['file']}" in names
        assert f"landcover_plugin/backend/bundles/default/{data['onnx']['file']}" not in names
    report = checker.check_zip(out)
    assert run.returncode == (0 if report.ok else 1), run.stdout + run.stderr
    assert "MB" in run.stdout and checker.format_report(report, out).splitlines()[-1] in run.stdout
    assert report.errors == (), report.errors
    assert out.stat().st_size <= 25_000_000
