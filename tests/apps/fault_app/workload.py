"""The functions the in-process concurrency scenarios (scenarios.py) exercise."""
import asyncio

REACHED = 0


def leaf(x):
    return x + 1


def handle(n):
    return leaf(n) + leaf(n + 1) + leaf(n + 2)


async def ainner(i):
    await asyncio.sleep(0)
    return leaf(i)


async def atask(i):
    return await ainner(i) + await ainner(i + 1)


async def deep_sleep():
    await asyncio.sleep(3600)


async def sleeper():
    await deep_sleep()


def gen(n):
    for i in range(n):
        yield i


def gen_thrown(n):
    for i in range(n):
        yield i


def gen_catching(n):
    try:
        for i in range(n):
            yield i
    except ValueError:
        yield -1


class Suspend:
    """An awaitable that suspends its awaiter once (for driving coroutines by hand)."""

    def __await__(self):
        yield "suspended"


async def acatch():
    try:
        await Suspend()
    except KeyError:
        return "caught"
    return "not thrown"


async def athrown():
    await Suspend()
    return "not thrown"


async def await_future(future):
    return await future


def rec(n):
    return 0 if n == 0 else 1 + rec(n - 1)


def infinite(n):
    global REACHED
    REACHED = n
    return infinite(n + 1)


def factory(k):
    def closure(x):
        return leaf(x) + k

    return closure


def make_lambda():
    return lambda x: x * 3


RUNTIME_SOURCE = '''
def made_at_runtime(x):
    return leaf(x) * 2


class MadeAtRuntime:
    def method(self, x):
        return x - 1
'''
