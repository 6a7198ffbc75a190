"""supervisord.conf, nginx/, the Dockerfile and docker-compose.yml must agree with each other."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from chat.config import DEFAULT_WS_PING_INTERVAL as WEBSOCKET_PING_INTERVAL
from chat.config import networks
from chat.tools.cluster import Cluster, render_site_config

ROOT = Path(__file__).resolve().parents[2]


def compose_value(name: str) -> str:
    match = re.search(rf'^\s*{name}: "([^"]*)"', (ROOT / "docker-compose.yml").read_text(), re.M)
    assert match, f"{name} not set in docker-compose.yml"
    return match.group(1)


def dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", (ROOT / "Dockerfile").read_text())
    assert match, f"{name} not set in the Dockerfile"
    return match.group(1)


def test_compose_upstreams_match_the_process_group() -> None:
    processes, base_port = int(compose_value("CHAT_PROCESSES")), int(compose_value("CHAT_BASE_PORT"))
    upstreams = re.findall(r"server app:(\d+)", compose_value("CHAT_UPSTREAM_SERVERS"))
    assert [int(port) for port in upstreams] == [base_port + i for i in range(processes)]


def test_the_image_defaults_match_compose_and_expose_every_port() -> None:
    assert dockerfile_env("CHAT_PROCESSES") == compose_value("CHAT_PROCESSES")
    assert dockerfile_env("CHAT_BASE_PORT") == compose_value("CHAT_BASE_PORT")
    exposed = re.search(r"^EXPOSE (.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert exposed and exposed.group(1).split() == re.findall(
        r"server app:(\d+)", compose_value("CHAT_UPSTREAM_SERVERS")
    )


def test_the_image_contains_what_a_chat_process_loads() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in ("requirements.txt", "chat/", "templates/", "static/", "supervisord.conf"):
        assert re.search(rf"^COPY {re.escape(needed)} ", dockerfile, re.M), needed
    assert "supervisord.conf" in dockerfile.splitlines()[-1]


def test_compose_mounts_the_nginx_template_the_cluster_tool_renders() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "./nginx/chat.conf.template:/etc/nginx/templates/chat.conf.template" in compose


def test_supervisord_conf_defines_one_program_per_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from supervisor.options import ServerOptions

    (tmp_path / "log").mkdir()
    for name, value in {
        "CHAT_PROCESSES": "3",
        "CHAT_BASE_PORT": "9001",
        "CHAT_RUN_DIR": str(tmp_path),
        "CHAT_PYTHON": "/usr/bin/python3",
        "CHAT_HOST": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)
    options = ServerOptions()
    options.realize(args=["-c", str(ROOT / "supervisord.conf")])
    [group] = options.process_group_configs
    assert group.name == "chat"
    assert [p.name for p in group.process_configs] == ["chat-9001", "chat-9002", "chat-9003"]
    assert [p.command for p in group.process_configs] == [
        f"/usr/bin/python3 -m chat --port {port} --host 127.0.0.1" for port in (9001, 9002, 9003)
    ]
    # Served through nginx with TLS in front: __Host- cookies and HSTS (finding 6).
    assert all(p.environment == {"CHAT_COOKIE_SECURE": "true"} for p in group.process_configs)
    assert all(p.autorestart for p in group.process_configs)
    assert all(p.stdout_logfile == f"{tmp_path}/log/{p.name}.log" for p in group.process_configs)


def test_the_rendered_nginx_site_balances_every_process_and_upgrades_websockets() -> None:
    site = render_site_config(processes=3, base_port=9001, listen="127.0.0.1:9000")
    assert re.findall(r"server 127\.0\.0\.1:(\d+)", site) == ["9001", "9002", "9003"]
    assert "listen 127.0.0.1:9000;" in site
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    assert "proxy_set_header Connection $connection_upgrade;" in site
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", site)
    assert read_timeout is not None
    timeout = int(read_timeout.group(1))
    assert timeout > WEBSOCKET_PING_INTERVAL  # idle sockets are kept open between pings
    assert "${" not in site
    # A failed server would count as recovered only once a request to it
    # finished, and WebSockets finish when they close: after a restart,
    # nginx let one socket through every fail_timeout.
    assert re.findall(r"server 127\.0\.0\.1:\d+ max_fails=0;", site) and "fail_timeout" not in site


def test_the_cluster_tool_binds_every_process_to_loopback(tmp_path: Path) -> None:
    # Finding 8: a process port reached directly would skip nginx; under
    # `make cluster` only this machine can reach one, whatever .env says.
    env = Cluster(run_dir=tmp_path, env={"CHAT_HOST": "0.0.0.0"}).process_env()

    assert env["CHAT_HOST"] == "127.0.0.1"


def test_nginx_hides_its_version_and_overwrites_the_forwarding_headers() -> None:
    site = render_site_config(processes=2, base_port=9001, listen="127.0.0.1:9000")

    assert "server_tokens off;" in site
    # Overwritten with the address nginx saw, never appended to what the client sent (checklist 23).
    assert "proxy_set_header X-Real-IP $remote_addr;" in site
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in site
    # Set at the server level, so every location (health probes included) inherits them.
    server_level = site.split("\n    location ", 1)[0]
    assert "proxy_set_header X-Real-IP" in server_level and "client_max_body_size 64k;" in server_level


@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
def test_nginx_answers_health_probes_from_loopback_only(probe: str) -> None:
    site = render_site_config(processes=2, base_port=9001, listen="127.0.0.1:9000")
    location = re.search(rf"location = {probe} \{{(.*?)\n    \}}", site, re.S)

    assert location, probe
    assert "if ($chat_health_allowed = 0)" in location.group(1) and "return 404;" in location.group(1)
    allowed = re.search(r"geo \$chat_health_allowed \{(.*?)\}", site, re.S)
    assert allowed and re.findall(r"^\s*(\S+)\s+1;", allowed.group(1), re.M) == ["127.0.0.1", "::1"]


def test_the_container_binds_all_interfaces_and_trusts_only_the_compose_network() -> None:
    assert dockerfile_env("CHAT_HOST") == "0.0.0.0"
    subnet = re.search(r"subnet: (\S+)", (ROOT / "docker-compose.yml").read_text())
    assert subnet
    trusted = networks("CHAT_TRUSTED_PROXIES", compose_value("CHAT_TRUSTED_PROXIES"))
    network = ipaddress.ip_network(subnet.group(1))
    assert any(network.subnet_of(t) for t in trusted if t.version == network.version)
    assert all(t.is_private or t.is_loopback for t in trusted)


def test_nginx_never_serves_metrics() -> None:
    site = render_site_config(processes=2, base_port=9001, listen="127.0.0.1:9000")
    location = re.search(r"location = /metrics \{(.*?)\n    \}", site, re.S)
    assert location and location.group(1).strip() == "return 404;"


def test_the_replica_set_override_names_three_members_in_one_set_and_the_app_uses_them() -> None:
    override = (ROOT / "docker-compose.replica-set.yml").read_text()
    members = re.findall(r'\{_id: \d, host: "([\w-]+:27017)"\}', override)
    assert members == ["mongo:27017", "mongo2:27017", "mongo3:27017"]
    assert override.count('command: ["mongod", "--replSet", "rs0", "--bind_ip_all"]') == 3
    url = re.search(r'CHAT_DATABASE_URL: "([^"]+)"', override)
    assert url and url.group(1).startswith("mongodb://" + ",".join(members) + "/chat?")
    assert all(option in url.group(1) for option in ("replicaSet=rs0", "w=majority", "journal=true"))
