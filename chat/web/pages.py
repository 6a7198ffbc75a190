"""The HTML pages: thin handlers that parse the form, call a service, render."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode, urlsplit

import tornado.web

from .. import metrics
from ..errors import Forbidden, FormErrors, RateLimited, Unavailable, ValidationError
from ..models import Membership, ModerationAction, ModerationEntry, Role, Room, RoomKind, User
from ..services import audit
from ..services.rooms.membership import can_moderate
from ..wire.text import has_control_characters
from .base import AppHandler, BaseHandler
from .forms import MAX_FIELD_LENGTH, read_seq

DEFAULT_NEXT = "/rooms"
# How long /readyz waits for each of the database and the broker to answer.
READINESS_PROBE_SECONDS = 1.5


def safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would let phishers borrow our name.

    Control characters are refused too: CR/LF would end the ``Location``
    header (Tornado raises rather than send it), and browsers drop tabs and
    newlines from URLs, so ``/<TAB>/evil.example`` would become
    ``//evil.example``.
    """
    if (
        not target
        or len(target) > MAX_FIELD_LENGTH
        or has_control_characters(target)
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
    ):
        return DEFAULT_NEXT
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return target


class IndexHandler(BaseHandler):
    def get(self) -> None:
        self.redirect("/rooms" if self.current_user else "/login")


class RegisterHandler(BaseHandler):
    def get(self) -> None:
        if self.current_user:
            self.redirect("/rooms")
            return
        self.render_template("register.html", error=None, field=None, errors={}, username="")

    async def post(self) -> None:
        form = self.form("username", "password", "confirm")
        username = form["username"]
        try:
            user = await self.accounts.register(username, form["password"], form["confirm"], self.client_ip)
        except (ValidationError, RateLimited) as exc:
            error = self.form_refusal(exc)
            errors = exc.errors if isinstance(exc, FormErrors) else {}
            self.render_template("register.html", error=error, field=_field(exc), errors=errors, username=username)
            return
        await self.sign_in(user)
        self.redirect("/rooms")


class LoginHandler(BaseHandler):
    def get(self) -> None:
        # Not stripped: Tornado turns most control characters into spaces but
        # keeps tab, CR and LF, and safe_next must see those to refuse them.
        next_url = safe_next(self.get_query_argument("next", None, strip=False))
        if self.current_user:
            self.redirect(next_url)
            return
        self.render_template("login.html", error=None, username="", next=next_url)

    async def post(self) -> None:
        form = self.form("username", "password", "next")
        username, next_url = form["username"], safe_next(form["next"])
        try:
            user = await self.accounts.authenticate(username, form["password"], self.client_ip)
        except (ValidationError, RateLimited) as exc:
            error = self.form_refusal(exc)
            self.render_template("login.html", error=error, username=username, next=next_url)
            return
        audit.event("signed_in", user=user.id, ip=self.client_ip)
        await self.sign_in(user)
        self.redirect(safe_next(next_url))


def _field(exc: Exception) -> str | None:
    return exc.field if isinstance(exc, ValidationError) else None


