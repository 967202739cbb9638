"""Secrets by reference: `env:NAME` or `file:PATH`, never inline.

A `SecretRef` knows where a secret lives and resolves it on demand. Its `repr` and
`str` name the reference, never the value, so a secret cannot leak through a log line
or an exception message that formats the config.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SecretRef", "SecretError"]


class SecretError(ValueError):
    """A secret reference that cannot be resolved (the message names it, not its value)."""


class SecretRef:
    __slots__ = ("scheme", "target")

    def __init__(self, reference: str) -> None:
        scheme, sep, target = reference.partition(":")
        if not sep or scheme not in ("env", "file") or not target:
            raise SecretError(
                "expected a secret reference 'env:NAME' or 'file:PATH' "
                "(secrets are never written inline)"
            )
        self.scheme = scheme
        self.target = target

    @property
    def reference(self) -> str:
        return f"{self.scheme}:{self.target}"

    def resolve(self) -> str:
        if self.scheme == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise SecretError(f"environment variable {self.target} is not set")
            if value == "":
                raise SecretError(f"environment variable {self.target} is empty")
            return value
        path = Path(self.target).expanduser()
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"secret file {path} is empty")
        return value

    def __repr__(self) -> str:
        return f"SecretRef({self.reference!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other.reference == self.reference

    def __hash__(self) -> int:
        return hash(self.reference)
