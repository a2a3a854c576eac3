"""A small Flask app for funcsight's fault-injection, shutdown and privacy tests."""