class AccountHandler(BaseHandler):
    """``GET /account``: change the password, sign out everywhere else (the forms post below)."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.render_template("account.html", error=None, field=None, notice=None)


class AccountActionHandler(BaseHandler):
    """``POST /account/password`` and ``POST /account/sign-out-others``."""

    @tornado.web.authenticated
    async def post(self, action: str) -> None:
        token = self.session_token or ""
        try:
            if action == "password":
                form = self.form("current", "password", "confirm")
                ended = await self.accounts.change_password(
                    self.user,
                    form["current"],
                    form["password"],
                    form["confirm"],
                    keep_token=token,
                    client_ip=self.client_ip,
                )
                # A new session id after the change, too (the old cookie is dead).
                await self.sign_in(self.user)
                notice = f"Password changed. {_sessions(ended)} signed out."
            else:
                self.form()
                notice = f"{_sessions(await self.accounts.end_other_sessions(self.user, token))} signed out."
        except (ValidationError, RateLimited) as exc:
            error = self.form_refusal(exc)
            self.render_template("account.html", error=error, field=_field(exc), notice=None)
            return
        self.render_template("account.html", error=None, field=None, notice=notice)


def _sessions(count: int) -> str:
    return (
        "No other sessions were"
        if count == 0
        else "1 other session was"
        if count == 1
        else f"{count} other sessions were"
    )


class LogoutHandler(BaseHandler):
    async def post(self) -> None:
        self.form()
        if self.session_token:
            await self.accounts.end_session(self.session_token)
        self.clear_session_cookie()
        self.redirect("/login")


class RoomsHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self._render(error=None, field=None, name="")

    @tornado.web.authenticated
    async def post(self) -> None:
        form = self.form("name", "private")
        name = form["name"]
        kind = RoomKind.PRIVATE if form["private"] else RoomKind.PUBLIC
        try:
            room = await self.rooms.create(name, self.user, kind)
        except (ValidationError, RateLimited) as exc:
            await self._render(error=self.form_refusal(exc), field=_field(exc), name=name)
            return
        self.redirect(f"/rooms/{room.id}")

    async def _render(self, error: str | None, field: str | None, name: str) -> None:
        page = read_seq("page", self.get_query_argument("page", "1"), minimum=1)
        listing = await self.rooms.listing(self.get_query_argument("q", ""), page)
        self.render_template("rooms.html", listing=listing, error=error, field=field, name=name)


class RoomPageHandler(BaseHandler):
    """What renders a room's page: the page itself, and its forms when one is refused."""

    async def render_room(
        self, room: Room, error: str | None = None, field: str | None = None, status: int = 200
    ) -> None:
        before_argument = self.get_query_argument("before", None)
        # Read before the messages: the page's socket asks for every edit after it.
        last_rev = await self.messages.stored_rev(room.id)
        if before_argument is None:
            messages, has_more = await self.messages.recent(room.id)
        else:
            # An older page: read without JavaScript by following "Older messages".
            before = read_seq("before", before_argument, minimum=1)
            messages, has_more = await self.messages.before(room.id, before, self.messages.history_limit)
        online = await self.presence.online(room.id)
        membership = await self.memberships.membership(self.user, room)
        members = await self.memberships.members(room)
        # The membership just read decides too: no second read of it.
        moderator = can_moderate(self.user, room, membership)
        moderation_log = await self.services.moderation.log(room) if moderator else []
        done = _done_message(
            self.get_query_argument("invited", None),
            self.get_query_argument("done", None),
            self.get_query_argument("user", None),
            self.get_query_argument("name", None),
            members,
            moderation_log,
        )
        last_seq = messages[-1].seq if messages else 0
        self.set_status(status)
        self.render_template(
            "room.html",
            room=room,
            title=room_title(room, members, self.user),
            messages=messages,
            has_more=has_more,
            last_seq=last_seq,
            last_rev=last_rev,
            online=online,
            membership=membership,
            members=members,
            moderator=moderator,
            moderation_log=moderation_log,
            error=error,
            field=field,
            done=done,
            archive=before_argument is not None,
            older_before=messages[0].seq if has_more and messages else None,
        )


class RoomHandler(RoomPageHandler):
    @tornado.web.authenticated
    async def get(self, room_id: str) -> None:
        room = await self.memberships.room_for(self.user, room_id)
        await self.render_room(room)


class RoomAccessHandler(BaseHandler):
    """``GET /rooms/{id}/access``: may the reader open this room's socket now?

    A browser is never told why a WebSocket handshake was refused, so the
    room page asks here after a socket closed before ``hello``: 401 means the
    session ended (say so and offer to sign in), 404 that the room is not
    there for the reader (deleted, private and left, removed), 403 a ban;
    200 or an outage (503, no answer) means keep reconnecting. The same
    checks as the handshake, in JSON, never a redirect.
    """

    renders_pages = False

    async def get(self, room_id: str) -> None:
        if self.current_user is None:
            raise tornado.web.HTTPError(401, "sign in first")
        await self.memberships.room_for(self.user, room_id)
        self.finish({"access": "ok"})

    def render_error(self, status_code: int, title: str, message: str) -> None:
        self.finish({"error": title})


