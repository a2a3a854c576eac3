"""``gunicorn --preload faultapp.preloaded:app``: the app, plus work done at import time (in the
master, before it forks the workers), which must stay the master's: workers start empty."""
from faultapp import logic
from faultapp.views import app  # noqa: F401

WARM = [logic.handle(n) for n in range(7)]
