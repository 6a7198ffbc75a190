"""A small programmatic user of the site: cookies, XSRF-protected forms, room sockets.

The soak tool drives the server through it, and the tests build on it.
"""

from __future__ import annotations

import http.cookies
import re
import uuid
from urllib.parse import urlencode, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

DEFAULT_PASSWORD = "correct horse battery"
# Tornado's XSRF cookie, under either name the server may give it (``__Host-``
# when it runs with CHAT_COOKIE_SECURE).
XSRF_COOKIES = ("__Host-_xsrf", "_xsrf")


class UnexpectedResponse(Exception):
    """The server answered a form with something other than its success redirect."""


class WebClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookies: dict[str, str] = {}
        self.http = AsyncHTTPClient()

    @property
    def origin(self) -> str:
        """This site's origin, which a browser sends with every socket its pages open."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def xsrf_token(self) -> str | None:
        return next((self.cookies[name] for name in XSRF_COOKIES if name in self.cookies), None)

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def _remember_cookies(self, response: HTTPResponse) -> None:
        for header in response.headers.get_list("Set-Cookie"):
            jar = http.cookies.SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or (morsel["expires"] and "1970" in morsel["expires"]) or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> HTTPResponse:
        all_headers = {"Cookie": self.cookie_header(), **(headers or {})}
        request = HTTPRequest(
            self.base_url + path,
            method=method,
            body=body,
            headers=all_headers,
            follow_redirects=False,
            request_timeout=30,
        )
        response = await self.http.fetch(request, raise_error=False)
        self._remember_cookies(response)
        return response

    async def get(self, path: str) -> HTTPResponse:
        return await self.request("GET", path)

    async def post(self, path: str, data: dict[str, str], xsrf: bool = True) -> HTTPResponse:
        if xsrf:
            if self.xsrf_token() is None:
                await self.get("/login")  # any form page sets the XSRF cookie
            data = {**data, "_xsrf": self.xsrf_token() or ""}
        return await self.request(
            "POST", path, body=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )

    @staticmethod
    def _expect_redirect(response: HTTPResponse, what: str) -> str:
        if response.code != 302:
            raise UnexpectedResponse(f"{what}: HTTP {response.code}: {response.body[:300]!r}")
        return response.headers["Location"]

    async def register(self, username: str | None = None, password: str = DEFAULT_PASSWORD) -> str:
        username = username or f"user_{uuid.uuid4().hex[:10]}"
        response = await self.post("/register", {"username": username, "password": password, "confirm": password})
        self._expect_redirect(response, f"registering {username}")
        return username

    async def login(self, username: str, password: str = DEFAULT_PASSWORD) -> HTTPResponse:
        return await self.post("/login", {"username": username, "password": password})

    async def logout(self) -> HTTPResponse:
        return await self.post("/logout", {})

    async def create_room(self, name: str | None = None, private: bool = False) -> str:
        form = {"name": name or f"room {uuid.uuid4().hex[:8]}"}
        if private:
            form["private"] = "on"
        response = await self.post("/rooms", form)
        location = self._expect_redirect(response, "creating a room")
        match = re.fullmatch(r"/rooms/([A-Za-z0-9_-]+)", location)
        if not match:
            raise UnexpectedResponse(f"creating a room redirected to {location!r}")
        return match.group(1)

    def socket_url(self, room_id: str, since: int | None = None) -> str:
        url = self.base_url.replace("http://", "ws://").replace("https://", "wss://") + f"/rooms/{room_id}/ws"
        return url if since is None else f"{url}?since={since}"

    async def connect_socket(
        self, room_id: str, since: int | None = None, origin: str | None = None, cookie: str | None = None
    ) -> WebSocketClientConnection:
        """Open a room socket as our pages do; ``origin`` is this site's unless given ("" sends none)."""
        return await self._connect(self.socket_url(room_id, since), origin, cookie)

    async def connect_events(self) -> WebSocketClientConnection:
        """Open the signed-in person's event stream (``/events/ws``), as the sidebar does."""
        url = self.base_url.replace("http://", "ws://").replace("https://", "wss://") + "/events/ws"
        return await self._connect(url, None, None)

    async def _connect(self, url: str, origin: str | None, cookie: str | None) -> WebSocketClientConnection:
        headers = {"Cookie": self.cookie_header() if cookie is None else cookie}
        origin = self.origin if origin is None else origin
        if origin:
            headers["Origin"] = origin
        return await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=30, connect_timeout=10))