def room_title(room: Room, members: list[Membership], reader: User) -> str:
    """A room's name, or for a DM the other person's."""
    if room.kind is RoomKind.DIRECT:
        others = [m.username for m in members if m.user_id != reader.id]
        return others[0] if others else reader.username
    return room.name


def _done_message(
    invited_id: str | None,
    action: str | None,
    user_id: str | None,
    username: str | None,
    members: list[Membership],
    moderation_log: list[ModerationEntry],
) -> str | None:
    """What a membership form just did, said on the room page it returns to.

    Only when the room says so too (the person is a member now; the latest
    moderation entries hold the removal or ban): a crafted link cannot make
    a page say something that did not happen.
    """
    if invited_id:
        invited = next((m.username for m in members if m.user_id == invited_id), None)
        return f"{invited} was invited: the room is in their list now." if invited else None
    logged = {"remove": ModerationAction.REMOVE_MEMBER, "ban": ModerationAction.BAN}.get(action or "")
    if logged is None or not user_id:
        return None
    if not any(entry.action == logged and entry.target == user_id for entry in moderation_log[:5]):
        return None
    who = username or "They"
    if logged is ModerationAction.BAN:
        return f"{who} was banned: removed, and kept out until unbanned."
    return f"{who} was removed from the room."


class RoomActionHandler(RoomPageHandler):
    """``POST /rooms/{id}/ACTION``: the membership and moderation forms of the room page."""

    @tornado.web.authenticated
    async def post(self, room_id: str, action: str) -> None:
        room = await self.memberships.room_for(self.user, room_id)
        memberships, moderation = self.memberships, self.services.moderation
        said: dict[str, str] = {}  # what the room page it returns to says was done
        try:
            if action == "topic":
                await moderation.set_topic(self.user, room, self.form("topic")["topic"])
            elif action == "rename":
                await moderation.rename(self.user, room, self.form("name")["name"])
            elif action == "role":
                form = self.form("user_id", "role")
                if form["role"] not in (Role.MODERATOR, Role.MEMBER):
                    raise ValidationError("A member's role is moderator or member.")
                await moderation.set_role(self.user, room, form["user_id"], Role(form["role"]))
            elif action == "join":
                await memberships.join(self.user, room)
            elif action == "leave":
                await memberships.leave(self.user, room)
                self.redirect("/rooms")
                return
            elif action == "invite":
                invited = await memberships.invite(self.user, room, self.form("username")["username"])
                # Said on the page it returns to (only while they are a member: a link cannot make it up).
                said = {"invited": invited.user_id}
            else:  # remove or ban: asked first, then done and said
                form = self.form("user_id", "username", "confirmed")
                if form["confirmed"] != "yes":
                    await self.confirm(room, action, form["user_id"])
                    return
                if action == "remove":
                    await memberships.remove(self.user, room, form["user_id"])
                else:
                    await memberships.ban(self.user, room, form["user_id"])
                said = {"done": action, "user": form["user_id"], "name": form["username"]}
        except (ValidationError, RateLimited) as exc:
            error = self.form_refusal(exc)  # 400, or 429 with Retry-After
            await self.render_room(room, error=error, field=_field(exc), status=self.get_status())
            return
        audit.event(f"room_{action}", user=self.user.id, room=room.id, ip=self.client_ip)
        self.redirect(f"/rooms/{room.id}?{urlencode(said)}" if said else f"/rooms/{room.id}")

    async def confirm(self, room: Room, action: str, user_id: str) -> None:
        """Ask before removing or banning someone: one click on a list of names was enough."""
        if not can_moderate(self.user, room, await self.memberships.membership(self.user, room)):
            raise Forbidden("Only the room's owner and moderators may do that.")
        members = await self.memberships.members(room)
        username = next((m.username for m in members if m.user_id == user_id), None)
        if username is None:
            raise ValidationError("That person is not a member of this room.")
        self.render_template("confirm_member_action.html", room=room, action=action, user_id=user_id, username=username)


