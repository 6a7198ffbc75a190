"""All configuration, read in one place.

Values come from the process environment, then from an optional ``.env`` file
(the environment wins), then from the defaults below. Every variable is
documented in ``.env.example``. Nothing else in the package reads the
environment.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "sqlite:///data/chat.sqlite3"

# WebSocket keepalive, in seconds. nginx's proxy_read_timeout (75 s in
# nginx/chat.conf.template) must stay longer than the ping interval, or idle
# sockets behind it are cut between pings.
DEFAULT_WS_PING_INTERVAL = 25.0
# Tornado refuses a timeout longer than the interval (it warns and uses the
# interval), so the default stays below it.
DEFAULT_WS_PING_TIMEOUT = 20.0
# Bytes queued on one socket but not yet written to the network; a client
# that falls further behind is closed with 1013 and resumes with `since`.
DEFAULT_WS_MAX_BUFFER_BYTES = 1024 * 1024


class ConfigError(Exception):
    """The configuration is missing or malformed; the message says how to fix it."""


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines; ``#`` comments, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f".env line {lineno}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        quote = value[:1]
        closing = value.find(quote, 1) if quote in ("'", '"') else -1
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif closing > 0 and value[closing + 1:].lstrip().startswith("#"):
            # KEY="quoted value"  # comment: the quotes protect spaces and '#',
            # the comment after them is not part of the value.
            value = value[1:closing]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _number(name: str, raw: str, kind: type[int] | type[float], minimum: float) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the process needs to know, immutable once built."""

    cookie_secrets: tuple[str, ...]
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = "memory://"
    host: str = "127.0.0.1"
    port: int = 8888
    # Shown as ``instance`` in the hello frame so clients (and tests) can tell
    # which process of a group they reached.
    instance_name: str = ""
    cookie_secure: bool = False
    session_max_age: int = 14 * 24 * 3600
    # A socket re-checks its session at most this often, so signing out ends
    # live sockets within this delay without a database read per message.
    session_recheck_seconds: float = 30.0
    bcrypt_rounds: int = 12
    # Sends allowed per socket: a burst, refilled at ``rate_limit_per_second``.
    rate_limit_burst: int = 20
    rate_limit_per_second: float = 5.0
    # Presence entries live this long unless refreshed by the heartbeat; a
    # crashed process's users vanish from presence within this delay.
    presence_ttl_seconds: float = 30.0
    presence_heartbeat_seconds: float = 10.0
    # Each process checks every room it serves against storage this often,
    # to deliver a message whose publish was lost with a crashed process.
    catchup_interval_seconds: float = 10.0
    # On SIGTERM, how long to wait for messages being stored to finish.
    shutdown_grace_seconds: float = 10.0
    history_limit: int = 50
    max_frame_bytes: int = 64 * 1024
    # A ping every ``ws_ping_interval`` seconds; a peer that has not answered
    # within ``ws_ping_timeout`` is dropped (Tornado caps the timeout at the
    # interval).
    ws_ping_interval: float = DEFAULT_WS_PING_INTERVAL
    ws_ping_timeout: float = DEFAULT_WS_PING_TIMEOUT
    # Per-socket cap on frames queued but not yet written (slow consumers).
    ws_max_buffer_bytes: int = DEFAULT_WS_MAX_BUFFER_BYTES
    allowed_origins: tuple[str, ...] = ()
    xheaders: bool = False
    debug: bool = False
    template_path: Path = field(default=PROJECT_ROOT / "templates")
    static_path: Path = field(default=PROJECT_ROOT / "static")

    def with_port(self, port: int) -> "Settings":
        return replace(self, port=port)

    @property
    def instance(self) -> str:
        return self.instance_name or f"{socket.gethostname()}:{self.port}"


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
) -> Settings:
    """Build :class:`Settings` from the environment and an optional ``.env``."""
    env: dict[str, str] = {}
    path = dotenv_path if dotenv_path is not None else PROJECT_ROOT / ".env"
    if path.is_file():
        env.update(parse_dotenv(path.read_text(encoding="utf-8")))
    env.update(os.environ if environ is None else environ)

    def get(name: str, default: str = "") -> str:
        # An empty value (`CHAT_PORT=` as in .env.example) means "use the default".
        return env.get(name, "").strip() or default

    secrets_raw = get("CHAT_COOKIE_SECRETS")
    cookie_secrets = tuple(s.strip() for s in secrets_raw.split(",") if s.strip())
    if not cookie_secrets:
        raise ConfigError(
            "CHAT_COOKIE_SECRETS is not set. `make run` creates one in .env; "
            "elsewhere generate one with `python -m chat.tools.secret` and set it."
        )
    for secret in cookie_secrets:
        if len(secret) < 32:
            raise ConfigError("each CHAT_COOKIE_SECRETS key must be at least 32 characters")

    origins = tuple(o.strip().rstrip("/") for o in get("CHAT_ALLOWED_ORIGINS").split(",") if o.strip())
    defaults = Settings(cookie_secrets=cookie_secrets)
    return Settings(
        cookie_secrets=cookie_secrets,
        database_url=get("CHAT_DATABASE_URL", defaults.database_url),
        broker_url=get("CHAT_BROKER_URL", defaults.broker_url),
        host=get("CHAT_HOST", defaults.host),
        port=int(_number("CHAT_PORT", get("CHAT_PORT", str(defaults.port)), int, 0)),
        instance_name=get("CHAT_INSTANCE_NAME"),
        cookie_secure=_bool("CHAT_COOKIE_SECURE", get("CHAT_COOKIE_SECURE", "false")),
        session_max_age=int(_number("CHAT_SESSION_MAX_AGE", get("CHAT_SESSION_MAX_AGE", str(defaults.session_max_age)), int, 1)),
        session_recheck_seconds=_number(
            "CHAT_SESSION_RECHECK_SECONDS",
            get("CHAT_SESSION_RECHECK_SECONDS", str(defaults.session_recheck_seconds)), float, 0,
        ),
        bcrypt_rounds=int(_number("CHAT_BCRYPT_ROUNDS", get("CHAT_BCRYPT_ROUNDS", str(defaults.bcrypt_rounds)), int, 4)),
        rate_limit_burst=int(_number("CHAT_RATE_LIMIT_BURST", get("CHAT_RATE_LIMIT_BURST", str(defaults.rate_limit_burst)), int, 1)),
        rate_limit_per_second=_number(
            "CHAT_RATE_LIMIT_PER_SECOND", get("CHAT_RATE_LIMIT_PER_SECOND", str(defaults.rate_limit_per_second)), float, 0.01,
        ),
        presence_ttl_seconds=_number(
            "CHAT_PRESENCE_TTL_SECONDS", get("CHAT_PRESENCE_TTL_SECONDS", str(defaults.presence_ttl_seconds)), float, 1,
        ),
        presence_heartbeat_seconds=_number(
            "CHAT_PRESENCE_HEARTBEAT_SECONDS",
            get("CHAT_PRESENCE_HEARTBEAT_SECONDS", str(defaults.presence_heartbeat_seconds)), float, 0.1,
        ),
        catchup_interval_seconds=_number(
            "CHAT_CATCHUP_INTERVAL_SECONDS",
            get("CHAT_CATCHUP_INTERVAL_SECONDS", str(defaults.catchup_interval_seconds)), float, 0.1,
        ),
        shutdown_grace_seconds=_number(
            "CHAT_SHUTDOWN_GRACE_SECONDS",
            get("CHAT_SHUTDOWN_GRACE_SECONDS", str(defaults.shutdown_grace_seconds)), float, 0,
        ),
        ws_ping_interval=_number(
            "CHAT_WS_PING_INTERVAL", get("CHAT_WS_PING_INTERVAL", str(defaults.ws_ping_interval)), float, 0.1,
        ),
        ws_ping_timeout=_number(
            "CHAT_WS_PING_TIMEOUT", get("CHAT_WS_PING_TIMEOUT", str(defaults.ws_ping_timeout)), float, 0,
        ),
        ws_max_buffer_bytes=int(_number(
            "CHAT_WS_MAX_BUFFER_BYTES", get("CHAT_WS_MAX_BUFFER_BYTES", str(defaults.ws_max_buffer_bytes)), int, 4096,
        )),
        allowed_origins=origins,
        xheaders=_bool("CHAT_XHEADERS", get("CHAT_XHEADERS", "false")),
        debug=_bool("CHAT_DEBUG", get("CHAT_DEBUG", "false")),
    )


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
        handle.write(f"{prefix}# Generated by `make run`; keep it private. Comma-separate keys to rotate (newest last).\n")
        handle.write(f"CHAT_COOKIE_SECRETS={generate_secret()}\n")
    return True
