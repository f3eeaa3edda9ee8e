"""Check a built plugin zip against the upload rules of plugins.qgis.org: ``python scripts/check_plugin_zip.py ZIP``.

The rules follow the repository's own validator (``qgis-app/plugins/validator.py`` in QGIS-Django), the
QGIS metadata table (PyQGIS cookbook, "Structuring Python Plugins") and the release guidelines, plus a few
project rules that keep the zip honest (one top folder, no hidden files, ``classFactory`` present, icon present).

Every violation is an error. The repository also requires the tracker, repository and homepage URLs to be
reachable; that needs the internet, so placeholder URLs (``example.org``, ``localhost``...) are only reported as
warnings here and must be replaced before the real upload. Exit status: 1 when there is an error, 0 otherwise.
Pure standard library, so it runs anywhere (``scripts/package_plugin.py`` calls :func:`check_zip`).
"""

from __future__ import annotations

import argparse
import ast
import configparser
import ipaddress
import keyword
import re
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

#: plugins.qgis.org's PLUGIN_MAX_UPLOAD_SIZE: 25,000,000 bytes ("25 mb", decimal megabytes).
MAX_ZIP_BYTES = 25_000_000
#: plugins.qgis.org's PLUGIN_REQUIRED_METADATA (keys are case-sensitive: the validator sets optionxform = str).
REQUIRED_METADATA = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker",
                     "repository")
#: Flags the repository reads as ``value.lower() in ("true", "1")``; any other value silently means False.
BOOLEAN_METADATA = ("experimental", "deprecated", "server")
BOOLEAN_VALUES = ("true", "false", "1", "0")
#: URL fields the validator checks, with the template default it rejects explicitly.
URL_METADATA = {"tracker": "http://bugs", "repository": "http://repo", "homepage": "http://homepage"}
#: Path components the validator rejects anywhere in the archive.
FORBIDDEN_DIRS = ("__MACOSX", ".git", "__pycache__")
#: Fields the metadata table says must not contain HTML.
PLAIN_TEXT_METADATA = ("description", "about", "changelog")
#: Hosts that are never a real project's address (RFC 2606 / RFC 6761 names, loopback).
PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net", "localhost")
PLACEHOLDER_TLDS = (".example", ".invalid", ".test", ".localhost", ".local")

VERSION_RE = re.compile(r"\d+(\.\d+){0,3}([-._+]?[A-Za-z][A-Za-z0-9]*)?")
QGIS_VERSION_RE = re.compile(r"\d+\.\d+(\.\d+)?")
EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one thing.

    Attributes:
        level: ``"error"`` (the upload would be refused, or the zip breaks a project rule) or ``"warning"``.
        text: What is wrong and, where useful, how to fix it.
    """

    level: str
    text: str


def error(text: str) -> Finding:
    """An error finding."""
    return Finding("error", text)


def warning(text: str) -> Finding:
    """A warning finding."""
    return Finding("warning", text)


@dataclass(frozen=True)
class Report:
    """The result of :func:`check_zip`.

    Attributes:
        errors: Violations; any of them means plugins.qgis.org (or a project rule) refuses the zip.
        warnings: Things to fix before a real upload that cannot be decided offline (placeholder URLs).
        size: Size of the zip in bytes.
        limit: The size limit it was checked against, in bytes.
    """

    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    size: int
    limit: int = MAX_ZIP_BYTES

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    @property
    def size_mb(self) -> float:
        """Size in decimal megabytes, the unit of the repository's limit."""
        return self.size / 1e6


# ----------------------------------------------------------------------------------------------- archive rules


def check_size(size: int, limit: int = MAX_ZIP_BYTES) -> list[Finding]:
    """The zip must not exceed the repository's upload limit (validator: ``package.size > PLUGIN_MAX_UPLOAD_SIZE``).

    Args:
        size: Zip size in bytes.
        limit: Maximum size in bytes.

    Returns:
        One error when the zip is too big.
    """
    if size > limit:
        return [error(f"zip is {size / 1e6:.1f} MB, over the repository's limit of {limit / 1e6:.1f} MB "
                      f"({size:,} > {limit:,} bytes)")]
    return []


