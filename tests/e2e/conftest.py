"""Fixtures for the e2e tier: Playwright driving Debian's Chromium (never a downloaded browser),
and a supervisord group behind nginx."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import async_playwright

from chat.tools.cluster import Cluster
from devtools.services import locate
from devtools.soak import Deployment
from tests.support.logs import add_log_source
from tests.support.server import LIFTED_LIMITS, TEST_SECRET
from tests.support.services import (
    PROJECT_ROOT,
    FerretDB,
    RedisServer,
    ferretdb_binary,
    find_binary,
    free_port_range,
    nginx_binary,
    redis_binary,
    toxiproxy_binary,
)

ARTIFACTS = Path(os.environ.get("CHAT_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))

# Chromium as root in a sandbox-less container, with nothing that phones home:
# this machine's network is closed and background fetches only add noise.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    path = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    shutil.rmtree(path, ignore_errors=True)  # only this run's screenshots
    path.mkdir(parents=True)
    return path


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    executable = find_binary(
        locate("chromium", "CHAT_CHROMIUM_BIN", [Path("/usr/bin/chromium")]),
        "chromium",
        "install Debian's browser with `apt-get install chromium`",
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture(scope="module")
def cluster_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the cluster's own, so tests may restart it without disturbing others."""
    with RedisServer(redis_binary(), tmp_path_factory.mktemp("cluster-redis")) as server:
        yield server


def process_group(
    tmp_path_factory: pytest.TempPathFactory, ferretdb: FerretDB, redis: RedisServer, **env: str
) -> Cluster:
    """supervisord with 2 chat processes on MongoDB (FerretDB) and Redis, nginx in front (not started)."""
    nginx_binary()  # skip or fail early, naming the install command
    ports = free_port_range(3)  # the processes', then nginx's: one range, so they cannot meet
    return Cluster(
        run_dir=tmp_path_factory.mktemp("cluster"),
        processes=2,
        base_port=ports,
        listen_port=ports + 2,
        env={
            "CHAT_DATABASE_URL": ferretdb.url(f"chat_{uuid.uuid4().hex[:12]}"),
            "CHAT_BROKER_URL": redis.url(),
            "CHAT_COOKIE_SECRETS": TEST_SECRET,
            "CHAT_PRESENCE_HEARTBEAT_SECONDS": "1",
            "CHAT_PRESENCE_TTL_SECONDS": "5",
            **env,
        },
    )


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, ferretdb: FerretDB, cluster_redis: RedisServer
) -> Iterator[Cluster]:
    """The group with abuse limits lifted: tests of delivery and faults, many users from one address."""
    group = process_group(tmp_path_factory, ferretdb, cluster_redis, **LIFTED_LIMITS)
    group.start()
    yield group
    group.stop()


@pytest.fixture(scope="module")
def strict_cluster(
    tmp_path_factory: pytest.TempPathFactory, ferretdb: FerretDB, cluster_redis: RedisServer
) -> Iterator[Cluster]:
    """The group with a tight per-user send limit (and the other limits at their defaults)."""
    group = process_group(tmp_path_factory, ferretdb, cluster_redis, CHAT_LIMIT_SENDS="10 per minute")
    group.start()
    yield group
    group.stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A whole deployment with faults at hand (devtools.soak.Deployment): Redis, FerretDB, 2 processes, nginx."""
    ferretdb_binary(), redis_binary(), nginx_binary()  # skip or fail early, naming the install command
    with Deployment(Path(tmp_path_factory.mktemp("deployment"))) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def proxied_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A whole deployment whose chat processes reach Redis and FerretDB through Toxiproxy (network faults)."""
    ferretdb_binary(), redis_binary(), nginx_binary(), toxiproxy_binary()  # skip or fail early, naming the install
    with Deployment(Path(tmp_path_factory.mktemp("proxied-deployment")), toxiproxy=True) as deployed:
        yield deployed


@pytest.fixture(autouse=True)
def _attach_cluster_logs(request: pytest.FixtureRequest) -> None:
    # Only where a test uses the cluster: asking for it would start one.
    for name in ("cluster", "strict_cluster"):
        if name in request.fixturenames:
            add_log_source(request, name, request.getfixturevalue(name).log_tail)
    for name in ("deployment", "proxied_deployment"):
        if name in request.fixturenames:
            add_log_source(request, name, request.getfixturevalue(name).cluster.log_tail)
