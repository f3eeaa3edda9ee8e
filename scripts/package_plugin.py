"""Build the installable plugin zip: ``python scripts/package_plugin.py dist/landcover_plugin.zip``.

The zip holds one top folder ``landcover_plugin/`` (what QGIS's "Install from ZIP" expects) with the
plugin code, ``metadata.txt``, the icon, the ``backend`` package (including ``backend/bundles``, so
the default model ships when it has been trained) and the requirements files the worker's
installation hint points at. The plugin finds ``backend`` inside itself when installed this way.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = "landcover_plugin"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".part"}


def _files(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in SKIP_SUFFIXES and not path.is_symlink():
            out.append(path)
    return out


def build(out_zip: Path, repo: Path = REPO) -> list[str]:
    """Write the zip; returns the archive names written."""
    plugin = repo / "landcover_plugin"
    backend = repo / "backend"
    metadata = repo / "metadata.txt"
    for required in (plugin / "__init__.py", backend / "__init__.py", metadata):
        if not required.is_file():
            raise SystemExit(f"error: {required} is missing; run this from a complete Landcover checkout")
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(out_zip.name + ".part")
    names: list[str] = []
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(src: Path, arcname: str) -> None:
            zf.write(src, arcname)
            names.append(arcname)

        for path in _files(plugin):
            if path.name == "metadata.txt":
                continue  # the top-level metadata.txt is the source of truth (the plugin's is a symlink)
            add(path, f"{TOP}/{path.relative_to(plugin).as_posix()}")
        add(metadata, f"{TOP}/metadata.txt")
        for path in _files(backend):
            add(path, f"{TOP}/backend/{path.relative_to(backend).as_posix()}")
        for extra in ("requirements.txt", "requirements-nodeps.txt", "LICENSE", "README.md"):
            if (repo / extra).is_file():
                add(repo / extra, f"{TOP}/{extra}")
    tmp.replace(out_zip)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="zip to write, e.g. dist/landcover_plugin.zip")
    args = parser.parse_args(argv)
    names = build(args.output)
    bundles = sorted({n.split("/")[3] for n in names if n.startswith(f"{TOP}/backend/bundles/") and n.count("/") > 3})
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({len(names)} files, {size:.1f} MB; model bundles: {', '.join(bundles) or 'none'})")
    if "default" not in bundles:
        print("note: no default model bundle in backend/bundles/default; users must choose a model", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
