"""The catalog: views and the logic they call."""
