"""Launcher: serves the FastAPI shop on 127.0.0.1:PORT under uvicorn (like ``uvicorn fastshop.main:app``)."""
import sys

import uvicorn

from fastshop.main import app

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", backlog=2048)
