"""What the tasks call. ``checksum`` is shared by both task kinds."""


def checksum(text):
    return sum(text.encode()) % 997


def scale(n, factor):
    return n * factor


def render(user):
    return f"hello {user.strip().title()}"
