"""Registration, sign-in and server-side sessions.

The browser holds only a signed cookie with a random session token; the
database holds a SHA-256 of that token. Signing out deletes the record, so a
copied cookie stops working at once, and a leaked database holds no usable
tokens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import itertools
import logging
import secrets
from collections.abc import Callable, Collection
from time import monotonic

from cachetools import TTLCache

from ...errors import Conflict, Forbidden, FormErrors, Unavailable, ValidationError
from ...events import EventBus, SessionsEnded
from ...models import Session, User, utcnow
from ...storage import Storage
from ...wire.actions import Action
from ...wire.text import USERNAME_PATTERN, USERNAME_RULE
from .. import audit
from ..batching import batched_reads
from ..limits import Limiter
from . import common_passwords
from .passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH, PasswordHasher

# 256 bits of randomness; the issue asks for at least 128.
SESSION_TOKEN_BYTES = 32
# How long, and how many, users behind live sessions are remembered (see Accounts.resolve).
USER_CACHE_SECONDS = 30.0
USER_CACHE_SIZE = 100_000
# Idle ends written in one storage call at most.
TOUCH_BATCH = 500

log = logging.getLogger(__name__)


def session_key(token: str) -> str:
    """The id under which a session token is stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


WRONG_CREDENTIALS = "Wrong username or password."


