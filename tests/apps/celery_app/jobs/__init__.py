"""A small Celery app used by funcsight's tests: two task kinds sharing a helper."""
