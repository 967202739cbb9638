"""PostgreSQL wire protocol 3.0, sans-IO.

- ``framing``: ``MessageReader`` (bytes in, whole messages out) and ``ProtocolError``.
- ``messages``: frozen dataclasses, one per message kind.
- ``frontend`` / ``backend``: decoders for client and server messages.
- ``writers``: encoders returning bytes.
- ``auth``: SCRAM-SHA-256 (server and client), md5 password hashing.
- ``constants``: type bytes, auth codes, SQLSTATEs.

No asyncio, no sockets, no ssl: the engines own the I/O.
"""

from wardgate.wire.pg.framing import MessageReader, ProtocolError

__all__ = ["MessageReader", "ProtocolError"]
