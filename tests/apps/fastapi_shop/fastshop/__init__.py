"""A small FastAPI shop used by funcsight's end-to-end tests."""
