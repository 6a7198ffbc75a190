"""Start-up checks: what keeps a process from serving, said in one line with the fix, before any traceback.

The troubleshooting guide, built in. Before anything is built or connected,
:func:`check` refuses what cannot work (a malformed or unsupported
``CHAT_DATABASE_URL`` or ``CHAT_BROKER_URL``, a port another program holds,
an address that is not this machine's) with a :class:`~chat.config.ConfigError`
or :class:`StartupError` whose message says what is wrong and how to fix it;
``python -m chat`` prints it as the one line on stderr and exits non-zero.

:func:`warn_unreachable` then knocks at MongoDB's and Redis's doors and, for
each one nobody answers, logs one warning with where it looked and what to
check. It does not stop the process: see :func:`warn_unreachable` for why.
Secrets never appear: URLs are shown with their passwords masked
(:func:`mask_url`), and the cookie keys are never shown at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

from .broker import BROKER_FORMS, BROKER_SCHEMES, REDIS_CLUSTER_SCHEMES, REDIS_SCHEMES, check_backplane_url
from .config import ConfigError, Settings
from .logs import JsonFormatter
from .storage import DATABASE_FORMS, backend_of

log = logging.getLogger(__name__)

# Exit codes: 2 as for every configuration error (the settings must change);
# 1 when this machine is in the way (another program holds the port).
EXIT_CONFIG = 2
EXIT_CANNOT_LISTEN = 1

REDIS_PORT = 6379
# How long a knock at the database or Redis may take before it counts as no answer.
PROBE_TIMEOUT_SECONDS = 2.0


class StartupError(Exception):
    """The process cannot start here; the message (one line) says what is wrong and how to fix it."""

    def __init__(self, message: str, exit_code: int = EXIT_CANNOT_LISTEN) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- secrets out of sight -------------------------------------------------------

# scheme://user:password@, anywhere (a parser's complaint may quote the URL):
# everything from the first ':' after the user to the last '@' before a space
# is the password (masking too much beats showing some of it).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#\s]*):(?P<password>\S*)@")
# ?password=...&token=... and the like, in the query.
_SECRET_PARAMETER = re.compile(r"(?i)(?P<name>[?&][^=&#]*(?:pass|secret|token|key)[^=&#]*=)[^&#]*")


def mask_url(url: str) -> str:
    """``url`` with any password (in the user part or the query) replaced by ``***``."""
    masked = _USERINFO.sub(r"\g<head>:***@", url)
    return _SECRET_PARAMETER.sub(r"\g<name>***", masked)


# -- the URLs -----------------------------------------------------------------


def _malformed(variable: str, url: str, problem: str, forms: str) -> ConfigError:
    shown = mask_url(url) if url else "(empty)"
    return ConfigError(f"{variable}={shown} {problem}; use {forms}")


def check_database_url(url: str, variable: str = "CHAT_DATABASE_URL") -> None:
    """Raise :class:`ConfigError` unless ``url`` names a database this server can open."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise _malformed(variable, url, f"is malformed ({exc})", DATABASE_FORMS) from None
    try:
        backend = backend_of(url)
    except ValueError:
        problem = f"has an unsupported scheme ({scheme}://)" if scheme else "is not a URL"
        raise _malformed(variable, url, problem, DATABASE_FORMS) from None
    try:
        backend.check(url)
    except ValueError as exc:
        raise _malformed(variable, url, f"is malformed ({mask_url(str(exc))})", DATABASE_FORMS) from None


def check_broker_url(url: str, variable: str = "CHAT_BROKER_URL") -> None:
    """Raise :class:`ConfigError` unless ``url`` names a broker this server can use."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise _malformed(variable, url, f"is malformed ({exc})", BROKER_FORMS) from None
    if scheme not in BROKER_SCHEMES:
        problem = f"has an unsupported scheme ({scheme}://)" if scheme else "is not a URL"
        raise _malformed(variable, url, problem, BROKER_FORMS)
    try:
        check_backplane_url(url)
    except ValueError as exc:
        raise _malformed(variable, url, f"is malformed ({mask_url(str(exc))})", BROKER_FORMS) from None


# -- the port -----------------------------------------------------------------


def check_port(host: str, port: int) -> None:
    """Raise :class:`StartupError` if ``host``:``port`` cannot be listened on (bind, then let go).

    Before anything else starts, so that the line saying the port is taken
    is the first one, not a traceback after seconds of connecting.
    """
    if port == 0:
        return  # any free port
    try:
        addresses = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"CHAT_HOST={host} is not an address of this machine ({exc.strerror}); set --host / CHAT_HOST "
            "to 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of its addresses",
            EXIT_CONFIG,
        ) from None
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as probe:
            # As Tornado binds: SO_REUSEADDR (a listener's TIME_WAIT leftovers
            # are no obstacle, a listener is), and IPv6 sockets IPv6 only.
            if sys.platform != "win32":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise listen_error(exc, host, port) from None


# What listening can fail with after check_port() passed (someone took the
# port meanwhile); EACCES is left out: it cannot appear late, and a file's
# EACCES must not read as a port problem.
LISTEN_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL})


def listen_error(exc: OSError, host: str, port: int) -> StartupError:
    """What an ``OSError`` from binding ``host``:``port`` means, and what to do about it."""
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"port {port} on {host} is in use: another chat process or program is listening there "
            f"(`ss -ltnp 'sport = :{port}'` shows which); stop it or choose another with --port / CHAT_PORT"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"{host} is not an address of this machine, so port {port} cannot be listened on there; "
            "set --host / CHAT_HOST "
            "to 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of its addresses",
            EXIT_CONFIG,
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"port {port} on {host} needs root (every port below 1024 does); choose one above 1023 "
            "with --port / CHAT_PORT and let nginx listen on 80/443 in front"
        )
    return StartupError(f"listening on port {port} on {host} failed: {exc.strerror or exc}")


def check(settings: Settings) -> None:
    """Everything that must be right before the process builds anything (raises ConfigError or StartupError)."""
    check_database_url(settings.database_url)
    check_broker_url(settings.broker_url)
    check_port(settings.host, settings.port)


# -- the backing services -------------------------------------------------------


@dataclass(frozen=True)
class Door:
    """Where a backing service should answer: a TCP host and port, or a Unix socket path."""

    host: str
    port: int | None = None  # None: ``host`` is a Unix socket path

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def database_doors(url: str) -> list[Door]:
    """Where the database of ``url`` answers; none for SQLite (a file) and mongodb+srv (DNS decides)."""
    return [Door(host, port) for host, port in backend_of(url).addresses(url)]


def broker_doors(url: str) -> list[Door]:
    """Where the Redis of ``url`` answers; none for ``memory://``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        return [Door(parts.path)]
    if scheme in REDIS_SCHEMES:
        return [Door(parts.hostname or "localhost", parts.port or REDIS_PORT)]
    if scheme in REDIS_CLUSTER_SCHEMES:
        from .broker.redis_cluster import parse_cluster_url

        return [Door(host, port) for host, port in parse_cluster_url(url).nodes]
    return []


