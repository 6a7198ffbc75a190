"""Figures for the abuse limits, measured against a whole deployment: ``python -m devtools.abuse``.

Starts its own deployment (Redis, FerretDB, supervisord with 2 chat processes,
nginx; see :class:`devtools.soak.Deployment`) with the production defaults for
every limit (registrations aside: the tool signs up its users from one
address) and bcrypt at cost 12, then measures:

- **sign-out reach**: seconds from ``POST /logout`` to the close of that
  session's socket on the *other* process;
- **sync flood**: bytes the server sends per byte a client sends, over a
  minute, for 100 ``sync`` frames from ``since: 0`` (the finding), and for
  the worst case (``since`` just inside the resume bound);
- **sign-in under a flood**: how long a real sign-in takes while 50 bogus
  sign-ins from another address hammer the same process;
- **messages per user per minute**: what one user can store sending as fast
  as possible over 10 sockets spread over both processes.

It prints a Markdown table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection

from chat.models import NewMessage
from chat.storage import open_storage

from .soak import Deployment
from .webclient import DEFAULT_PASSWORD, WebClient

PRODUCTION_LIMITS = {
    "CHAT_BCRYPT_ROUNDS": "12",
    "CHAT_LIMIT_SENDS": "20 per 10 seconds;100 per minute",
    "CHAT_LIMIT_HANDSHAKES": "30 per minute",
    "CHAT_LIMIT_LOGINS": "5 per 10 seconds;30 per minute;300 per hour",
    "CHAT_LIMIT_ROOM_CREATION": "10 per hour",
    "CHAT_MAX_SOCKETS_PER_IP": "100",
    # The tool registers all its users from one address.
    "CHAT_LIMIT_REGISTRATIONS": "100000 per hour",
}


async def joined(web: WebClient, room_id: str, since: int | None = None) -> tuple[WebSocketClientConnection, str]:
    """A socket past its hello; returns it and the instance it landed on."""
    conn = await web.connect_socket(room_id, since=since)
    while True:
        raw = await conn.read_message()
        if raw is None:
            raise ConnectionError(f"closed before hello: {conn.close_code}")
        frame = json.loads(raw)
        if frame["type"] == "hello":
            return conn, frame["instance"]


async def socket_elsewhere(web: WebClient, room_id: str, avoid: str) -> WebSocketClientConnection:
    for _ in range(50):
        conn, instance = await joined(web, room_id)
        if instance != avoid:
            return conn
        conn.close()
    raise RuntimeError("nginx never chose the other process")


async def closed_after(conn: WebSocketClientConnection, started: float) -> float:
    while await conn.read_message() is not None:
        pass
    return time.monotonic() - started


async def signout_reach(url: str, rounds: int) -> list[float]:
    delays = []
    for _ in range(rounds):
        web = WebClient(url)
        await web.register()
        room_id = await web.create_room()
        here, instance = await joined(web, room_id)
        there = await socket_elsewhere(web, room_id, avoid=instance)
        started = time.monotonic()
        await web.logout()
        delays.append(max(await asyncio.gather(closed_after(here, started), closed_after(there, started))))
    return delays


async def seed(database_url: str, room_id: str, username: str, count: int) -> None:
    storage = open_storage(database_url)
    await storage.connect()
    try:
        user = await storage.users.get_by_username(username)
        assert user is not None
        for i in range(count):
            body = f"seeded message {i} " + "x" * 200
            await storage.messages.add(NewMessage(room_id, user.id, username, body, f"seed-{i}"))
    finally:
        await storage.close()


async def sync_flood(url: str, database_url: str, since: int, frames: int, seconds: float) -> dict[str, Any]:
    web = WebClient(url)
    username = await web.register()
    room_id = await web.create_room()
    await seed(database_url, room_id, username, 400)
    conn, _ = await joined(web, room_id)
    received = 0
    answers: dict[str, int] = {}

    async def read() -> None:
        nonlocal received
        while (raw := await conn.read_message()) is not None:
            received += len(raw.encode() if isinstance(raw, str) else raw)
            frame = json.loads(raw)
            kind = frame["type"] if frame["type"] != "error" else frame["code"]
            answers[kind] = answers.get(kind, 0) + 1

    reader = asyncio.create_task(read())
    await asyncio.sleep(1)  # hello, history and presence are not part of the flood
    received, answers = 0, {}
    sent = 0
    for _ in range(frames):
        text = json.dumps({"type": "sync", "since": since})
        sent += len(text.encode())
        await conn.write_message(text)
    await asyncio.sleep(seconds)
    conn.close()
    reader.cancel()
    return {"since": since, "bytes_in": sent, "bytes_out": received, "ratio": received / sent, "answers": answers}


async def login_under_flood(process_url: str, bogus: int, tries: int) -> dict[str, Any]:
    web = WebClient(process_url)
    username = await web.register()
    http = AsyncHTTPClient(force_instance=True, defaults={"request_timeout": 60})
    outcomes: dict[int, int] = {}
    stop = asyncio.Event()
    # One real XSRF token, reused by every bogus request (it is not tied to a session).
    attacker_page = WebClient(process_url)
    await attacker_page.get("/login")
    token = attacker_page.xsrf_token() or ""
    cookie = attacker_page.cookie_header()

    async def attacker(n: int) -> None:
        while not stop.is_set():
            request = HTTPRequest(
                f"{process_url}/login",
                method="POST",
                body=urlencode({"username": f"victim{n}", "password": f"wrong guess {n}", "_xsrf": token}),
                headers={"X-Real-IP": "203.0.113.66", "Cookie": cookie},
                follow_redirects=False,
            )
            response = await http.fetch(request, raise_error=False)
            outcomes[response.code] = outcomes.get(response.code, 0) + 1

    flood = [asyncio.create_task(attacker(n)) for n in range(bogus)]
    await asyncio.sleep(2)  # the flood is on
    timings = []
    for attempt in range(tries):
        legit = WebClient(process_url)
        await legit.get("/login")
        started = time.monotonic()
        response = await legit.request(
            "POST",
            "/login",
            body=urlencode({"username": username, "password": DEFAULT_PASSWORD, "_xsrf": legit.xsrf_token() or ""}),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Real-IP": f"198.51.100.{attempt + 1}"},
        )
        timings.append(time.monotonic() - started)
        if response.code != 302:
            raise RuntimeError(f"the real sign-in failed: HTTP {response.code}")
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*flood, return_exceptions=True)
    http.close()
    return {"bogus_in_flight": bogus, "legit_seconds": timings, "bogus_answers": outcomes}


async def sign_in_timing(process_url: str, tries: int) -> dict[str, float]:
    """Median seconds of a failed sign-in: unknown user, wrong password, locked account."""
    # Accounts enough that "wrong password" never meets a lock (10 failures lock one).
    usernames = [await WebClient(process_url).register() for _ in range(tries // 5 + 1)]
    username = usernames[0]

    async def attempt(name: str, password: str, address: str) -> float:
        client = WebClient(process_url)
        await client.get("/login")
        started = time.monotonic()
        response = await client.request(
            "POST",
            "/login",
            body=urlencode({"username": name, "password": password, "_xsrf": client.xsrf_token() or ""}),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Real-IP": address},
        )
        elapsed = time.monotonic() - started
        if response.code != 400:
            raise RuntimeError(f"expected the wrong-credentials answer, got HTTP {response.code}")
        return elapsed

    medians: dict[str, float] = {}
    # Each kind from its own addresses, so the per-address limit refuses none.
    medians["unknown user"] = statistics.median(
        [await attempt(f"nobody{i}", "some password", f"198.51.100.{i % 200 + 1}") for i in range(tries)]
    )
    medians["wrong password"] = statistics.median(
        [await attempt(usernames[i // 5], "not the password", f"203.0.113.{i % 200 + 1}") for i in range(tries)]
    )
    for i in range(10):  # ten failures in 15 minutes lock the first account
        await attempt(username, "not the password", f"203.0.113.{i + 100}")
    # Locked: the right password fails alike.
    medians["locked account"] = statistics.median(
        [await attempt(username, DEFAULT_PASSWORD, f"192.0.2.{i % 200 + 1}") for i in range(tries)]
    )
    return medians


async def sends_per_minute(url: str, sockets: int, seconds: float) -> dict[str, Any]:
    web = WebClient(url)
    await web.register()
    room_id = await web.create_room()
    conns = [(await joined(web, room_id))[0] for _ in range(sockets)]
    acked = refused = 0
    deadline = time.monotonic() + seconds

    async def hammer(conn: WebSocketClientConnection) -> None:
        nonlocal acked, refused
        while time.monotonic() < deadline:
            client_id = uuid.uuid4().hex
            await conn.write_message(json.dumps({"type": "send", "client_id": client_id, "body": "spam"}))
            while True:
                frame = json.loads(await conn.read_message() or "{}")
                if frame.get("client_id") == client_id:
                    acked += frame["type"] == "ack"
                    refused += frame["type"] == "error"
                    break

    await asyncio.gather(*(hammer(c) for c in conns))
    for conn in conns:
        conn.close()
    return {"sockets": sockets, "seconds": seconds, "stored": acked, "refused": refused}


def spread(medians: dict[str, float]) -> float:
    return (max(medians.values()) - min(medians.values())) / min(medians.values())


def render(report: dict[str, Any]) -> str:
    reach = report["signout_reach"]
    flood0, flood_worst = report["sync_flood_since_0"], report["sync_flood_worst"]
    login = report["login_under_flood"]
    sends = report["sends_per_minute"]
    return "\n".join(
        [
            "| figure | goal | measured |",
            "| --- | --- | --- |",
            f"| sign-out to socket close on the other process | <= 1 s | p50 {statistics.median(reach):.3f} s, "
            f"max {max(reach):.3f} s over {len(reach)} |",
            f"| sync flood, 100 frames since=0, 1 min | <= 10x | {flood0['ratio']:.1f}x "
            f"({flood0['bytes_out']} B out / {flood0['bytes_in']} B in; {flood0['answers']}) |",
            f"| sync flood, since just inside the resume bound | (worst case) | {flood_worst['ratio']:.1f}x "
            f"({flood_worst['bytes_out']} B out; {flood_worst['answers']}) |",
            f"| real sign-in under {login['bogus_in_flight']} bogus sign-ins | <= 1 s | "
            f"p50 {statistics.median(login['legit_seconds']):.2f} s, max {max(login['legit_seconds']):.2f} s "
            f"(bogus answers {login['bogus_answers']}) |",
            "| failed sign-in, median: "
            + ", ".join(f"{kind} {seconds * 1000:.0f} ms" for kind, seconds in report["sign_in_timing"].items())
            + " | within 10% of each other | "
            + f"spread {spread(report['sign_in_timing']):.1%} |",
            f"| messages one user stores per minute, {sends['sockets']} sockets on 2 processes | the limit (100) | "
            f"{sends['stored']} stored, {sends['refused']} refused in {sends['seconds']:.0f} s |",
        ]
    )


async def measure(deployment: Deployment, database_url: str, seconds: float) -> dict[str, Any]:
    url = deployment.url
    process_url = f"http://127.0.0.1:{deployment.cluster.ports[0]}"
    return {
        "signout_reach": await signout_reach(url, rounds=10),
        "sync_flood_since_0": await sync_flood(url, database_url, since=0, frames=100, seconds=seconds),
        "sync_flood_worst": await sync_flood(url, database_url, since=101, frames=100, seconds=seconds),
        "login_under_flood": await login_under_flood(process_url, bogus=50, tries=5),
        "sign_in_timing": await sign_in_timing(process_url, tries=20),
        "sends_per_minute": await sends_per_minute(url, sockets=10, seconds=seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.abuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the flood and send windows")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="chat-abuse-") as work,
        Deployment(Path(work), env=PRODUCTION_LIMITS) as deployment,
    ):
        report = asyncio.run(measure(deployment, deployment.database.url("chat"), args.seconds))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
