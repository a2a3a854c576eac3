"""Forks and spawns under funcsight: run with the launcher; prints one JSON line saying what every
process did (by pid), so the test can compare it with the store.

* 3 calls in the parent before any fork (still in its window when it forks: no flush in between);
* 2 ``fork`` and 2 ``spawn`` multiprocessing Processes, 5 calls each;
* 1 ``spawn`` Process running this script's own functions (imported there as ``__mp_main__``);
* a ``fork`` Pool of 2 that is closed and joined (its workers end normally);
* a ``fork`` Pool of 2 that is terminated (its workers get SIGTERM while idle).

Every wait is bounded: a child that hangs is reported (and killed), never waited for forever.
"""
import json
import multiprocessing as mp
import os
import time

import forkwork

JOIN_TIMEOUT_S = 30


def join_all(processes, report):
    for label, process in processes:
        process.join(JOIN_TIMEOUT_S)
        if process.is_alive():
            report["hung"].append(label)
            process.kill()
            process.join(5)
        report["exitcodes"][label] = process.exitcode


def script_work():
    return 1


def script_child(n):
    return sum(script_work() for _ in range(n))


def main():
    report = {"parent": os.getpid(), "hung": [], "exitcodes": {}, "pool_pids": []}
    for _ in range(3):
        forkwork.parent_work()
    processes = []
    for method in ("fork", "spawn"):
        context = mp.get_context(method)
        for index in range(2):
            process = context.Process(target=forkwork.run_child, args=(5,))
            process.start()
            processes.append((f"{method}{index}", process))
    process = mp.get_context("spawn").Process(target=script_child, args=(4,))
    process.start()
    processes.append(("spawn-script", process))
    join_all(processes, report)

    context = mp.get_context("fork")
    pool = context.Pool(2)
    report["pool_sum"] = sum(pool.map(forkwork.child_work, range(10), chunksize=1))
    report["pool_pids"] += [p.pid for p in pool._pool]
    pool.close()
    pool.join()

    pool = context.Pool(2)
    report["terminated_pool_sum"] = sum(pool.map(forkwork.child_work, range(6), chunksize=1))
    report["pool_pids"] += [p.pid for p in pool._pool]
    began = time.monotonic()
    pool.terminate()
    pool.join()
    report["terminate_s"] = round(time.monotonic() - began, 3)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
