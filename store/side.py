"""Side stores: where a writer puts its windows when the store it was given cannot take them.

A side store is an ordinary funcsight store next to the store, named ``<store>.side-<pid>-<n>.db``
(the writing process's pid, and ``n`` counting up from 1 to the first name not taken). It is made
when the store file itself is unusable (corrupt, foreign, newer, altered: funcsight never modifies
it) and at exit for windows the store could not take. ``funcsight functions --db SIDE`` reads one;
``funcsight merge SIDE --db STORE`` folds it into the store; every read of a store names the side
stores beside it.
"""

from __future__ import annotations

import glob
import os
import re

_SIDE = re.compile(r"\.side-(\d+)-(\d+)\.db$")


def new_side_path(store: str, pid: int, directory: str | None = None) -> str:
    """The first ``<store>.side-<pid>-<n>.db`` not yet taken, in ``directory`` (default: the store's)."""
    base = os.path.basename(store) if directory is not None else store
    stem = os.path.join(directory, base) if directory is not None else base
    n = 1
    while os.path.lexists(f"{stem}.side-{pid}-{n}.db"):
        n += 1
    return f"{stem}.side-{pid}-{n}.db"


def side_stores(store: str) -> list[str]:
    """The side stores beside ``store``, oldest name first."""
    found = [p for p in glob.glob(glob.escape(store) + ".side-*.db") if _SIDE.search(p)]
    return sorted(found, key=lambda p: tuple(int(x) for x in _SIDE.search(p).groups()))


def writer_pid(side: str) -> int | None:
    """The pid of the process that made ``side`` (from its name), or None for another name."""
    match = _SIDE.search(side)
    return int(match.group(1)) if match else None
