"""Build of funcsight's optional C sensor; all metadata lives in pyproject.toml.

The extension is optional: without a compiler (or on a platform it does not support) the install
succeeds and funcsight uses its pure-Python sensor. Set ``FUNCSIGHT_REQUIRE_C=1`` to make a failed
build fail the install (CI does, so a broken extension cannot go unnoticed).
"""

import glob
import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE_C = os.environ.get("FUNCSIGHT_REQUIRE_C") == "1"


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args += ["-O3", "-std=gnu11", "-fvisibility=hidden"]
        super().build_extensions()


def extensions():
    # CPython on POSIX only (sys.monitoring / co_extra / pthread keys); elsewhere the Python sensor.
    supported = platform.python_implementation() == "CPython" and os.name == "posix"
    if not supported and not REQUIRE_C:
        return []
    # Both include "funcsight/histogram.h" (the bucket scheme they share), hence the project root on
    # the include path. The sensor is one compilation unit: _csensor.c #includes its parts from
    # instrumentation/csensor/. `depends` makes an edit of a header rebuild the extension
    # (MANIFEST.in puts the headers in the sdist).
    histogram = ["funcsight/histogram.h"]
    return [
        Extension(
            "funcsight.instrumentation._csensor",
            ["instrumentation/_csensor.c"],
            include_dirs=["."],
            depends=sorted(glob.glob("instrumentation/csensor/*.h")) + histogram,
            optional=not REQUIRE_C,
        ),
        Extension(
            "funcsight.processors._crollup",
            ["processors/_crollup.c", "processors/_cwindow.c"],
            include_dirs=["."],
            depends=["processors/_crollup.h"] + histogram,
            optional=not REQUIRE_C,
        ),
    ]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
