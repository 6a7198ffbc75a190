"""What every handler shares: the signed-in user, templates and error pages."""

from __future__ import annotations

import logging
from typing import Any

import jinja2
import tornado.web
from markupsafe import Markup

from ..config import Settings
from ..errors import Forbidden, NotFound, Unavailable
from ..models import User
from ..services.accounts import Accounts
from ..services.messages import Messages
from ..services.presence import Presence
from ..services.rooms import Rooms
from .cookies import COOKIE_NAME, SessionCookie

log = logging.getLogger(__name__)

ERROR_TITLES = {
    400: "Bad request",
    401: "Please sign in",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}


class SessionMixin(tornado.web.RequestHandler):
    """Loads the signed-in user; shared by page and WebSocket handlers."""

    session_token: str | None = None

    @property
    def config(self) -> Settings:
        return self.settings["chat_settings"]

    @property
    def accounts(self) -> Accounts:
        return self.settings["accounts"]

    @property
    def rooms(self) -> Rooms:
        return self.settings["rooms"]

    @property
    def messages(self) -> Messages:
        return self.settings["messages"]

    @property
    def presence(self) -> Presence:
        return self.settings["presence"]

    @property
    def session_cookie(self) -> SessionCookie:
        return self.settings["session_cookie"]

    async def prepare(self) -> None:
        # get_current_user cannot be a coroutine, so resolve the session here
        # and set current_user directly.
        token = self.session_cookie.decode(self.get_cookie(COOKIE_NAME))
        if token is None:
            return
        resolved = await self.accounts.resolve(token)
        if resolved is not None:
            self.session_token = token
            self.current_user = resolved[1]

    @property
    def user(self) -> User | None:
        return self.current_user


class BaseHandler(SessionMixin):
    @property
    def jinja(self) -> jinja2.Environment:
        return self.settings["jinja_env"]

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        )

    def render_template(self, template_name: str, **context: Any) -> None:
        self.finish(self.render_string_template(template_name, **context))

    def render_string_template(self, template_name: str, **context: Any) -> str:
        template = self.jinja.get_template(template_name)
        return template.render(
            current_user=self.current_user,
            xsrf_form_html=lambda: Markup(self.xsrf_form_html()),
            static_url=self.static_url,
            request=self.request,
            **context,
        )

    async def sign_in(self, user: User) -> None:
        """Start a new session for ``user`` and set its cookie.

        A fresh id on every sign-in, and the old session ended, so a session
        id planted before sign-in (session fixation) is worthless afterwards.
        """
        if self.session_token:
            await self.accounts.end_session(self.session_token)
        token = await self.accounts.start_session(user)
        self.set_cookie(COOKIE_NAME, self.session_cookie.encode(token), **self.session_cookie.attributes())

    def clear_session_cookie(self) -> None:
        self.clear_cookie(COOKIE_NAME, path="/")

    # -- errors -----------------------------------------------------------

    def _exception(self, kwargs: dict[str, Any]) -> BaseException | None:
        exc_info = kwargs.get("exc_info")
        return exc_info[1] if exc_info else None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self._exception(kwargs)
        if isinstance(exc, Unavailable):
            status_code = 503
            self.set_header("Retry-After", "5")
        elif isinstance(exc, NotFound):
            status_code = 404
        elif isinstance(exc, Forbidden):
            status_code = 403
        self.set_status(status_code)
        message = exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else ""
        if status_code == 403 and "xsrf" in message.lower():
            message = "Your form expired or came from another site. Go back, reload the page and try again."
        elif status_code >= 500:
            message = ""  # never show internals
        context = {"status_code": status_code, "title": ERROR_TITLES.get(status_code, self._reason),
                   "message": message}
        try:
            page = self.render_string_template(f"{status_code}.html", **context)
        except jinja2.TemplateNotFound:
            page = self.render_string_template("error.html", **context)
        self.finish(page)

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, Unavailable):
            log.warning("503 %s: %s", self.request.uri, value)
        elif isinstance(value, (NotFound, Forbidden)):
            pass
        else:
            super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        await super().prepare()
        raise tornado.web.HTTPError(404)
