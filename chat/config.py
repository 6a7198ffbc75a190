"""All configuration, read in one place.

Values come from the process environment, then from an optional ``.env`` file
(the environment wins), then from the defaults below. Every variable is
documented in ``.env.example``. Nothing else in the package reads the
environment.

:class:`Settings` is the table: each field that can be configured names its
variable and its parser (with bounds) in the field's metadata, and
:func:`load_settings` walks that table once.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .origins import normalize_origin
from .wire.actions import Action

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "sqlite:///data/chat.sqlite3"
# WebSocket keepalive, in seconds. nginx's proxy_read_timeout (75 s in
# nginx/chat.conf.template) must stay longer than the ping interval, or idle
# sockets behind it are cut between pings.
DEFAULT_WS_PING_INTERVAL = 25.0
# Tornado refuses a timeout longer than the interval (it warns and uses the
# interval), so the default stays below it.
DEFAULT_WS_PING_TIMEOUT = 20.0
MIN_SECRET_LENGTH = 32


class ConfigError(Exception):
    """The configuration is missing or malformed; the message says how to fix it."""


# -- parsers: (variable name, raw text) -> value, or ConfigError naming the variable

Parser = Callable[[str, str], Any]


def text(name: str, raw: str) -> str:
    return raw


def boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _bounded(kind: type[int] | type[float], minimum: float, maximum: float = math.inf) -> Parser:
    def parse(name: str, raw: str) -> int | float:
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {'a whole' if kind is int else 'a'} number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
        if value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {raw!r}")
        return value

    return parse


def integer(minimum: int, maximum: int | None = None) -> Parser:
    return _bounded(int, minimum, math.inf if maximum is None else maximum)


def number(minimum: float) -> Parser:
    return _bounded(float, minimum)


def _items(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def secret_keys(name: str, raw: str) -> tuple[str, ...]:
    keys = _items(raw)
    if not keys:
        raise ConfigError(
            f"{name} is not set. `make run` creates one in .env; "
            "elsewhere generate one with `python -m chat.tools.secret` and set it."
        )
    for number, key in enumerate(keys, start=1):
        if len(key) < MIN_SECRET_LENGTH:
            # Never the key itself: this line goes to logs.
            which = f"key {number} of {len(keys)}" if len(keys) > 1 else "the key"
            raise ConfigError(
                f"{name}: {which} is {len(key)} characters; each must be at least {MIN_SECRET_LENGTH} characters. "
                "Generate one with `python -m chat.tools.secret` (`make run` writes one to .env)."
            )
    return keys


def origins(name: str, raw: str) -> tuple[str, ...]:
    """Origins as ``scheme://host[:port]``, normalized so they can be compared exactly."""
    parsed = []
    for item in _items(raw):
        origin = normalize_origin(item.rstrip("/"))
        if origin is None:
            raise ConfigError(f"{name}: {item!r} is not an origin like https://chat.example.org or http://host:8080")
        parsed.append(origin)
    return tuple(parsed)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def networks(name: str, raw: str) -> tuple[IPNetwork, ...]:
    """Addresses and CIDR blocks, comma-separated; ``none`` for an empty list."""
    if raw.strip().lower() == "none":
        return ()
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _items(raw))
    except ValueError as exc:
        raise ConfigError(f"{name} must list IP addresses or networks like 10.0.0.0/8, or none: {exc}") from None


def rate_limits(name: str, raw: str) -> str:
    """Rules in the `limits` notation, checked now so a typo fails at start-up."""
    from limits import parse_many

    try:
        if not parse_many(raw):
            raise ValueError("empty")
    except ValueError:
        raise ConfigError(f'{name} must be rates like "20 per 10 seconds;100 per minute", got {raw!r}') from None
    return raw


