"""Counting a person's and an address's open sockets, across processes: admission at the handshake.

Each socket holds a place in two pools (its user's and its address's; an IPv6
client counts by its network) as a lease in the backplane's lease store,
renewed by a heartbeat and released when the socket closes; a crashed
process's places expire by themselves, so its users reconnect elsewhere at
once. Admission is asked before the upgrade, so a refusal is a plain 429.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from ... import metrics
from ...broker import LeaseStore
from ...errors import RateLimited, Unavailable
from ...models import User
from ...wire.actions import Action
from .. import audit
from ..limits import Limiter

# How long a client refused for holding too many sockets should wait.
TOO_MANY_SOCKETS_RETRY_AFTER = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admission:
    """The places one socket holds in the per-user and per-address counts."""

    holder: str
    pools: tuple[str, ...]


@dataclass(eq=False)
class SocketAdmissions:
    """The places this process's sockets hold in the per-user and per-address counts."""

    limiter: Limiter
    leases: LeaseStore
    instance: str
    max_sockets_per_user: int
    max_sockets_per_ip: int
    # A place expires this long after the last heartbeat (every third of it).
    lease_seconds: float = 30.0
    _admitted: dict[str, Admission] = field(default_factory=dict, init=False, repr=False)
    # Set when the process is going away: sockets closing keep their places,
    # which release_all then gives back all at once.
    going_away: bool = field(default=False, init=False)

    async def admit(self, user: User, client_ip: str) -> Admission:
        """Count one more socket of ``user`` from ``client_ip``, or raise RateLimited.

        Called during the handshake, before the upgrade, so a refusal is a
        plain 429. Also limits how often a user opens sockets at all.
        """
        await self.limiter.take(Action.HANDSHAKE, user.id)
        holder = f"{self.instance}:{uuid.uuid4().hex}"
        wanted = (
            (f"user:{user.id}", self.max_sockets_per_user),
            (f"ip:{self.limiter.address(client_ip)}", self.max_sockets_per_ip),
        )
        taken: list[str] = []
        for pool, limit in wanted:
            try:
                granted = await self.leases.acquire(pool, holder, limit, self.lease_seconds)
            except Unavailable as exc:
                # Fail open: refusing every socket while Redis restarts would
                # be worse than a minute without this limit.
                log.warning("socket limits unavailable (%s); admitting", exc)
                granted = True
            if not granted:
                await self.release(Admission(holder, tuple(taken)))
                reason = f"too many sockets ({pool.split(':')[0]})"
                audit.throttled("socket_refused", user.id, client_ip, user=user.id, ip=client_ip, reason=reason)
                metrics.LIMIT_REFUSALS.labels(f"sockets_per_{pool.split(':')[0]}").inc()
                raise RateLimited(TOO_MANY_SOCKETS_RETRY_AFTER)
            taken.append(pool)
        admission = Admission(holder, tuple(taken))
        self._admitted[holder] = admission
        return admission

    async def release(self, admission: Admission) -> None:
        if self.going_away:
            return
        self._admitted.pop(admission.holder, None)
        for pool in admission.pools:
            try:
                await self.leases.release(pool, admission.holder)
            except Unavailable as exc:
                log.warning("could not release a socket place (%s); it expires by itself", exc)

    async def release_all(self) -> None:
        """Give back every place this process holds, in a few round trips (shutting down: its sockets are gone)."""
        admitted, self._admitted = self._admitted, {}
        try:
            await self.leases.release_many((pool, a.holder) for a in admitted.values() for pool in a.pools)
        except Unavailable as exc:
            log.warning("could not give back the socket places (%s); they expire by themselves", exc)

    async def renew_leases(self) -> None:
        """Heartbeat for the places this process's sockets hold."""
        leases = [(pool, a.holder) for a in self._admitted.values() for pool in a.pools]
        if leases:
            await self.leases.renew(leases, self.lease_seconds)
