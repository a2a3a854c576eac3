"""The FastAPI flavour (``gunicorn -k uvicorn_worker.UvicornWorker forkapp.asgi:app``)."""
import os

from fastapi import FastAPI

from forkapp import logic, startup  # noqa: F401  (startup runs at import)

app = FastAPI()


@app.get("/work/{n}")
async def work(n: int):
    # logic.handle sleeps without awaiting: the worker's loop is busy meanwhile, so concurrent
    # requests spread over the workers.
    return {"pid": os.getpid(), "value": logic.handle(n)}