def one_of(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def limit_of(action: Action, variable: str) -> dict[str, Any]:
    """Field metadata of an abuse limit: its rules are read from ``variable``, and count ``action``."""
    return {"env": variable, "parse": rate_limits, "action": action}


def env(variable: str, parse: Parser) -> dict[str, Any]:
    """Field metadata: the field is read from ``variable`` with ``parse``."""
    return {"env": variable, "parse": parse}


@dataclass(frozen=True)
class Settings:
    """Everything the process needs to know, immutable once built."""

    cookie_secrets: tuple[str, ...] = field(metadata=env("CHAT_COOKIE_SECRETS", secret_keys))
    database_url: str = field(default=DEFAULT_DATABASE_URL, metadata=env("CHAT_DATABASE_URL", text))
    broker_url: str = field(default="memory://", metadata=env("CHAT_BROKER_URL", text))
    host: str = field(default="127.0.0.1", metadata=env("CHAT_HOST", text))
    port: int = field(default=8888, metadata=env("CHAT_PORT", integer(0)))
    # Shown as ``instance`` in the hello frame so clients (and tests) can tell
    # which process of a group they reached.
    instance_name: str = field(default="", metadata=env("CHAT_INSTANCE_NAME", text))
    cookie_secure: bool = field(default=False, metadata=env("CHAT_COOKIE_SECURE", boolean))
    # Sessions end at the absolute limit after sign-in, or after this long
    # without activity, whichever comes first (NIST 800-63B AAL2: 12 h, 30 min).
    session_max_age: int = field(default=12 * 3600, metadata=env("CHAT_SESSION_MAX_AGE", integer(1)))
    session_idle_seconds: int = field(default=30 * 60, metadata=env("CHAT_SESSION_IDLE_SECONDS", integer(1)))
    # Open sockets check their sessions this often (signing out closes them at
    # once through the broker; this catches expiry and anything missed).
    session_recheck_seconds: float = field(default=60.0, metadata=env("CHAT_SESSION_RECHECK_SECONDS", number(0)))
    bcrypt_rounds: int = field(default=12, metadata=env("CHAT_BCRYPT_ROUNDS", integer(4)))
    # Password hashes running or waiting at once in this process; more are refused (429) at once.
    bcrypt_max_in_flight: int = field(default=16, metadata=env("CHAT_BCRYPT_MAX_IN_FLIGHT", integer(1)))
    # Abuse limits, in the `limits` notation; counted across processes in Redis.
    limit_sends: str = field(
        default="20 per 10 seconds;100 per minute", metadata=limit_of(Action.SEND, "CHAT_LIMIT_SENDS")
    )
    limit_syncs_per_socket: str = field(
        default="6 per minute", metadata=limit_of(Action.SYNC_PER_SOCKET, "CHAT_LIMIT_SYNCS_PER_SOCKET")
    )
    limit_syncs_per_user: str = field(
        default="20 per minute", metadata=limit_of(Action.SYNC_PER_USER, "CHAT_LIMIT_SYNCS_PER_USER")
    )
    limit_fetches: str = field(
        default="20 per 10 seconds;200 per minute", metadata=limit_of(Action.FETCH, "CHAT_LIMIT_FETCHES")
    )
    limit_typing: str = field(default="10 per 30 seconds", metadata=limit_of(Action.TYPING, "CHAT_LIMIT_TYPING"))
    limit_handshakes: str = field(default="60 per minute", metadata=limit_of(Action.HANDSHAKE, "CHAT_LIMIT_HANDSHAKES"))
    limit_room_creation: str = field(
        default="10 per hour", metadata=limit_of(Action.ROOM_CREATION, "CHAT_LIMIT_ROOM_CREATION")
    )
    # Renames and topics (each is announced to every socket of the room and logged).
    limit_room_changes: str = field(
        default="10 per minute;60 per hour", metadata=limit_of(Action.ROOM_CHANGE, "CHAT_LIMIT_ROOM_CHANGES")
    )
    # New direct conversations (each lands in the other person's sidebar).
    limit_dm_creation: str = field(
        default="30 per hour", metadata=limit_of(Action.DM_CREATION, "CHAT_LIMIT_DM_CREATION")
    )
    limit_registrations: str = field(
        default="10 per hour", metadata=limit_of(Action.REGISTRATION, "CHAT_LIMIT_REGISTRATIONS")
    )
    limit_logins: str = field(
        default="5 per 10 seconds;30 per minute;300 per hour", metadata=limit_of(Action.LOGIN, "CHAT_LIMIT_LOGINS")
    )
    limit_login_failures: str = field(
        default="10 per 15 minutes;100 per day", metadata=limit_of(Action.LOGIN_FAILURE, "CHAT_LIMIT_LOGIN_FAILURES")
    )
    max_sockets_per_user: int = field(default=20, metadata=env("CHAT_MAX_SOCKETS_PER_USER", integer(1)))
    max_sockets_per_ip: int = field(default=100, metadata=env("CHAT_MAX_SOCKETS_PER_IP", integer(1)))
    # Connections one client (outside CHAT_TRUSTED_PROXIES) holds open at once
    # on a process port, and how long it has to send a request's headers:
    # protection against clients that hold connections without nginx in front.
    max_connections_per_ip: int = field(default=200, metadata=env("CHAT_MAX_CONNECTIONS_PER_IP", integer(1)))
    header_timeout_seconds: float = field(default=10.0, metadata=env("CHAT_HEADER_TIMEOUT_SECONDS", number(0.1)))
    # Per-address limits count an IPv6 client by this prefix (one /64 is
    # usually one home or one machine, and it holds 2^64 addresses).
    ipv6_prefix_length: int = field(default=64, metadata=env("CHAT_IPV6_PREFIX_LENGTH", integer(16, 128)))
    # A resume or sync sends at most this many messages; further behind, the
    # client is told to reload. History frames stay under the byte cap.
    resume_max_messages: int = field(default=300, metadata=env("CHAT_RESUME_MAX_MESSAGES", integer(1)))
    history_frame_max_bytes: int = field(
        default=256 * 1024, metadata=env("CHAT_HISTORY_FRAME_MAX_BYTES", integer(16 * 1024))
    )
    # Presence entries live this long unless refreshed by the heartbeat; a
    # crashed process's users vanish from presence within this delay.
    presence_ttl_seconds: float = field(default=30.0, metadata=env("CHAT_PRESENCE_TTL_SECONDS", number(1)))
    presence_heartbeat_seconds: float = field(
        default=10.0, metadata=env("CHAT_PRESENCE_HEARTBEAT_SECONDS", number(0.1))
    )
    # Each process checks the rooms it serves that went quiet (every room
    # every 6th time) against storage this often, to deliver a message whose
    # publish was lost with a crashed process.
    catchup_interval_seconds: float = field(default=10.0, metadata=env("CHAT_CATCHUP_INTERVAL_SECONDS", number(0.1)))
    # The event loop silent this long is logged with what it is running (0: off).
    loop_stall_seconds: float = field(default=0.5, metadata=env("CHAT_LOOP_STALL_SECONDS", number(0)))
    # On SIGTERM, how long to wait for messages being stored to finish.
    shutdown_grace_seconds: float = field(default=10.0, metadata=env("CHAT_SHUTDOWN_GRACE_SECONDS", number(0)))
    # A ping every ``ws_ping_interval`` seconds; a peer that has not answered
    # within ``ws_ping_timeout`` is dropped (Tornado caps the timeout at the
    # interval).
    ws_ping_interval: float = field(
        default=DEFAULT_WS_PING_INTERVAL, metadata=env("CHAT_WS_PING_INTERVAL", number(0.1))
    )
    ws_ping_timeout: float = field(default=DEFAULT_WS_PING_TIMEOUT, metadata=env("CHAT_WS_PING_TIMEOUT", number(0)))
    # Bytes queued on one socket but not yet written to the network; a client
    # that falls further behind is closed with 1013 and resumes with `since`.
    ws_max_buffer_bytes: int = field(default=1024 * 1024, metadata=env("CHAT_WS_MAX_BUFFER_BYTES", integer(4096)))
    # The event loop: Python's own, or uvloop (libuv), measured in docs/benchmarks.md.
    event_loop: str = field(default="asyncio", metadata=env("CHAT_EVENT_LOOP", one_of("asyncio", "uvloop")))
    # The log: plain text lines (what `make run` shows), or one JSON object per
    # line (time, level, logger, message, request/connection/user ids, client
    # address) for a log collector.
    log_format: str = field(default="text", metadata=env("CHAT_LOG_FORMAT", one_of("text", "json")))
    # The origins pages are served from (scheme, host and port), besides the
    # one a request is addressed to: behind a proxy that changes the Host or
    # the scheme (TLS ended in front of nginx), the public one goes here.
    allowed_origins: tuple[str, ...] = field(default=(), metadata=env("CHAT_ALLOWED_ORIGINS", origins))
    # Peers whose X-Forwarded-For / X-Real-IP / X-Forwarded-Proto are believed
    # (nginx); they also see the details of /healthz and /readyz.
    trusted_proxies: tuple[IPNetwork, ...] = field(default=LOOPBACK, metadata=env("CHAT_TRUSTED_PROXIES", networks))
    debug: bool = field(default=False, metadata=env("CHAT_DEBUG", boolean))

    # Not configurable from the environment: tuning and paths that tests and
    # tools set with dataclasses.replace().
    history_limit: int = 50
    max_frame_bytes: int = 64 * 1024
    # Request bodies (forms) the HTTP server reads at most; anything longer is
    # refused before it is read, whether or not nginx is in front.
    max_body_bytes: int = 64 * 1024
    # Fan-out: how long a missing seq may hold later ones back before storage
    # is asked for it (see services/fanout.py).
    fanout_gap_retry_seconds: float = 0.2
    template_path: Path = PROJECT_ROOT / "templates"
    static_path: Path = PROJECT_ROOT / "static"

    def limit_rules(self) -> dict[Action, str]:
        """Every abuse limit's rules, by the action it counts (the fields made with :func:`limit_of`)."""
        return {f.metadata["action"]: getattr(self, f.name) for f in fields(self) if "action" in f.metadata}

    @property
    def instance(self) -> str:
        return self.instance_name or f"{socket.gethostname()}:{self.port}"


# The limits a load test or benchmark lifts: one client address with many
# users, sockets and messages is its job, not abuse. Failed sign-ins stay
# limited (a load test has none).
LIFTED_RATE = "10000000 per minute"


def lifted_limits() -> dict[str, str]:
    """Settings that lift every abuse limit but the failed-sign-in lockout."""
    lifted = {
        f.metadata["env"]: LIFTED_RATE
        for f in fields(Settings)
        if f.metadata.get("parse") is rate_limits and f.name != "limit_login_failures"
    }
    return {**lifted, "CHAT_MAX_SOCKETS_PER_USER": "1000000", "CHAT_MAX_SOCKETS_PER_IP": "1000000"}


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
) -> Settings:
    """Build :class:`Settings` from the environment and an optional ``.env``."""
    values: dict[str, str] = {}
    path = dotenv_path if dotenv_path is not None else PROJECT_ROOT / ".env"
    if path.is_file():
        values.update(parse_dotenv(path.read_text(encoding="utf-8")))
    values.update(os.environ if environ is None else environ)

    parsed: dict[str, Any] = {}
    for setting in fields(Settings):
        if "env" not in setting.metadata:
            continue
        variable = setting.metadata["env"]
        raw = values.get(variable, "").strip()
        # An empty value (`CHAT_PORT=` as in .env.example) means "use the
        # default"; a setting without a default gets its parser's complaint.
        required = setting.default is MISSING and setting.default_factory is MISSING
        if raw or required:
            parsed[setting.name] = setting.metadata["parse"](variable, raw)
    return Settings(**parsed)


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines; ``#`` comments, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f".env line {lineno}: expected KEY=VALUE, got {raw!r}")
        values[key] = _dotenv_value(value.strip())
    return values


