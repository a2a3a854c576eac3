"""The sample shop's domain code: the application's own functions the sensor counts."""