class Accounts:
    """Accounts and their sessions.

    A session ends at its absolute end (``session_max_age`` after sign-in)
    or after ``idle_timeout`` without activity, whichever comes first.
    Activity moves the idle end forward, written at most every
    ``touch_interval`` so a busy user costs a write now and then rather than
    one per request.
    """

    def __init__(
        self,
        storage: Storage,
        hasher: PasswordHasher,
        session_max_age: int,
        idle_timeout: int | None = None,
        *,
        limiter: Limiter | None = None,
        events: EventBus | None = None,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self._storage = storage
        # Ended sessions are published (SessionsEnded) so their sockets close on every process.
        self._events = events or EventBus()
        self._hasher = hasher
        common_passwords.load()  # once per process, at start-up rather than in a registration
        self._limiter = limiter
        self._clock = clock
        self.session_max_age = session_max_age
        self.idle_timeout = idle_timeout if idle_timeout is not None else session_max_age
        self.touch_interval = datetime.timedelta(seconds=min(60.0, self.idle_timeout / 10))
        # Users behind live sessions, so that a storm of handshakes reads each
        # user once, not once per socket. Safe because the session itself is
        # always read from storage: disabling an account, changing a password
        # and signing out all end sessions, which no cached user outlives.
        self._users: TTLCache[str, User] = TTLCache(USER_CACHE_SIZE, USER_CACHE_SECONDS, timer=monotonic)
        # Sessions are read every time (that is what makes signing out
        # immediate), but reads that arrive together go together.
        self._sessions = batched_reads(lambda keys: self._storage.sessions.get_many(keys), name="session look-ups")
        self._user_reads = batched_reads(lambda ids: self._storage.users.get_many(ids), name="user look-ups")
        # Idle ends to write (session key -> new idle end), and their writer.
        self._touches: dict[str, datetime.datetime] = {}
        self._touch_writer: asyncio.Task[None] | None = None

    # -- rules --------------------------------------------------------------

    @staticmethod
    def validate_username(username: str) -> str:
        username = username.strip()
        if not USERNAME_PATTERN.fullmatch(username):
            raise ValidationError(f"Usernames are {USERNAME_RULE}.", field="username")
        return username

    @staticmethod
    def validate_password(password: str, field: str = "password", username: str = "") -> None:
        """Length, and not a common or guessable value (NIST SP 800-63B: no composition rules, a blocklist)."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValidationError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.", field=field)
        if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            raise ValidationError(
                f"Passwords can be at most {MAX_PASSWORD_BYTES} bytes (fewer if they use non-ASCII characters).",
                field=field,
            )
        if common_passwords.is_common(password):
            raise ValidationError(
                "That password is one of the most common ones, the first a guesser tries: choose another.",
                field=field,
            )
        if username and username.lower() in password.lower():
            raise ValidationError("A password must not contain your username.", field=field)

    # -- registration and sign-in -----------------------------------------

    async def register(self, username: str, password: str, confirmation: str, client_ip: str = "") -> User:
        # Every field's problem at once (FormErrors): one at a time made a
        # person fix, submit and be refused again for the next.
        errors: dict[str, str] = {}
        try:
            username = self.validate_username(username)
        except ValidationError as exc:
            errors["username"] = exc.message
        try:
            self.validate_password(password, username=username.strip())
        except ValidationError as exc:
            errors["password"] = exc.message
        if "password" not in errors and password != confirmation:
            # Both boxes come back empty: the message, and the focus, go to the first.
            errors["password"] = "The two passwords do not match: type it again in both boxes."
        if errors:
            raise FormErrors(errors)
        if self._limiter is not None:
            await self._limiter.take(Action.REGISTRATION, self._limiter.address(client_ip))
        # Cheap early answer for the common case; the unique index decides races.
        if await self._storage.users.get_by_username(username) is not None:
            raise ValidationError("That username is taken.", field="username")
        password_hash = await self._hasher.hash(password)
        try:
            user = await self._storage.users.add(username, password_hash)
        except Conflict:
            raise ValidationError("That username is taken.", field="username") from None
        audit.event("registered", user=user.id, ip=client_ip or None)
        return user

    async def authenticate(self, username: str, password: str, client_ip: str = "") -> User:
        """The user these credentials name, or ValidationError(WRONG_CREDENTIALS).

        Unknown user, wrong password, disabled account and an account locked
        after too many failures all get the same answer in the same time (a
        bcrypt check runs in every case), so none of them can be told apart.
        Attempts are limited per client address (a refusal there is
        :class:`RateLimited`, which names no account).
        """
        name = username.strip()
        account = name.lower()
        if self._limiter is not None:
            await self._limiter.take(Action.LOGIN, self._limiter.address(client_ip))
        locked = not await self._reserve_attempt(account)
        user = await self._storage.users.get_by_username(name) if name else None
        usable = user is not None and not user.disabled and not locked
        ok = await self._hasher.verify(password, user.password_hash if user is not None and usable else None)
        if user is None or not usable or not ok:
            # A name that matches no account is not logged: people type
            # passwords into the username box.
            reason = "locked" if locked else "disabled" if user is not None and user.disabled else "wrong"
            audit.event("sign_in_failed", user=user.id if user else None, reason=reason, ip=client_ip)
            raise ValidationError(WRONG_CREDENTIALS)
        await self._forget_failures(account)
        return user

    async def _reserve_attempt(self, account: str) -> bool:
        """Count a password check of ``account`` as a failure before it runs; False if the account is locked.

        Counted first, not after: the check takes a while in a thread, and
        attempts sent together would otherwise all be checked past the lock.
        A success forgets the count (:meth:`_forget_failures`).
        """
        return self._limiter is None or await self._limiter.try_take(Action.LOGIN_FAILURE, account)

    async def _forget_failures(self, account: str) -> None:
        if self._limiter is not None:
            await self._limiter.reset(Action.LOGIN_FAILURE, account)

    async def change_password(
        self, user: User, current: str, new: str, confirmation: str, keep_token: str, client_ip: str = ""
    ) -> int:
        """Replace ``user``'s password; end every other session. Returns how many ended.

        The current password is checked as a sign-in checks one, under the
        same limits (attempts per address, failures per account, the lock):
        a stolen session cookie must not be a way to guess the password.
        """
        if self._limiter is not None:
            await self._limiter.take(Action.LOGIN, self._limiter.address(client_ip))
        account = user.username.lower()
        locked = not await self._reserve_attempt(account)
        # The stored hash, not the one in ``user``: that may be a cached copy
        # from before a change made through another process.
        stored = await self._storage.users.get(user.id)
        usable = stored is not None and not locked
        ok = await self._hasher.verify(current, stored.password_hash if stored is not None and usable else None)
        if not usable or not ok:
            audit.event("password_check_failed", user=user.id, reason="locked" if locked else "wrong", ip=client_ip)
            raise ValidationError("That is not your current password.", field="current")
        await self._forget_failures(account)
        self.validate_password(new, username=user.username)
        if new != confirmation:
            raise ValidationError("The two new passwords do not match: type it again in both boxes.", field="password")
        await self._storage.users.set_password(user.id, await self._hasher.hash(new))
        self._users.pop(user.id, None)
        audit.event("password_changed", user=user.id)
        return await self.end_other_sessions(user, keep_token)

    async def disable(self, user_id: str) -> int:
        """Refuse the account's sign-ins and end all its sessions, everywhere. Returns how many ended."""
        await self._storage.users.set_disabled(user_id, True)
        self._users.pop(user_id, None)
        audit.event("account_disabled", user=user_id)
        ended = await self._storage.sessions.delete_for_user(user_id)
        await self._announce(ended, user_id, "disabled")
        return len(ended)

    async def enable(self, user_id: str) -> None:
        await self._storage.users.set_disabled(user_id, False)
        self._users.pop(user_id, None)
        audit.event("account_enabled", user=user_id)

    # -- site administration (python -m chat.admin) ------------------------

    async def create(self, username: str, password: str, *, admin: bool = False) -> User:
        """Make an account as a site administrator does: no confirmation, no registration limit.

        Conflict if the name is taken (ignoring case).
        """
        username = self.validate_username(username)
        self.validate_password(password)
        user = await self._storage.users.add(username, await self._hasher.hash(password))
        if admin:
            await self._storage.users.set_admin(user.id, True)
            user = dataclasses.replace(user, admin=True)
        audit.event("account_created", user=user.id, admin=admin or None)
        return user

    async def set_admin(self, user_id: str, admin: bool) -> None:
        """Make or unmake a site administrator.

        Processes that remember the user (``USER_CACHE_SECONDS``) see the
        change when they read it again.
        """
        await self._storage.users.set_admin(user_id, admin)
        self._users.pop(user_id, None)
        audit.event("admin_granted" if admin else "admin_revoked", user=user_id)

    async def reset_password(self, user_id: str, password: str) -> int:
        """Set a new password without the old one, and end every session. Returns how many ended."""
        self.validate_password(password)
        await self._storage.users.set_password(user_id, await self._hasher.hash(password))
        self._users.pop(user_id, None)
        audit.event("password_reset", user=user_id)
        ended = await self._storage.sessions.delete_for_user(user_id)
        await self._announce(ended, user_id, "password reset")
        return len(ended)

    async def sessions_of(self, user_id: str | None = None, limit: int = 1000) -> list[Session]:
        """The live sessions of one user (of everyone if None), newest first."""
        return await self._storage.sessions.list_live(user_id, limit)

    async def end_sessions(self, user_id: str, keys: Collection[str] | None = None) -> int:
        """End these stored sessions of ``user_id`` (all of them if None), everywhere. Returns how many ended."""
        if keys is None:
            ended = await self._storage.sessions.delete_for_user(user_id)
        else:
            ended = list(keys)
            for key in ended:
                await self._storage.sessions.delete(key)
        await self._announce(ended, user_id, "ended by an administrator")
        return len(ended)

    async def set_account_enabled(self, admin: User, username: str, *, enabled: bool) -> User:
        """A site administrator disables (or enables again) the named account; returns it."""
        if not admin.admin:
            raise Forbidden("Only site administrators may do that.")
        target = await self._storage.users.get_by_username(username.strip())
        if target is None:
            raise ValidationError(f"There is no user named {username.strip()!r}.", field="username")
        if target.id == admin.id:
            raise ValidationError("Administrators do not disable themselves.", field="username")
        if enabled:
            await self.enable(target.id)
        else:
            await self.disable(target.id)
        return target

    # -- sessions -----------------------------------------------------------

    async def start_session(self, user: User) -> str:
        """Create a session for ``user`` and return its (secret) token."""
        token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
        now = self._clock()
        expires_at = now + datetime.timedelta(seconds=self.session_max_age)
        idle_expires_at = min(expires_at, now + datetime.timedelta(seconds=self.idle_timeout))
        await self._storage.sessions.add(session_key(token), user.id, expires_at, idle_expires_at)
        return token

    async def resolve(self, token: str) -> tuple[Session, User] | None:
        """The live session and its user, or None when signed out, expired, idle or disabled.

        Resolving is activity: it moves the session's idle end (now and then).
        """
        key = session_key(token)
        # Taken before the read: a write finishing during it may have been
        # read too early and be gone from here by the time it returns.
        unwritten = self._touches.get(key)
        session = await self._sessions.outcome(key, key)
        now = self._clock()
        # Storage judges by its own clock; this check by ours as well makes
        # the timeouts testable with a clock the test moves.
        unwritten = self._touches.get(key, unwritten)
        if session is not None and unwritten is not None:
            # Activity recorded here but not written yet counts already.
            session = dataclasses.replace(session, idle_expires_at=max(session.idle_expires_at, unwritten))
        if session is None or min(session.expires_at, session.idle_expires_at) <= now:
            return None
        user = self._users.get(session.user_id)
        if user is None:
            user = await self._user_reads.outcome(session.user_id, session.user_id)
            if user is None or user.disabled:
                return None
            self._users[user.id] = user
        self._touch(session)
        return session, user

    async def is_live(self, token: str) -> bool:
        return await self.resolve(token) is not None

    async def live_sessions(self, keys: Collection[str]) -> set[str]:
        """Which of these stored session keys are still live (for sockets' periodic re-check)."""
        return await self._storage.sessions.live(keys)

    async def end_session(self, token: str) -> None:
        key = session_key(token)
        await self._storage.sessions.delete(key)
        await self._announce([key], None, "signed out")

    async def end_other_sessions(self, user: User, keep_token: str) -> int:
        """Sign ``user`` out everywhere but the session of ``keep_token``."""
        ended = await self._storage.sessions.delete_for_user(user.id, keep=session_key(keep_token))
        await self._announce(ended, user.id, "signed out elsewhere")
        return len(ended)

    def _touch(self, session: Session) -> None:
        """Record activity: move the idle end, written behind the request (now and then, many at once)."""
        now = self._clock()
        idle = datetime.timedelta(seconds=self.idle_timeout)
        last_recorded = session.idle_expires_at - idle
        if now - last_recorded < self.touch_interval:
            return
        self._touches[session.id] = min(session.expires_at, now + idle)
        if self._touch_writer is None:
            self._touch_writer = asyncio.create_task(self._write_touches(), name="session-touches")

    async def _write_touches(self) -> None:
        # Not on the request's path: after a restart, thousands of sockets
        # come back at once, and each would otherwise wait for a write.
        try:
            while self._touches:
                batch = dict(itertools.islice(self._touches.items(), TOUCH_BATCH))
                try:
                    await self._storage.sessions.touch_many(batch)
                except Unavailable as exc:
                    log.warning("could not record activity of %d sessions: %s", len(batch), exc)
                for key, written in batch.items():
                    if self._touches.get(key) == written:
                        del self._touches[key]
        finally:
            self._touch_writer = None

    async def _announce(self, keys: list[str], user_id: str | None, reason: str) -> None:
        if not keys:
            return
        for key in keys:
            audit.event("session_ended", session=audit.session_ref(key), user=user_id, reason=reason)
        await self._events.publish(SessionsEnded(tuple(keys)))
