"""Which deployment a process runs, detected without configuration.

In order: ``service.version`` from the OpenTelemetry resource (``OTEL_RESOURCE_ATTRIBUTES``); the
git revision of the application's directory when it is a checkout (read from ``.git``), with
``-dirty-<hash>`` appended when sensed Python files differ from that revision (one ``git status``,
so two runs with different uncommitted code are two versions); else a fingerprint of the
application's Python files. Packages sensed through ``FUNCSIGHT_INCLUDE`` count too: an installed
distribution by its name and version, a package that is not installed (or installed editable) by
its files; with the git revision they add ``-pkgs-<hash>``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess

SOURCE_RESOURCE = "service.version"
SOURCE_GIT = "vcs.ref.head.revision"
SOURCE_FINGERPRINT = "code.fingerprint"

_SKIPPED_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".nox", "site-packages", "build", "dist"})
_MAX_FILES = 5_000


def detect_version(resource_version: str | None, app_dir: str, sensed=None) -> tuple[str, str]:
    """``sensed`` (a CodeSelector) says whether the directory rule applies and which packages
    FUNCSIGHT_INCLUDE adds; without it only ``app_dir`` counts."""
    if resource_version:
        return str(resource_version), SOURCE_RESOURCE
    uses_dir = getattr(sensed, "uses_app_dir", True)
    patterns = sensed.package_patterns() if sensed is not None else ()
    packages = package_fingerprint(patterns) if patterns else ""
    if uses_dir:
        revision = git_revision(app_dir)
        if revision:
            version = revision[:12]
            dirty = dirty_fingerprint(app_dir)
            if dirty:
                version += "-dirty-" + dirty
            if packages:
                version += "-pkgs-" + packages[:8]
            return version, SOURCE_GIT
    digest = hashlib.sha1()
    if uses_dir:
        digest.update(code_fingerprint(app_dir).encode())
    digest.update(packages.encode())
    return "code-" + digest.hexdigest()[:12], SOURCE_FINGERPRINT


def _git_root(start: str) -> str | None:
    directory = os.path.abspath(start)
    while True:
        if os.path.isdir(os.path.join(directory, ".git")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def dirty_fingerprint(app_dir: str, timeout_s: float = 5.0) -> str | None:
    """A hash of the Python files below ``app_dir`` that differ from the checked-out revision
    (modified, staged, added, deleted, untracked); None when the tree is clean or git cannot say."""
    root = _git_root(app_dir)
    if root is None:
        return None
    try:
        done = subprocess.run(
            ["git", "-C", app_dir, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", "*.py"],
            capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0 or not done.stdout:
        return None
    entries = done.stdout.decode("utf-8", "surrogateescape").split("\0")
    changed = []
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            index += 1  # the rename's source follows
        changed.append((path, status))
    digest = hashlib.sha1()
    for path, status in sorted(changed):
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
        try:
            with open(os.path.join(root, path), "rb") as handle:
                digest.update(hashlib.sha1(handle.read()).digest())
        except OSError:
            digest.update(b"(deleted)")
    return digest.hexdigest()[:8] if changed else None


def package_fingerprint(patterns: tuple[str, ...]) -> str:
    """A hash over the packages the patterns name: an installed distribution counts by its name and
    version (an upgrade is a new version), a package that is not installed, or installed editable,
    by its Python files. Patterns whose top-level name is itself a glob are skipped."""
    tops = sorted({p.lstrip("+").split(".")[0] for p in patterns} - {""})
    tops = [top for top in tops if not any(char in top for char in "*?[")]
    if not tops:
        return ""
    owners = {top: _same_named_owner(top) for top in tops}
    if any(found is None for found in owners.values()):
        # Scans every installed distribution's file list (~0.4 s with a hundred installed), so
        # only when a package is not the one of the same name (e.g. "yaml" from PyYAML).
        try:
            everyone = importlib.metadata.packages_distributions()
        except Exception:
            everyone = {}
        owners = {top: found if found is not None else everyone.get(top, ()) for top, found in owners.items()}
    digest = hashlib.sha1()
    for top in tops:
        digest.update(top.encode() + b"\0")
        dists = sorted(set(owners.get(top, ())))
        editable = False
        for name in dists:
            try:
                dist = importlib.metadata.distribution(name)
                digest.update(f"{name}=={dist.version}".encode() + b"\0")
                editable = editable or _is_editable(dist)
            except Exception:
                continue
        if not dists or editable:
            digest.update(_files_fingerprint(top).encode())
    return digest.hexdigest()[:12]


def _same_named_owner(top: str) -> list[str] | None:
    """``[name]`` when the distribution named like the package provides it (the usual case, found
    without scanning every distribution), else None (not known)."""
    try:
        dist = importlib.metadata.distribution(top)
        provided = (dist.read_text("top_level.txt") or "").split()
        if not provided:
            provided = {f.parts[0].removesuffix(".py") for f in dist.files or () if f.parts}
        return [dist.metadata["Name"]] if top in provided else None
    except Exception:
        return None


def _is_editable(dist) -> bool:
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (ValueError, OSError):
        return False
    return bool(direct.get("dir_info", {}).get("editable"))


def _files_fingerprint(top: str) -> str:
    """The Python files of the package (or the one file of the module) ``top``; "" if not found."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ""
    if spec is None:
        return ""
    if spec.submodule_search_locations:
        return "".join(code_fingerprint(directory) for directory in spec.submodule_search_locations)
    try:
        with open(spec.origin or "", "rb") as handle:
            return hashlib.sha1(handle.read()).hexdigest()[:12]
    except OSError:
        return ""


def git_revision(start: str) -> str | None:
    directory = os.path.abspath(start)
    while True:
        git = os.path.join(directory, ".git")
        if os.path.isdir(git):
            return _read_head(git)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _read_head(git_dir: str) -> str | None:
    try:
        with open(os.path.join(git_dir, "HEAD")) as handle:
            head = handle.read().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        ref_file = os.path.join(git_dir, ref)
        if os.path.isfile(ref_file):
            with open(ref_file) as handle:
                return handle.read().strip() or None
        packed = os.path.join(git_dir, "packed-refs")
        if os.path.isfile(packed):
            with open(packed) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
    except OSError:
        return None
    return None


def code_fingerprint(app_dir: str) -> str:
    digest = hashlib.sha1()
    count = 0
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as handle:
                    content = handle.read()
            except OSError:
                continue
            digest.update(os.path.relpath(path, app_dir).encode())
            digest.update(hashlib.sha1(content).digest())
            count += 1
            if count >= _MAX_FILES:
                return digest.hexdigest()[:12]
    return digest.hexdigest()[:12]
