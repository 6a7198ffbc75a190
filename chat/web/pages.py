"""The HTML pages: thin handlers that parse the form, call a service, render."""

from __future__ import annotations

from urllib.parse import urlsplit

import tornado.web

from ..errors import RateLimited, Unavailable, ValidationError
from ..services import audit
from .base import AppHandler, BaseHandler


def safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would let phishers borrow our name."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/rooms"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/rooms"
    return target


class IndexHandler(BaseHandler):
    def get(self) -> None:
        self.redirect("/rooms" if self.current_user else "/login")


class RegisterHandler(BaseHandler):
    def get(self) -> None:
        if self.current_user:
            self.redirect("/rooms")
            return
        self.render_template("register.html", error=None, field=None, username="")

    async def post(self) -> None:
        username = self.get_body_argument("username", "")
        try:
            user = await self.accounts.register(
                username,
                self.get_body_argument("password", ""),
                self.get_body_argument("confirm", ""),
                self.client_ip,
            )
        except (ValidationError, RateLimited) as exc:
            error = self.form_refusal(exc)
            self.render_template("register.html", error=error, field=_field(exc), username=username)
            return
        await self.sign_in(user)
        self.redirect("/rooms")


class LoginHandler(BaseHandler):
    def get(self) -> None:
        if self.current_user:
            self.redirect(safe_next(self.get_query_argument("next", None)))
            return
        self.render_template("login.html", error=None, username="", next=self.get_query_argument("next", ""))

    async def post(self) -> None:
        username = self.get_body_argument("username", "")
        next_url = self.get_body_argument("next", "")
        try:
            user = await self.accounts.authenticate(username, self.get_body_argument("password", ""), self.client_ip)
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
    """Your account: change the password, sign out everywhere else."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.render_template("account.html", error=None, field=None, notice=None)

    @tornado.web.authenticated
    async def post(self, action: str) -> None:
        token = self.session_token or ""
        try:
            if action == "password":
                ended = await self.accounts.change_password(
                    self.user,
                    self.get_body_argument("current", ""),
                    self.get_body_argument("password", ""),
                    self.get_body_argument("confirm", ""),
                    keep_token=token,
                )
                # A new session id after the change, too (the old cookie is dead).
                await self.sign_in(self.user)
                notice = f"Password changed. {_sessions(ended)} signed out."
            else:
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
        if self.session_token:
            await self.accounts.end_session(self.session_token)
        self.clear_session_cookie()
        self.redirect("/login")


class RoomsHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self._render(error=None, name="")

    @tornado.web.authenticated
    async def post(self) -> None:
        name = self.get_body_argument("name", "")
        try:
            room = await self.rooms.create(name, self.user)
        except (ValidationError, RateLimited) as exc:
            await self._render(error=self.form_refusal(exc), name=name)
            return
        self.redirect(f"/rooms/{room.id}")

    async def _render(self, error: str | None, name: str) -> None:
        self.render_template("rooms.html", rooms=await self.rooms.list(), error=error, name=name)


class RoomHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self, room_id: str) -> None:
        room = await self.rooms.get(room_id)
        messages, has_more = await self.messages.recent(room.id)
        online = await self.presence.online(room.id)
        last_seq = messages[-1].seq if messages else 0
        self.render_template(
            "room.html", room=room, messages=messages, has_more=has_more, last_seq=last_seq, online=online
        )


class HealthHandler(AppHandler):
    """``/healthz``: the process answers. No session, no database work, so it stays cheap."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish({"status": "ok", "instance": self.config.instance})


class ReadinessHandler(AppHandler):
    """``/readyz``: the database and the broker both answer; 503 otherwise."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        checks: dict[str, str] = {}
        for name, probe in (("database", self.services.storage.ping), ("broker", self.services.broker.ping)):
            try:
                await probe()
                checks[name] = "ok"
            except Unavailable as exc:
                checks[name] = f"unavailable: {exc}"
        if self.services.draining:
            checks["process"] = "shutting down"
        ready = all(value == "ok" for value in checks.values())
        self.set_status(200 if ready else 503)
        self.finish({"status": "ok" if ready else "unavailable", "checks": checks, "instance": self.config.instance})
