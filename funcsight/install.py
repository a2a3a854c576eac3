"""How to install funcsight (or one of its extras) the way that works here.

funcsight is not on PyPI: ``pip install funcsight`` fails. It installs from a checkout
(``pip install '/path/to/funcsight[demo]'``) or from a wheel built there (``python -m build``,
then ``pip install 'dist/funcsight-<version>-<tags>.whl[demo]'``). Hints printed by funcsight name
what this installation came from (PEP 610 ``direct_url.json``), so they can be pasted as they are.
"""

from __future__ import annotations

import json
import os
from urllib.parse import unquote, urlparse

_GENERIC = "/path/to/funcsight"  # shown when the installation does not say where it came from


def installed_from() -> tuple[str | None, bool]:
    """(local path funcsight was installed from, whether editable); (None, False) if unknown."""
    direct = {}
    try:
        from importlib.metadata import distributions

        for dist in distributions(name="funcsight"):  # a checkout's own egg-info may come first
            text = dist.read_text("direct_url.json")
            if text:
                direct = json.loads(text)
                break
    except Exception:
        return None, False
    url = urlparse(direct.get("url", ""))
    if url.scheme != "file":
        return None, False
    return unquote(url.path), bool(direct.get("dir_info", {}).get("editable"))


def install_hint(extra: str | None = None) -> str:
    """The pip command that installs funcsight with ``extra`` from where this copy came from."""
    source, editable = installed_from()
    suffix = f"[{extra}]" if extra else ""
    if source is None:
        return (f"pip install '{_GENERIC}{suffix}' (a checkout, or the wheel `python -m build` makes there; "
                "funcsight is not on PyPI)")
    if os.path.isdir(source):
        return f"pip install {'-e ' if editable else ''}'{source}{suffix}'"
    return f"pip install '{source}{suffix}'"  # a wheel or sdist file


__all__ = ["install_hint", "installed_from"]
