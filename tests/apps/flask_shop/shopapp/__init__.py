"""A small Flask shop used by funcsight's end-to-end tests."""
