"""A small app served by pre-fork servers (gunicorn sync and uvicorn workers) in funcsight's tests."""
