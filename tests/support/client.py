"""A minimal browser for tests: cookies, XSRF tokens, forms and room WebSockets."""

from __future__ import annotations

import asyncio
import http.cookies
import json
import re
import uuid
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

PASSWORD = "correct horse battery"


class Browser:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookies: dict[str, str] = {}
        self.http = AsyncHTTPClient()

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

    async def request(self, method: str, path: str, body: str | None = None,
                      headers: dict[str, str] | None = None) -> HTTPResponse:
        all_headers = {"Cookie": self.cookie_header(), **(headers or {})}
        request = HTTPRequest(self.base_url + path, method=method, body=body, headers=all_headers,
                              follow_redirects=False, request_timeout=30)
        response = await self.http.fetch(request, raise_error=False)
        self._remember_cookies(response)
        return response

    async def get(self, path: str) -> HTTPResponse:
        return await self.request("GET", path)

    async def post(self, path: str, data: dict[str, str], xsrf: bool = True) -> HTTPResponse:
        if xsrf:
            if "_xsrf" not in self.cookies:
                await self.get("/login")  # any form page sets the XSRF cookie
            data = {**data, "_xsrf": self.cookies["_xsrf"]}
        return await self.request("POST", path, body=urlencode(data),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})

    async def register(self, username: str | None = None, password: str = PASSWORD) -> str:
        username = username or f"user_{uuid.uuid4().hex[:10]}"
        response = await self.post("/register", {"username": username, "password": password, "confirm": password})
        assert response.code == 302, (response.code, response.body[:500])
        return username

    async def login(self, username: str, password: str = PASSWORD) -> HTTPResponse:
        return await self.post("/login", {"username": username, "password": password})

    async def logout(self) -> HTTPResponse:
        return await self.post("/logout", {})

    async def create_room(self, name: str | None = None) -> str:
        response = await self.post("/rooms", {"name": name or f"room {uuid.uuid4().hex[:8]}"})
        assert response.code == 302, (response.code, response.body[:500])
        match = re.fullmatch(r"/rooms/([A-Za-z0-9_-]+)", response.headers["Location"])
        assert match, response.headers["Location"]
        return match.group(1)

    async def socket(self, room_id: str, since: int | None = None, origin: str | None = None,
                     cookie: str | None = None) -> "RoomSocket":
        url = self.base_url.replace("http://", "ws://") + f"/rooms/{room_id}/ws"
        if since is not None:
            url += f"?since={since}"
        headers = {"Cookie": self.cookie_header() if cookie is None else cookie}
        if origin is not None:
            headers["Origin"] = origin
        conn = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=30))
        return RoomSocket(conn)


async def handshake_status(browser: Browser, room_id: str, **kwargs: Any) -> int:
    """The HTTP status a refused handshake gets (or 101 if it was accepted)."""
    try:
        sock = await browser.socket(room_id, **kwargs)
    except HTTPClientError as exc:
        return exc.code
    sock.close()
    return 101


class RoomSocket:
    """A room socket whose reads skip ``presence`` frames unless asked for them.

    Presence frames arrive whenever anyone joins or leaves, so tests about
    messages read past them, and tests about presence read only them.
    """

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self._buffer: list[dict[str, Any]] = []

    async def _next(self, want_presence: bool, timeout: float) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for index, frame in enumerate(self._buffer):
                if (frame["type"] == "presence") == want_presence:
                    return self._buffer.pop(index)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise asyncio.TimeoutError()
            raw = await asyncio.wait_for(self.conn.read_message(), remaining)
            if raw is None:
                raise ConnectionError(f"socket closed: {self.conn.close_code} {self.conn.close_reason}")
            self._buffer.append(json.loads(raw))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame that is not a presence frame."""
        return await self._next(False, timeout)

    async def recv_presence(self, timeout: float = 10.0) -> list[str]:
        """The usernames in the next presence frame."""
        frame = await self._next(True, timeout)
        return [user["username"] for user in frame["users"]]

    async def recv_type(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next (non-presence) frame, which must be of ``kind``."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            frame = await self.recv(seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame}")

    async def join(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read hello and the first history frame."""
        return await self.recv_type("hello"), await self.recv_type("history")

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.conn.write_message(json.dumps(frame))

    async def send_message(self, body: str, client_id: str | None = None) -> str:
        client_id = client_id or uuid.uuid4().hex
        await self.send_json({"type": "send", "client_id": client_id, "body": body})
        return client_id

    async def acked(self, client_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Read (and drop) frames until the ack for ``client_id``; return its message."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == "ack" and frame["client_id"] == client_id:
                return frame["message"]

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the socket, reading past any frames; return the close code."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            message = await asyncio.wait_for(self.conn.read_message(), remaining)
            if message is None:
                return self.conn.close_code

    def close(self) -> None:
        self.conn.close()