def check_integrity(zf: zipfile.ZipFile) -> list[Finding]:
    """Every member must decompress with a correct CRC (validator: ``zip.testzip()``).

    Args:
        zf: The open archive.

    Returns:
        One error naming the first bad member.
    """
    try:
        bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
        return [error(f"zip cannot be read: {exc}")]
    return [error(f"bad zip member (CRC error): {bad}")] if bad else []


def check_paths(names: Iterable[str]) -> list[Finding]:
    """No absolute paths or ``..`` in member names (validator: "zip file cannot contain path information").

    Args:
        names: Archive member names.

    Returns:
        One error per offending member.
    """
    return [error(f"member {name!r} has path information ('..' or a leading '/'); the repository refuses it")
            for name in names if ".." in name or name.startswith(("/", "\\"))]


def check_forbidden(names: Iterable[str]) -> list[Finding]:
    """No compiled Python and no ``__MACOSX``, ``.git`` or ``__pycache__`` folders (validator, "security reasons").

    The validator refuses any member whose name contains ``.pyc`` (so ``.pyc`` files and anything named like them).

    Args:
        names: Archive member names.

    Returns:
        One error per offending member.
    """
    found = []
    for name in names:
        if ".pyc" in name:
            found.append(error(f"member {name!r} is (named like) compiled Python (.pyc); the repository refuses it"))
        bad_dirs = [part for part in name.split("/") if part in FORBIDDEN_DIRS]
        if bad_dirs:
            found.append(error(f"member {name!r} is inside a {bad_dirs[0]!r} folder; the repository refuses it"))
    return found


def check_hidden(names: Iterable[str]) -> list[Finding]:
    """No hidden files or folders (``.gitignore``, ``.DS_Store``...): the release guidelines call them useless stuff.

    Project rule; ``.git`` itself is reported by :func:`check_forbidden`.

    Args:
        names: Archive member names.

    Returns:
        One error per member with a hidden path component.
    """
    found = []
    for name in names:
        hidden = [part for part in name.split("/") if part.startswith(".") and part not in FORBIDDEN_DIRS
                  and part not in (".", "..")]
        if hidden:
            found.append(error(f"member {name!r} is or is inside a hidden file/folder {hidden[0]!r}"))
    return found


def top_folders(names: Iterable[str]) -> list[str]:
    """The distinct first path components, in archive order (the validator takes the first member's)."""
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(name.split("/", 1)[0], None)
    return list(seen)


def check_top_folder(names: list[str]) -> list[Finding]:
    """Exactly one top-level folder, and no file at the top level.

    The validator uses the first member's folder as the plugin and only warns about others ("only the first
    folder has been recognized"); QGIS's installer unpacks them all into the plugins folder. Project rule: error.

    Args:
        names: Archive member names.

    Returns:
        Errors for an empty zip, top-level files and extra top folders.
    """
    if not names:
        return [error("zip is empty")]
    found = [error(f"member {name!r} sits at the top level; everything must be inside the plugin folder")
             for name in names if "/" not in name]
    folders = [top for top in top_folders(names) if any(n.startswith(top + "/") for n in names)]
    if len(folders) > 1:
        found.append(error(f"zip has {len(folders)} top-level folders ({', '.join(folders)}); it must have exactly "
                           f"one, the plugin package"))
    return found


def check_package_name(package: str) -> list[Finding]:
    """The plugin folder name must be accepted by the repository and importable by QGIS.

    Validator: ``^[A-Za-z][A-Za-z0-9-_]+$`` for every upload and ``^[a-z_][a-z0-9_]*$`` (PEP 8) for new plugins;
    QGIS imports the folder as a Python package, so it must also be an identifier and not a keyword.

    Args:
        package: The top-level folder name.

    Returns:
        One error when the name breaks a rule.
    """
    if (re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]+", package) and re.fullmatch(r"[a-z_][a-z0-9_]*", package)
            and package.isidentifier() and not keyword.iskeyword(package)):
        return []
    return [error(f"plugin folder {package!r} is not a valid package name: start with a lowercase ASCII letter, "
                  f"then lowercase letters, digits and '_' only (at least 2 characters)")]


