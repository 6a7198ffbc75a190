"""Abuse limits: how often one user, socket, account or address may do something.

Rates are counted by the ``limits`` library (moving windows), in memory for
one process and in Redis for a group, so that a limit holds however many
sockets and processes a user spreads the load over. Each kind of action has
its rules in settings, in ``limits``' notation ("20 per 10 seconds;100 per
minute"); an action is refused when any rule is exhausted, and the refusal
says how long to wait.

The limiter fails open: if its store cannot be reached, actions go through
(and the outage is logged), because refusing every message while Redis
restarts would be worse than a minute without limits.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from .. import metrics
from ..errors import RateLimited
from ..wire.actions import Action
from . import audit

log = logging.getLogger(__name__)

T = TypeVar("T")


def address_key(ip: str, ipv6_prefix: int = 64) -> str:
    """Whose actions a client address counts as: an IPv6 address by its network, an IPv4 one alone.

    An IPv6 client usually holds a whole /64 and can pick a new address from
    it for every request, so counting addresses one by one would not limit it
    at all. An IPv4-mapped IPv6 address counts as the IPv4 address it maps.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address (a test's name, a unix socket): counted as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{ipv6_prefix}", strict=False))
    return str(address)


def parse_rules(spec: str) -> list[RateLimitItem]:
    """``"20 per 10 seconds;100 per minute"`` -> items; ValueError if malformed."""
    items = parse_many(spec)
    if not items:
        raise ValueError(f"no rate in {spec!r}")
    return items


class Limiter:
    def __init__(
        self,
        storage_uri: str,
        rules: Mapping[Action, str],
        clock: Callable[[], float] = time.time,
        ipv6_prefix: int = 64,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.ipv6_prefix = ipv6_prefix
        options: dict[str, Any] = {"implementation": "redispy"} if "redis" in storage_uri.split("://")[0] else {}
        options.update(storage_options or {})
        self._storage = storage_from_string(storage_uri, **options)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._rules = {action: parse_rules(spec) for action, spec in rules.items()}
        # Wall-clock seconds, as the library's windows use.
        self._clock = clock

    async def close(self) -> None:
        """Let go of the counters' Redis connections, if any.

        The ``limits`` library has no close of its own; its Redis storages keep
        their redis-py client on their bridge. Left open, a Redis Cluster
        client complains when it is collected.
        """
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            try:
                await close()
                # A pool given to the client (CHAT_BROKER_URL redis://) is not closed with it.
                pool = getattr(client, "connection_pool", None)
                if pool is not None:
                    await pool.disconnect()
            except Exception as exc:  # closing must not stop a shutdown
                log.warning("closing the rate limiter's store failed: %s", exc)

    def address(self, client_ip: str) -> str:
        """The key a client address is counted under in per-address limits (see :func:`address_key`)."""
        return address_key(client_ip, self.ipv6_prefix)

    async def take(self, action: Action, *key: str) -> None:
        """Count one ``action`` by ``key``; raise :class:`RateLimited` if over a rule."""
        if not await self.try_take(action, *key):
            retry_after = await self._longest_wait(action, key)
            who = ":".join(key)
            audit.throttled(
                "limit_hit", action.value, who, action=action.value, key=who, retry_after=round(retry_after, 1)
            )
            metrics.LIMIT_REFUSALS.labels(action.value).inc()
            raise RateLimited(retry_after)

    async def try_take(self, action: Action, *key: str) -> bool:
        """Count one ``action`` by ``key`` if every rule allows it; whether it did (nothing logged)."""
        for item in self._rules[action]:
            try:
                allowed = await self._with_retry(partial(self._strategy.hit, item, action.value, *key))
            except Exception as exc:  # the store is down: fail open
                log.warning("rate limiter unavailable (%s); letting %s through", exc, action.value)
                return True
            if not allowed:
                return False
        return True

    async def record(self, action: Action, *key: str) -> None:
        """Count one ``action`` without refusing it (e.g. a failed sign-in, refused already)."""
        try:
            for item in self._rules[action]:
                await self._with_retry(partial(self._strategy.hit, item, action.value, *key))
        except Exception as exc:
            log.warning("rate limiter unavailable (%s); %s not counted", exc, action.value)

    async def allows(self, action: Action, *key: str) -> bool:
        """Whether one more ``action`` would be allowed, without counting it."""
        try:
            for item in self._rules[action]:
                if not await self._with_retry(partial(self._strategy.test, item, action.value, *key)):
                    return False
            return True
        except Exception as exc:
            log.warning("rate limiter unavailable (%s); allowing %s", exc, action.value)
            return True

    async def reset(self, action: Action, *key: str) -> None:
        """Forget the count (e.g. login failures after a success)."""
        try:
            for item in self._rules[action]:
                await self._with_retry(partial(self._strategy.clear, item, action.value, *key))
        except Exception as exc:
            log.warning("rate limiter unavailable (%s); could not reset %s", exc, action.value)

    @staticmethod
    async def _with_retry(call: Callable[[], Awaitable[T]]) -> T:
        """One call to the store, tried once more if it fails.

        After Redis restarts, each pooled connection fails the first time it
        is used again; failing open on that would let an action through
        against a limit that is being counted perfectly well.
        """
        try:
            return await call()
        except Exception:
            return await call()

    async def _longest_wait(self, action: Action, key: tuple[str, ...]) -> float:
        """How long until every rule of ``action`` allows ``key`` again."""
        waits = []
        for item in self._rules[action]:
            try:
                if await self._strategy.test(item, action.value, *key):
                    continue
            except Exception:
                return float(item.get_expiry())
            waits.append(await self._retry_after(item, action, key))
        return max(waits, default=0.05)

    async def _retry_after(self, item: RateLimitItem, action: Action, key: tuple[str, ...]) -> float:
        try:
            stats = await self._strategy.get_window_stats(item, action.value, *key)
        except Exception:
            return float(item.get_expiry())
        # A moving window still counts a hit exactly `expiry` old: a hair more.
        return max(0.05, stats.reset_time - self._clock() + 0.01)
