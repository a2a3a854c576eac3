"""The diagnosis benchmark's shop. Release 1 is this code; ``bench/accuracy.py`` makes release 2 of
a scenario by replacing one marked line (``# PLANT:<name>``) in a scratch copy, as a deploy replaces
code. Waits stand for I/O (a database round trip, a remote index); CPU work is real (json, string
templates, arithmetic)."""
