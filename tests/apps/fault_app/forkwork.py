"""Work done in forked and spawned children (a module of its own, so every process names it alike)."""


def parent_work():
    return 1


def child_work(n):
    return n * 2


def run_child(k):
    for i in range(k):
        child_work(i)
    return k
