"""The redaction hook of the privacy tests (``FUNCSIGHT_REDACT=faultapp.privacy:scrub``)."""
import re

_TOKEN = re.compile(r"S3CRET-[A-Za-z0-9-]+")


def scrub(message):
    return _TOKEN.sub("[redacted]", message)
