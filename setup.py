"""Build of the optional C row masker; everything else is in pyproject.toml.

`optional=True`: where no C compiler (or no Python headers) is found the
extension is skipped with a warning and wardgate installs and runs on its
pure-Python masking path, with the same output (src/wardgate/masking/native.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wardgate.masking._rowmask",
            sources=["src/wardgate/masking/_rowmask.c"],
            extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
