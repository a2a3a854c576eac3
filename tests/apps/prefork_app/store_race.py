"""Several processes open a store that does not exist yet, at the same moment: what the workers of
a pre-fork server do when they write their first window (or, with a long export interval, their
last one on the way out) together.

``python store_race.py PROCESSES MAX_TRIALS DIR``: per trial, PROCESSES forked children wait on a
barrier and call ``open_for_writing`` on a fresh path in DIR. Stops at the first trial where a
child failed and prints one line per failure, then ``failed trials: N of M``.
"""
import multiprocessing
import os
import sys


def open_store(path, barrier, results):
    from funcsight.store.db import open_for_writing

    barrier.wait()
    try:
        open_for_writing(path).close()
        results.put("ok")
    except Exception as err:  # what a worker's store writer would get
        results.put(f"{type(err).__name__}: {err}")


def main():
    processes, trials, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    context = multiprocessing.get_context("fork")
    failed = done = 0
    for trial in range(trials):
        path = os.path.join(directory, f"race{trial}.db")
        barrier, results = context.Barrier(processes), context.Queue()
        children = [context.Process(target=open_store, args=(path, barrier, results)) for _ in range(processes)]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(60)
        done += 1
        errors = [outcome for outcome in outcomes if outcome != "ok"]
        for error in errors:
            print(f"trial {trial}: {error}")
        if errors:
            failed += 1
            break
    print(f"failed trials: {failed} of {done}", flush=True)


if __name__ == "__main__":
    main()
