"""What every handler shares: dependencies, the signed-in user, templates and error answers.

``AppHandler`` reaches the application's services through read-only
properties (JupyterHub's ``BaseHandler`` is the model) and turns exceptions
into answers with the one table in :data:`chat.wire.REFUSALS`.
``BaseHandler`` adds the session and the pages; page handlers and the room
WebSocket both build on it. Health probes use ``AppHandler`` alone: they load
no session.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import jinja2
import tornado.httputil
import tornado.web
from markupsafe import Markup

from .. import logs
from ..bootstrap import Services
from ..config import Settings
from ..errors import ChatError, RateLimited, Unavailable
from ..models import User
from ..origins import normalize_origin, site_origin, socket_origin
from ..services import audit
from ..services.conversation.messages import Messages
from ..services.identity.accounts import Accounts
from ..services.realtime.presence import Presence
from ..services.rooms.catalog import Rooms
from ..services.rooms.membership import Memberships
from ..services.rooms.unread import Badge
from ..wire.refusals import refusal_for, retry_after_header
from .cookies import SessionCookie
from .forms import read_form
from .proxies import TrustedProxies
from .transport import WriteBatcher

log = logging.getLogger(__name__)

ERROR_TITLES = {
    400: "Bad request",
    401: "Please sign in",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}
# Seconds a client should wait before retrying when a backing service is down.
UNAVAILABLE_RETRY_AFTER = 5
# A year, and subdomains too: what browsers' HSTS preload lists ask for.
HSTS = "max-age=31536000; includeSubDomains"


def content_security_policy(socket_origin_: str | None) -> str:
    """The CSP of every answer: scripts and styles from our own files only, no plugins, no framing.

    ``connect-src`` names the WebSocket origin explicitly because some
    browsers do not let ``'self'`` cover ``ws:``/``wss:``.
    """
    connect = f"'self' {socket_origin_}" if socket_origin_ else "'self'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


class ChatApplication(tornado.web.Application):
    """The Tornado application with the process's services and web tools as typed attributes."""

    def __init__(
        self,
        handlers: list[Any],
        *,
        services: Services,
        jinja: jinja2.Environment,
        session_cookie: SessionCookie,
        proxies: TrustedProxies,
        **settings: Any,
    ) -> None:
        super().__init__(handlers, **settings)
        self.services = services
        self.jinja = jinja
        self.session_cookie = session_cookie
        self.proxies = proxies
        # One per process: ends each event-loop turn by writing what every
        # socket was sent during it (see chat.web.transport).
        self.write_batcher = WriteBatcher()

    def find_handler(self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        # First thing for every request (pages, sockets, static files), so
        # that handlers, the access log and every error line see the real
        # client: what a trusted proxy forwarded, else the peer itself.
        peer = str(request.remote_ip)
        request.remote_ip = self.proxies.client_ip(peer, request.headers)
        request.protocol = self.proxies.scheme(peer, request.headers, request.protocol)
        # Every line logged about this request (the access line too) carries its id and client.
        logs.bind_request(request.remote_ip)
        # The body limit, before the body is read: a form over it is read and
        # thrown away and answered with a page saying so (a browser whose
        # upload is cut off shows a reset connection, not our answer).
        limit = self.services.settings.max_body_bytes
        declared = request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            return self.get_handler_delegate(request, TooLargeHandler)
        set_max_body_size = getattr(request.connection, "set_max_body_size", None)
        if set_max_body_size is not None:
            set_max_body_size(limit)  # a chunked body stops at the limit too
        return super().find_handler(request, **kwargs)


class AppHandler(tornado.web.RequestHandler):
    """Dependencies as read-only properties, and errors answered from one table."""

    @property
    def app(self) -> ChatApplication:
        return cast(ChatApplication, self.application)

    @property
    def services(self) -> Services:
        return self.app.services

    @property
    def config(self) -> Settings:
        return self.services.settings

    @property
    def accounts(self) -> Accounts:
        return self.services.accounts

    @property
    def rooms(self) -> Rooms:
        return self.services.rooms

    @property
    def memberships(self) -> Memberships:
        return self.services.memberships

    @property
    def messages(self) -> Messages:
        return self.services.messages

    @property
    def presence(self) -> Presence:
        return self.services.presence

    @property
    def client_ip(self) -> str:
        """The client's address: the peer's, or the one a trusted proxy forwarded (``CHAT_TRUSTED_PROXIES``)."""
        return str(self.request.remote_ip)

    @property
    def from_trusted_network(self) -> bool:
        """Whether the client itself is inside a trusted network (the deployment's own machines)."""
        return self.app.proxies.trusts(self.client_ip)

    @property
    def site_origin(self) -> str | None:
        """The origin this request was addressed to: the scheme the client used, and ``Host``."""
        return site_origin(self.request.protocol, self.request.headers.get("Host"))

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a page from ``origin`` may talk to us: exactly our own origin, or a listed one.

        Scheme, host and port must all match; ``null``, a missing origin and
        anything that merely starts or ends like ours are refused.
        """
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        return normalized == self.site_origin or normalized in self.config.allowed_origins

    def check_trusted_origin(self, origin: str) -> bool:
        # Tornado's cross-origin protection for POSTs (on top of the XSRF token).
        return self.origin_allowed(origin)

    def set_default_headers(self) -> None:
        # Nothing about what runs here: no version for scanners to match.
        self.clear_header("Server")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "strict-origin-when-cross-origin")
        own = self.site_origin
        self.set_header("Content-Security-Policy", content_security_policy(socket_origin(own) if own else None))
        # Every answer is personal or live (pages show who is signed in, forms
        # carry a token, probes report now): never stored, so Back after
        # signing out asks the server again instead of showing the room.
        self.set_header("Cache-Control", "no-store")
        if self.config.cookie_secure or self.request.protocol == "https":
            self.set_header("Strict-Transport-Security", HSTS)

    async def head(self, *args: str) -> None:
        """The ``GET`` answer without its body (Tornado leaves it out): what monitors and link checkers ask."""
        if not self.answers("GET"):
            raise tornado.web.HTTPError(405)
        answered = self.get(*args)
        if answered is not None:
            await answered

    def answers(self, method: str) -> bool:
        """Whether this handler implements ``method`` (HEAD wherever GET is)."""
        if method == "HEAD":
            method = "GET"
        implemented = getattr(type(self), method.lower(), None)
        return implemented is not None and implemented is not getattr(tornado.web.RequestHandler, method.lower())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            # RFC 9110: a 405 says which methods the resource does answer.
            self.set_header("Allow", ", ".join(m for m in ("GET", "HEAD", "POST") if self.answers(m)))
        exc = _exception(kwargs)
        refusal = refusal_for(exc) if exc is not None else None
        if refusal is not None:
            status_code = refusal.status
            self.set_status(status_code)
        retry_after = getattr(exc, "retry_after", UNAVAILABLE_RETRY_AFTER if status_code == 503 else None)
        if retry_after is not None:
            self.set_header("Retry-After", retry_after_header(retry_after))
        message = exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else ""
        if status_code >= 500:
            message = ""  # never show internals
        self.render_error(status_code, ERROR_TITLES.get(status_code, self._reason), message)

    def render_error(self, status_code: int, title: str, message: str) -> None:
        """Send the body of an error answer (overridden for pages)."""
        self.finish({"error": title, "message": message} if message else {"error": title})

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        refusal = refusal_for(value) if value is not None else None
        if refusal is None:
            super().log_exception(typ, value, tb)
        elif refusal.status >= 500:
            # An outage, not a bug: one line, no traceback.
            log.warning("%d %s %s: %s", refusal.status, self.request.method, self.request.uri, value)


def _exception(kwargs: dict[str, Any]) -> BaseException | None:
    exc_info = kwargs.get("exc_info")
    return exc_info[1] if exc_info else None


class BaseHandler(AppHandler):
    """Loads the signed-in user; renders pages. Shared by page and WebSocket handlers."""

    session_token: str | None = None
    # The signed-in reader's rooms with their counts, for the sidebar of a page (None: no sidebar).
    badges: list[Badge] | None = None
    # Whether GETs (and refused POSTs) answer with an HTML page with a sidebar; sockets and JSON probes do not.
    renders_pages: bool = True

    @property
    def session_cookie(self) -> SessionCookie:
        return self.app.session_cookie

    @property
    def user(self) -> User:
        """The signed-in user, for handlers behind ``@authenticated`` (or that checked)."""
        return cast(User, self.current_user)

    async def prepare(self) -> None:
        # get_current_user cannot be a coroutine, so resolve the session here
        # and set current_user directly.
        # Only the cookie: a session id in the URL or a form is never looked at.
        cookie = self.get_cookie(self.session_cookie.name)
        if not cookie:
            return
        token = self.session_cookie.decode(cookie)
        resolved = await self.accounts.resolve(token) if token is not None else None
        if resolved is None:
            # Tampered, foreign, expired or signed out: the visitor is simply
            # signed out. Worth a line: a stream of these is someone guessing.
            reason = "bad signature or expired" if token is None else "no live session"
            audit.throttled("session_cookie_refused", self.client_ip, reason=reason, ip=self.client_ip)
            return
        self.session_token = token
        self.current_user = resolved[1]
        logs.bind(user_id=resolved[1].id)
        # A POST too: a refused form is answered with its page again, sidebar included.
        if self.request.method in ("GET", "POST") and self.renders_pages:
            try:
                self.badges = await self.services.unread.badges(resolved[1])
            except Unavailable as exc:
                log.warning("no sidebar for this page: %s", exc)  # the page itself may still render

    def form(self, *fields: str) -> dict[str, str]:
        """The submitted form's ``fields``, validated at the edge (see :func:`chat.web.forms.read_form`)."""
        return read_form(self.request.body_arguments, fields, files=bool(self.request.files))

    def render_template(self, template_name: str, **context: Any) -> None:
        self.finish(self.render_string_template(template_name, **context))

    def render_string_template(self, template_name: str, **context: Any) -> str:
        template = self.app.jinja.get_template(template_name)
        return template.render(
            current_user=self.current_user,
            xsrf_form_html=lambda: Markup(self.xsrf_form_html()),
            static_url=self.static_url,
            request=self.request,
            badges=self.badges,
            **context,
        )

    def render_error(self, status_code: int, title: str, message: str) -> None:
        if status_code == 403 and "xsrf" in message.lower():
            message = "Your form expired or came from another site. Go back, reload the page and try again."
        context = {"status_code": status_code, "title": title, "message": message}
        try:
            page = self.render_string_template(f"{status_code}.html", **context)
        except jinja2.TemplateNotFound:
            page = self.render_string_template("error.html", **context)
        self.finish(page)

    async def sign_in(self, user: User) -> None:
        """Start a new session for ``user`` and set its cookie.

        A fresh id on every sign-in, and the old session ended, so a session
        id planted before sign-in (session fixation) is worthless afterwards.
        """
        if self.session_token:
            await self.accounts.end_session(self.session_token)
        token = await self.accounts.start_session(user)
        logs.bind(user_id=user.id)
        self.set_cookie(self.session_cookie.name, self.session_cookie.encode(token), **self.session_cookie.attributes())

    def form_refusal(self, exc: ChatError) -> str:
        """Set the status (and Retry-After) for a refused form; return what to tell the person."""
        refusal = refusal_for(exc)
        self.set_status(refusal.status if refusal is not None else 400)
        if isinstance(exc, RateLimited):
            self.set_header("Retry-After", retry_after_header(exc.retry_after))
        return (refusal.public_message if refusal is not None else None) or str(exc)

    def clear_session_cookie(self) -> None:
        # With the same attributes it was set with: browsers ignore a
        # __Host- cookie (even an expired one) that is not Secure.
        attributes = {k: v for k, v in self.session_cookie.attributes().items() if k != "max_age"}
        self.clear_cookie(self.session_cookie.name, **attributes)


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        await super().prepare()
        raise tornado.web.HTTPError(404)


@tornado.web.stream_request_body
class TooLargeHandler(BaseHandler):
    """A request whose body is over the limit: the body is read and thrown away, then a 413 page."""

    def check_xsrf_cookie(self) -> None:
        # Nothing is done with the request; its token is in the body nobody reads.
        pass

    def data_received(self, chunk: bytes) -> None:
        pass

    def _refuse(self, *args: str) -> None:
        limit = self.config.max_body_bytes // 1024
        raise tornado.web.HTTPError(
            413, f"That was more than a form can send (at most {limit} KiB). Go back and send less at once."
        )

    get = post = put = patch = delete = options = _refuse
