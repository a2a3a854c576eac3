"""A custom path converter: Django calls ``to_python`` while resolving the URL of each request."""


class SkuConverter:
    regex = "[A-Z]{3}-[0-9]{2}"

    def to_python(self, value):
        return value.upper()

    def to_url(self, value):
        return value