def _dotenv_value(value: str) -> str:
    quote = value[:1]
    if quote in ("'", '"'):
        if len(value) >= 2 and value[-1] == quote:
            return value[1:-1]
        closing = value.find(quote, 1)
        if closing > 0 and value[closing + 1 :].lstrip().startswith("#"):
            # KEY="quoted value"  # comment: the quotes protect spaces and '#',
            # the comment after them is not part of the value.
            return value[1:closing]
    if " #" in value:
        return value.split(" #", 1)[0].rstrip()
    return value


def generate_secret() -> str:
    return secrets.token_urlsafe(48)


def ensure_dotenv_secret(path: Path) -> bool:
    """Append a fresh ``CHAT_COOKIE_SECRETS`` to ``path`` unless one is set.

    Returns True when a secret was written. Used by ``make run`` so a bare
    machine gets a private key that survives restarts (and so do sessions).
    """
    existing = parse_dotenv(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if existing.get("CHAT_COOKIE_SECRETS", "").strip() or os.environ.get("CHAT_COOKIE_SECRETS", "").strip():
        return False
    prefix = ""
    if path.is_file():
        content = path.read_text(encoding="utf-8")
        prefix = "" if not content or content.endswith("\n") else "\n"
    # Private before the secret goes in, never readable by others even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(
            f"{prefix}# Generated by `make run`; keep it private. Comma-separate keys to rotate (newest last).\n"
        )
        handle.write(f"CHAT_COOKIE_SECRETS={generate_secret()}\n")
    return True
