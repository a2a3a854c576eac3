"""Which deployment a process runs, detected without configuration.

In order: ``service.version`` from the OpenTelemetry resource (``OTEL_RESOURCE_ATTRIBUTES``); the
git revision of the application's directory when it is a checkout (read from ``.git``, no
subprocess); a fingerprint of the application's Python files.
"""

from __future__ import annotations

import hashlib
import os

SOURCE_RESOURCE = "service.version"
SOURCE_GIT = "vcs.ref.head.revision"
SOURCE_FINGERPRINT = "code.fingerprint"

_SKIPPED_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".nox", "site-packages", "build", "dist"})
_MAX_FILES = 5_000


def detect_version(resource_version: str | None, app_dir: str) -> tuple[str, str]:
    if resource_version:
        return str(resource_version), SOURCE_RESOURCE
    revision = git_revision(app_dir)
    if revision:
        return revision[:12], SOURCE_GIT
    return "code-" + code_fingerprint(app_dir), SOURCE_FINGERPRINT


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