class AdminPage(BaseHandler):
    """What the administration pages share: anyone but a site administrator finds no page here.

    A 404, not a redirect to sign in: the page's existence is nobody else's business.
    """

    def require_admin(self) -> None:
        if self.current_user is None or not self.user.admin:
            raise tornado.web.HTTPError(404)


class AdminHandler(AdminPage):
    """``GET /admin``: a site administrator disables and enables accounts."""

    def get(self) -> None:
        self.require_admin()
        self.render_template("admin.html", error=None, done=None)


class AdminActionHandler(AdminPage):
    """``POST /admin/disable`` and ``POST /admin/enable``."""

    async def post(self, action: str) -> None:
        self.require_admin()
        username = self.form("username")["username"]
        try:
            done = await self.accounts.set_account_enabled(self.user, username, enabled=action == "enable")
        except ValidationError as exc:
            self.set_status(400)
            self.render_template("admin.html", error=self.form_refusal(exc), done=None)
            return
        audit.event(f"admin_{action}", user=self.user.id, target=done.id, ip=self.client_ip)
        self.render_template("admin.html", error=None, done=f"{done.username} is {action}d.")


class DirectHandler(BaseHandler):
    """``/dm/{username}``: the private conversation of the reader and that user.

    ``GET`` only finds it: an existing conversation redirects to its room, a
    new one is offered on a page whose form ``POST`` s here to make it. A link
    (or another site) can never create rooms or fill someone's sidebar.
    """

    @tornado.web.authenticated
    async def get(self, username: str) -> None:
        other, room = await self.memberships.find_direct(self.user, username)
        if room is not None:
            self.redirect(f"/rooms/{room.id}")
            return
        self.render_template("direct.html", other=other, error=None)

    @tornado.web.authenticated
    async def post(self, username: str) -> None:
        self.form()
        try:
            room = await self.memberships.direct(self.user, username)
        except RateLimited as exc:
            other, _ = await self.memberships.find_direct(self.user, username)
            self.render_template("direct.html", other=other, error=self.form_refusal(exc))
            return
        self.redirect(f"/rooms/{room.id}")


class HealthHandler(AppHandler):
    """``/healthz``: the process answers. No session, no database work, so it stays cheap.

    The public learns only that it is up; the process's name is for the
    deployment's own machines (``CHAT_TRUSTED_PROXIES``: supervisord's
    neighbours, the cluster tool, a container health check).
    """

    def get(self) -> None:
        if self.from_trusted_network:
            self.finish({"status": "ok", "instance": self.config.instance})
        else:
            self.finish({"status": "ok"})


class MetricsHandler(AppHandler):
    """``/metrics``: this process's metrics for Prometheus (chat/metrics.py).

    For the deployment's own machines only (``CHAT_TRUSTED_PROXIES``); to
    anyone else there is no such page. nginx never passes it on either:
    Prometheus scrapes each process on its own port.
    """

    def get(self) -> None:
        if not self.from_trusted_network:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", metrics.CONTENT_TYPE_LATEST)
        self.finish(metrics.exposition())


class ReadinessHandler(AppHandler):
    """``/readyz``: the database and the broker both answer; 503 otherwise.

    What failed, and how, is shown to the deployment's own machines only.
    """

    async def get(self) -> None:
        checks: dict[str, str] = {}
        for name, probe in (("database", self.services.storage.ping), ("broker", self.services.broker.ping)):
            try:
                # A hung connection answers only when its client library gives
                # up (5 to 15 s); a prober wants its answer sooner than that.
                await asyncio.wait_for(probe(), READINESS_PROBE_SECONDS)
                checks[name] = "ok"
            except Unavailable as exc:
                checks[name] = f"unavailable: {exc}"
            except TimeoutError:
                checks[name] = f"unavailable: no answer within {READINESS_PROBE_SECONDS:g} s"
        if self.services.draining:
            checks["process"] = "shutting down"
        ready = all(value == "ok" for value in checks.values())
        self.set_status(200 if ready else 503)
        status = "ok" if ready else "unavailable"
        if self.from_trusted_network:
            self.finish({"status": status, "checks": checks, "instance": self.config.instance})
        else:
            self.finish({"status": status})
