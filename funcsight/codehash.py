"""The code hash: a short hash of what a function does (bytecode, constants, names), nested code
included, so a deployment diff can tell a changed function from a changed behaviour. One home:
the sensor records it, the language server recomputes it for the file being edited."""

from __future__ import annotations

import hashlib
from types import CodeType


def code_hash(code: CodeType) -> str:
    digest = hashlib.sha1()
    _feed(digest, code)
    return digest.hexdigest()[:16]


def _feed(digest, code: CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, CodeType):
            _feed(digest, const)
        else:
            digest.update(repr(const).encode())