async def knock(door: Door, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None if something accepts a connection at ``door``; else why not, in a few words."""
    try:
        if door.port is None:
            opening = asyncio.open_unix_connection(door.host)
        else:
            opening = asyncio.open_connection(door.host, door.port)
        _, writer = await asyncio.wait_for(opening, timeout)
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except socket.gaierror as exc:
        return f"cannot resolve {door.host}: {exc.strerror}"
    except ConnectionRefusedError:
        return "connection refused"
    except FileNotFoundError:
        return "no such socket"
    except OSError as exc:
        return exc.strerror or str(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def nobody_answers(doors: Sequence[Door], timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None if any of ``doors`` answers (a replica set needs one to start); else where and why not."""
    if not doors:
        return None
    reasons = await asyncio.gather(*(knock(door, timeout) for door in doors))
    if any(reason is None for reason in reasons):
        return None
    return ", ".join(f"{door} ({reason})" for door, reason in zip(doors, reasons, strict=True))


def database_unreachable(where: str, settings: Settings) -> str:
    return (
        f"MongoDB unreachable at {where}: is mongod running? Check with "
        "`mongosh \"$CHAT_DATABASE_URL\" --eval 'db.runCommand({ping: 1})'` or `systemctl status mongod`, "
        f"and that CHAT_DATABASE_URL={mask_url(settings.database_url)} names it; "
        "serving 503s meanwhile and connecting as soon as it answers"
    )


def broker_unreachable(where: str, settings: Settings) -> str:
    parts = urlsplit(settings.broker_url)
    ping = f"redis-cli -s {parts.path} ping" if parts.scheme == "unix" else 'redis-cli -u "$CHAT_BROKER_URL" ping'
    return (
        f"Redis unreachable at {where}: is redis-server running? Check that `{ping}` answers PONG "
        f"(`systemctl status redis-server`) and that CHAT_BROKER_URL={mask_url(settings.broker_url)} names it; "
        "serving meanwhile (messages are stored; live delivery waits) and reconnecting in the background"
    )


async def warn_unreachable(settings: Settings, timeout: float = PROBE_TIMEOUT_SECONDS) -> list[str]:
    """Log one warning for each backing service nobody answers for; return the warnings.

    Neither stops the process, and for the same reason: under supervisord a
    process that exits because MongoDB or Redis is not up *yet* (the machine
    is booting, the service restarts) is restarted a few times, then left
    FATAL until someone runs ``supervisorctl start``. Serving instead (pages
    answer 503 while the database is away; messages are stored while Redis
    is away, and delivered from storage when it returns) and reconnecting in
    the background means the group heals by itself when the service comes
    back, which is what :meth:`chat.bootstrap.Services.start` and the Redis
    broker already do. This only says so, once, clearly, first.
    """
    database, broker = await asyncio.gather(
        nobody_answers(database_doors(settings.database_url), timeout),
        nobody_answers(broker_doors(settings.broker_url), timeout),
    )
    warnings = []
    if database is not None:
        warnings.append(database_unreachable(database, settings))
    if broker is not None:
        warnings.append(broker_unreachable(broker, settings))
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


# -- the one line ---------------------------------------------------------------


def fail(message: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Write ``message`` as the one line a refused start leaves on stderr (a JSON object in JSON mode)."""
    if log_format == "json":
        record = logging.LogRecord(log.name, logging.CRITICAL, __file__, 0, message, (), None)
        message = JsonFormatter().format(record)
    print(message, file=stream if stream is not None else sys.stderr, flush=True)
