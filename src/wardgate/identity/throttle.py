"""Failed logins per client address: past a limit in a sliding window, the address is
blocked for a while (as fail2ban's `maxretry` / `findtime` / `bantime`).

Pure bookkeeping, no asyncio and no store: the engine asks `refused(addr, now)` before
any authentication work, reports each failed login with `failure(addr, now)`, and
records the blocks `take_ended(now)` hands back. Memory is bounded: at most
`max_addresses` addresses are tracked and at most as many blocked; past that the oldest
is forgotten (a block forgotten early is handed back as ended, so it is still recorded).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["AuthFailureLimiter", "Block", "client_ip"]


@dataclass(slots=True)
class Block:
    address: str
    started: float  # wall-clock seconds
    until: float
    failures: int  # the failed logins that started it
    refused: int = 0  # attempts refused while it held
    first_refused: float | None = None
    last_refused: float | None = None
    ended_early: bool = False  # forgotten to keep memory bounded, or the gateway stopped


@dataclass(slots=True)
class AuthFailureLimiter:
    failures: int
    window: float
    block: float
    max_addresses: int = 10_000
    # address -> times of its recent failed logins (at most `failures` of them)
    _recent: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    # address -> its block, oldest first
    _blocks: OrderedDict[str, Block] = field(default_factory=OrderedDict)
    _ended: list[Block] = field(default_factory=list)

    def refused(self, addr: str, now: float) -> Block | None:
        """The block that refuses this attempt (counted in it), or None."""
        b = self._blocks.get(addr)
        if b is None:
            return None
        if now >= b.until:
            self._ended.append(self._blocks.pop(addr))
            return None
        b.refused += 1
        if b.first_refused is None:
            b.first_refused = now
        b.last_refused = now
        return b

    def failure(self, addr: str, now: float) -> Block | None:
        """Count a failed login; the new block when this one reaches the limit."""
        if addr in self._blocks:
            return None  # a login begun before the block started: recorded, not counted
        times = self._recent.get(addr)
        if times is None:
            times = self._recent[addr] = deque(maxlen=self.failures)
            while len(self._recent) > self.max_addresses:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(addr)
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        if len(times) < self.failures:
            return None
        del self._recent[addr]
        b = self._blocks[addr] = Block(addr, now, now + self.block, self.failures)
        while len(self._blocks) > self.max_addresses:
            _, old = self._blocks.popitem(last=False)
            old.ended_early = True
            self._ended.append(old)
        return b

    def take_ended(self, now: float, *, all_: bool = False) -> list[Block]:
        """Blocks over (or forgotten) since the last call; `all_`: every block, as the
        gateway stops."""
        for addr, b in list(self._blocks.items()):
            if all_ or now >= b.until:
                if now < b.until:
                    b.ended_early = True
                self._ended.append(self._blocks.pop(addr))
        ended, self._ended = self._ended, []
        return ended

    @property
    def blocked(self) -> int:
        return len(self._blocks)


def client_ip(host: str) -> str:
    """The address a limit counts by: the IP without port or IPv6 zone, an IPv4-mapped
    IPv6 address as IPv4 (a dual-stack listener must not count one client twice)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
