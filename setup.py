"""Build of the optional C row masker; everything else is in pyproject.toml.

`optional=True`: where no C compiler (or no Python headers) is found the
extension is skipped with a warning and wardgate installs and runs on its
pure-Python masking path, with the same output (src/wardgate/masking/native.py).
"""

import sys

from setuptools import Extension, setup

# GCC/Clang flags; other compilers get their defaults (the build is optional anyway)
FLAGS = (
    []
    if sys.platform == "win32"
    else ["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"]
)

setup(
    ext_modules=[
        Extension(
            "wardgate.masking._rowmask",
            sources=["src/wardgate/masking/_rowmask.c"],
            depends=["src/wardgate/masking/_rowmask_scan.h"],
            extra_compile_args=FLAGS,
            optional=True,
        )
    ]
)
