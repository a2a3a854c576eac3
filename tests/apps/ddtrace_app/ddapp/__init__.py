"""A Flask app served by gunicorn under both ``opentelemetry-instrument`` and ``ddtrace-run``."""