def check_required_files(names: list[str], package: str) -> list[Finding]:
    """``__init__.py``, ``metadata.txt`` and ``LICENSE`` (no extension) must be in the plugin folder.

    Validator: "Cannot find __init__.py", metadata.txt (required since QGIS 2.0; the release docs list it as
    mandatory), and "Cannot find LICENSE in the plugin package" (mandatory since June 2024).

    Args:
        names: Archive member names.
        package: The plugin folder.

    Returns:
        One error per missing file.
    """
    members = set(names)
    return [error(f"{package}/{required} is missing")
            for required in ("__init__.py", "metadata.txt", "LICENSE") if f"{package}/{required}" not in members]


def _defines(node: ast.stmt, name: str) -> bool:
    """Whether a module-level statement defines or imports ``name``."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name == name
    if isinstance(node, ast.ImportFrom):
        return any((alias.asname or alias.name) == name for alias in node.names)
    return False


def check_class_factory(init_source: bytes, package: str) -> list[Finding]:
    """``__init__.py`` must define ``classFactory(iface)``, which QGIS calls to load the plugin (cookbook).

    Args:
        init_source: The bytes of ``<package>/__init__.py``.
        package: The plugin folder, for messages.

    Returns:
        One error when the file does not parse or defines no top-level ``classFactory``.
    """
    try:
        tree = ast.parse(init_source, filename=f"{package}/__init__.py")
    except (SyntaxError, ValueError) as exc:
        return [error(f"{package}/__init__.py does not parse: {exc}")]
    defined = any(_defines(node, "classFactory") for node in tree.body)
    return [] if defined else [error(f"{package}/__init__.py defines no classFactory(iface); QGIS cannot load it")]


# ---------------------------------------------------------------------------------------------- metadata rules


def parse_metadata(data: bytes) -> tuple[dict[str, str] | None, list[Finding]]:
    """Parse ``metadata.txt`` the way the repository does.

    UTF-8, :class:`configparser.ConfigParser` with case-sensitive keys and its default interpolation (so a bare
    ``%`` is an error there, and in QGIS's own parser), section ``[general]``.

    Args:
        data: The bytes of ``metadata.txt``.

    Returns:
        The ``[general]`` items (None when unreadable) and the errors found.
    """
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(data.decode("utf-8"))
        if not parser.has_section("general"):
            return None, [error("metadata.txt has no [general] section")]
        return dict(parser.items("general")), []
    except (UnicodeDecodeError, configparser.Error) as exc:
        return None, [error(f"metadata.txt cannot be parsed: {exc}")]


def check_required_metadata(meta: Mapping[str, str]) -> list[Finding]:
    """Every required field is present and not empty (validator list; the upload view refuses empty ones).

    Args:
        meta: The ``[general]`` items.

    Returns:
        One error per missing or empty field.
    """
    return [error(f"metadata.txt: required field {key!r} is {'empty' if key in meta else 'missing'}")
            for key in REQUIRED_METADATA if not meta.get(key, "").strip()]


def check_version(meta: Mapping[str, str]) -> list[Finding]:
    """``version`` is a short dotted version (metadata table), at most 32 characters (the repository's field).

    Like the repository, a leading word is dropped ("version 1.2" means 1.2). Accepted: 1 to 4 numbers and an
    optional suffix such as ``-beta1``.

    Args:
        meta: The ``[general]`` items.

    Returns:
        One error when the version is malformed.
    """
    raw = meta.get("version", "").strip()
    if not raw:
        return []
    version = raw.rsplit(" ", 1)[-1]
    if len(version) > 32 or not VERSION_RE.fullmatch(version):
        return [error(f"metadata.txt: version {raw!r} is not a dotted version such as 0.2.0")]
    return []


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_qgis_versions(meta: Mapping[str, str]) -> list[Finding]:
    """``qgisMinimumVersion`` (and ``qgisMaximumVersion`` if set) are dotted QGIS versions, min <= max.

    Args:
        meta: The ``[general]`` items.

    Returns:
        Errors for malformed or inconsistent versions.
    """
    found = []
    parsed = {}
    for key in ("qgisMinimumVersion", "qgisMaximumVersion"):
        value = meta.get(key, "").strip()
        if not value:
            continue
        if QGIS_VERSION_RE.fullmatch(value):
            parsed[key] = _version_tuple(value)
        else:
            found.append(error(f"metadata.txt: {key} {value!r} is not a QGIS version such as 3.22"))
    if len(parsed) == 2 and parsed["qgisMinimumVersion"] > parsed["qgisMaximumVersion"]:
        found.append(error("metadata.txt: qgisMinimumVersion is above qgisMaximumVersion"))
    return found


def check_email(meta: Mapping[str, str]) -> list[Finding]:
    """``email`` is an address (the repository stores it in an EmailField); a placeholder domain is a warning.

    Args:
        meta: The ``[general]`` items.

    Returns:
        An error for a malformed address, a warning for a placeholder one.
    """
    email = meta.get("email", "").strip()
    if not email:
        return []
    if not EMAIL_RE.fullmatch(email):
        return [error(f"metadata.txt: email {email!r} is not an email address")]
    host = email.rsplit("@", 1)[1]
    if is_placeholder_host(host):
        return [warning(f"metadata.txt: email {email!r} is a placeholder address; use a real one before uploading")]
    return []


def check_author(meta: Mapping[str, str]) -> list[Finding]:
    """``author`` must not contain a slash (validator: "Author name cannot contain slashes").

    Args:
        meta: The ``[general]`` items.

    Returns:
        One error when it does.
    """
    return [error("metadata.txt: author cannot contain '/'")] if "/" in meta.get("author", "") else []


def is_placeholder_host(host: str) -> bool:
    """Whether ``host`` cannot be a project's public address (example domains, loopback, single-label names).

    Args:
        host: A host name or IP address (no port).

    Returns:
        True for placeholder hosts.
    """
    host = host.lower().rstrip(".").strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ("." not in host or host.endswith(PLACEHOLDER_TLDS)
                or any(host == d or host.endswith("." + d) for d in PLACEHOLDER_DOMAINS))
    return not ip.is_global


def check_urls(meta: Mapping[str, str]) -> list[Finding]:
    """``tracker``, ``repository`` and ``homepage`` are http(s) URLs; placeholders are warnings.

    The validator parses all three (a missing homepage parses as an empty URL and is refused too), rejects the
    template defaults (``http://bugs``...), needs a scheme and a host, then sends an HTTP HEAD request and
    refuses status >= 400 or no answer, which makes http(s) the only schemes that pass. Reachability is not
    checked here (offline); placeholder hosts are reported instead.

    Args:
        meta: The ``[general]`` items.

    Returns:
        Errors for missing/malformed URLs, warnings for placeholder ones.
    """
    found = []
    for key, template in URL_METADATA.items():
        url = meta.get(key, "").strip()
        if not url:
            if key == "homepage":  # tracker and repository are reported by check_required_metadata
                found.append(error("metadata.txt: homepage is missing or empty; the repository's URL check "
                                   "refuses an empty homepage"))
            continue
        if url == template:
            found.append(error(f"metadata.txt: {key} is the template default {template!r}"))
            continue
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            parts, host = None, ""
        if parts is None or parts.scheme not in ("http", "https") or not host:
            found.append(error(f"metadata.txt: {key} {url!r} is not an http(s) URL with a host"))
        elif is_placeholder_host(host):
            found.append(warning(f"metadata.txt: {key} {url!r} is a placeholder; the repository checks that it is "
                                 f"reachable, so set the real address before uploading"))
    return found


def check_booleans(meta: Mapping[str, str]) -> list[Finding]:
    """``experimental``, ``deprecated`` and ``server`` are True/False (the repository reads anything else as False).

    Args:
        meta: The ``[general]`` items.

    Returns:
        One error per flag with another value.
    """
    return [error(f"metadata.txt: {key}={meta[key]!r} must be True or False (the repository would read it as False)")
            for key in BOOLEAN_METADATA if key in meta and meta[key].strip().lower() not in BOOLEAN_VALUES]


def check_plain_text(meta: Mapping[str, str]) -> list[Finding]:
    """``description``, ``about`` and ``changelog`` contain no HTML (metadata table: "no HTML allowed").

    Args:
        meta: The ``[general]`` items.

    Returns:
        One error per field with an HTML tag.
    """
    return [error(f"metadata.txt: {key} contains HTML ({match.group(0)!r}); HTML is not allowed")
            for key in PLAIN_TEXT_METADATA if (match := HTML_TAG_RE.search(meta.get(key, "")))]


def check_icon(meta: Mapping[str, str], names: Iterable[str], package: str) -> list[Finding]:
    """The ``icon`` file, when named, is in the plugin folder (the repository silently drops a missing one).

    Args:
        meta: The ``[general]`` items.
        names: Archive member names.
        package: The plugin folder.

    Returns:
        One error when the icon is missing.
    """
    icon = meta.get("icon", "").strip()
    if not icon:
        return []
    path = icon[2:] if icon.startswith("./") else icon
    if f"{package}/{path}" not in set(names):
        return [error(f"metadata.txt: icon {icon!r} is not in the zip ({package}/{path})")]
    return []


def check_metadata(meta: Mapping[str, str], names: list[str], package: str) -> list[Finding]:
    """All metadata rules.

    Args:
        meta: The ``[general]`` items.
        names: Archive member names.
        package: The plugin folder.

    Returns:
        Every finding of the metadata rules.
    """
    return [*check_required_metadata(meta), *check_version(meta), *check_qgis_versions(meta), *check_email(meta),
            *check_author(meta), *check_urls(meta), *check_booleans(meta), *check_plain_text(meta),
            *check_icon(meta, names, package)]


# ------------------------------------------------------------------------------------------------------ driver


def _findings(zf: zipfile.ZipFile) -> list[Finding]:
    names = zf.namelist()
    found = [*check_integrity(zf), *check_paths(names), *check_forbidden(names), *check_hidden(names),
             *check_top_folder(names)]
    if not names or "/" not in names[0]:
        return [*found, error("cannot find the plugin folder: the first member is not inside a folder")]
    package = names[0].split("/", 1)[0]
    found += check_package_name(package)
    found += check_required_files(names, package)
    if f"{package}/__init__.py" in names:
        found += check_class_factory(zf.read(f"{package}/__init__.py"), package)
    if f"{package}/metadata.txt" in names:
        meta, problems = parse_metadata(zf.read(f"{package}/metadata.txt"))
        found += problems
        if meta is not None:
            found += check_metadata(meta, names, package)
    return found


def check_zip(path: str | Path, max_bytes: int = MAX_ZIP_BYTES) -> Report:
    """Apply every rule to the plugin zip at ``path``.

    Args:
        path: The zip to check.
        max_bytes: Size limit in bytes (the repository's 25 MB by default).

    Returns:
        The report: errors, warnings and the zip's size.
    """
    path = Path(path)
    size = path.stat().st_size
    found = check_size(size, max_bytes)
    try:
        with zipfile.ZipFile(path) as zf:
            found += _findings(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        found.append(error(f"cannot open {path} as a zip: {exc}"))
    return Report(errors=tuple(f.text for f in found if f.level == "error"),
                  warnings=tuple(f.text for f in found if f.level == "warning"), size=size, limit=max_bytes)


def format_report(report: Report, path: str | Path) -> str:
    """The report as printed: ``error: ...`` and ``warning: ...`` lines, then a summary with the size.

    Args:
        report: What :func:`check_zip` returned.
        path: The zip, for the summary line.

    Returns:
        The text, without a trailing newline.
    """
    lines = [*(f"error: {e}" for e in report.errors), *(f"warning: {w}" for w in report.warnings)]
    verdict = "FAILED" if report.errors else "ok"
    lines.append(f"{verdict}: {path}: {report.size_mb:.1f} MB (limit {report.limit / 1e6:.1f} MB), "
                 f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: check one zip, print the report, exit 1 on errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zip", type=Path, help="the plugin zip, e.g. dist/landcover_plugin.zip")
    args = parser.parse_args(argv)
    if not args.zip.is_file():
        print(f"error: {args.zip} does not exist", file=sys.stderr)
        return 1
    report = check_zip(args.zip)
    print(format_report(report, args.zip))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
