"""Run the chat process group under supervisord with nginx in front: ``make cluster``.

    python -m chat.tools.cluster start [--processes 2] [--base-port 8001] [--listen 8080] [--run-dir var/cluster]
    python -m chat.tools.cluster stop  [--run-dir var/cluster]
    python -m chat.tools.cluster ctl   [--run-dir var/cluster] -- status|restart chat:*|...
    python -m chat.tools.cluster render-nginx [--processes 2] [--base-port 8001] [--listen 80] [--host 127.0.0.1]

The processes take every other setting from the environment and ``.env`` like
any chat process; a group needs MongoDB (``CHAT_DATABASE_URL``) and Redis
(``CHAT_BROKER_URL``), since SQLite and the in-process broker are private to
one process. The tests drive the same :class:`Cluster` class.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..broker import REDIS_CLUSTER_SCHEMES, REDIS_SCHEMES
from ..config import PROJECT_ROOT, ConfigError, load_settings
from ..storage import backend_of

SUPERVISORD_CONF = PROJECT_ROOT / "supervisord.conf"
NGINX_DIR = PROJECT_ROOT / "nginx"
DEFAULT_RUN_DIR = PROJECT_ROOT / "var" / "cluster"


class ClusterError(Exception):
    """The cluster cannot start or be reached; the message says why."""


def render_site_config(processes: int, base_port: int, listen: str, host: str = "127.0.0.1") -> str:
    """nginx/chat.conf.template with the upstream list and listen address filled in."""
    # max_fails=0: nginx counts a failed server as recovered only when a
    # request to it *finishes*, and a WebSocket finishes when it closes. With
    # max_fails=1, a restart marked both processes failed and nginx let one
    # socket through per process every fail_timeout for minutes ("no live
    # upstreams" to everyone else). A process that is down refuses at once
    # and proxy_next_upstream tries the next one, so nothing is lost by it.
    servers = "\n".join(f"    server {host}:{base_port + i} max_fails=0;" for i in range(processes))
    template = string.Template((NGINX_DIR / "chat.conf.template").read_text())
    # safe_substitute: nginx's own $variables must pass through untouched.
    return template.safe_substitute(CHAT_UPSTREAM_SERVERS=servers, CHAT_LISTEN=listen)


def _find(program: str, *extra: Path) -> str:
    for candidate in (Path(sys.executable).parent / program, *extra):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(program)
    if found is None:
        raise ClusterError(f"{program} not found")
    return found


def _port_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Cluster:
    run_dir: Path
    processes: int = 2
    base_port: int = 8001
    listen_port: int = 8080
    # Extra environment for the chat processes (the tests pass their URLs here).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(self.processes)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def _state_file(self) -> Path:
        return self.run_dir / "cluster.json"

    def process_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        # Each process names itself host:port; one shared name would hide
        # which process a client reached.
        env.pop("CHAT_INSTANCE_NAME", None)
        env.update(
            {
                "CHAT_PROCESSES": str(self.processes),
                "CHAT_BASE_PORT": str(self.base_port),
                "CHAT_RUN_DIR": str(self.run_dir),
                "CHAT_PYTHON": sys.executable,
                # nginx runs beside the processes: they listen on loopback
                # only, whatever .env says, so nobody gets past nginx.
                "CHAT_HOST": "127.0.0.1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")])),
            }
        )
        return env

    # -- supervisord --------------------------------------------------------

    def supervisorctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [_find("supervisorctl"), "-c", str(SUPERVISORD_CONF), *args],
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode not in (0, 3):  # 3: some process not RUNNING, for `status`
            raise ClusterError(f"supervisorctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def process_pid(self, port: int) -> int:
        return int(self.supervisorctl("pid", f"chat:chat-{port}").strip())

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.ports)
        while pending and time.monotonic() < deadline:
            pending = {port for port in pending if not _port_answers(f"http://127.0.0.1:{port}/healthz")}
            if pending:
                time.sleep(0.1)
        if pending:
            raise ClusterError(f"chat processes on ports {sorted(pending)} are not healthy:\n{self.log_tail()}")

    # -- nginx --------------------------------------------------------------

    def _nginx_conf(self) -> Path:
        nginx_dir = self.run_dir / "nginx"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (nginx_dir / sub).mkdir(parents=True, exist_ok=True)
        (nginx_dir / "chat.conf").write_text(
            render_site_config(self.processes, self.base_port, f"127.0.0.1:{self.listen_port}")
        )
        main = string.Template((NGINX_DIR / "nginx.conf.template").read_text()).safe_substitute(
            CHAT_RUN_DIR=str(self.run_dir),
            # As root, nginx would hand its workers to "nobody", who cannot
            # enter a private run directory; this nginx is a local tool.
            CHAT_NGINX_USER="user root root;" if os.geteuid() == 0 else "",
        )
        path = nginx_dir / "nginx.conf"
        path.write_text(main)
        return path

    def _nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                _find("nginx", Path("/usr/sbin/nginx")),
                "-c",
                str(self.run_dir / "nginx" / "nginx.conf"),
                "-p",
                str(self.run_dir),
                "-e",
                str(self.run_dir / "log" / "nginx-error.log"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        (self.run_dir / "log").mkdir(parents=True, exist_ok=True)
        if (self.run_dir / "supervisor.sock").exists() and self.supervisorctl("pid", check=False).strip().isdigit():
            raise ClusterError(f"a cluster is already running from {self.run_dir}; stop it first")
        self._nginx_conf()
        test = self._nginx("-t")
        if test.returncode != 0:
            raise ClusterError(f"nginx rejected its configuration:\n{test.stderr}")
        self._state_file.write_text(
            json.dumps(
                {
                    "processes": self.processes,
                    "base_port": self.base_port,
                    "listen_port": self.listen_port,
                    "env": self.env,
                }
            )
        )
        result = subprocess.run(
            [_find("supervisord"), "-c", str(SUPERVISORD_CONF)],
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ClusterError(f"supervisord failed to start: {result.stdout}{result.stderr}")
        try:
            self.wait_healthy()
            started = self._nginx()
            if started.returncode != 0:
                raise ClusterError(f"nginx failed to start:\n{started.stderr}")
            deadline = time.monotonic() + 20
            while not _port_answers(f"{self.url}/healthz"):
                if time.monotonic() > deadline:
                    raise ClusterError(f"nginx is not answering on {self.url}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        pid_file = self.run_dir / "nginx.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
        if (self.run_dir / "supervisor.sock").exists():
            self.supervisorctl("shutdown", check=False)
            pid_path = self.run_dir / "supervisord.pid"
            deadline = time.monotonic() + 30
            while pid_path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> Cluster:
        state_file = run_dir / "cluster.json"
        if not state_file.exists():
            raise ClusterError(f"no cluster state in {run_dir}: was it started with this --run-dir?")
        state = json.loads(state_file.read_text())
        return cls(
            run_dir=run_dir,
            processes=state["processes"],
            base_port=state["base_port"],
            listen_port=state["listen_port"],
            env=state.get("env", {}),
        )

    def log_tail(self, lines: int = 40) -> str:
        chunks = []
        for path in sorted((self.run_dir / "log").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks)


def _check_distributed_settings() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise ClusterError(f"configuration error: {exc}") from None
    try:
        shared = backend_of(settings.database_url).shared
    except ValueError:
        shared = False
    if not shared:
        raise ClusterError("a cluster needs CHAT_DATABASE_URL=mongodb://... (SQLite belongs to one process)")
    if urlsplit(settings.broker_url).scheme.lower() not in REDIS_SCHEMES | REDIS_CLUSTER_SCHEMES:
        raise ClusterError(
            "a cluster needs CHAT_BROKER_URL=redis://... or redis+cluster://... (memory:// reaches one process only)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.tools.cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "ctl", "render-nginx"):
        command = sub.add_parser(name)
        command.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
        if name in ("start", "render-nginx"):
            command.add_argument("--processes", type=int, default=int(os.environ.get("CHAT_PROCESSES", 2)))
            command.add_argument("--base-port", type=int, default=int(os.environ.get("CHAT_BASE_PORT", 8001)))
            command.add_argument("--listen", type=int, default=8080)
        if name == "render-nginx":
            command.add_argument("--host", default="127.0.0.1", help="where the chat processes listen")
        if name == "ctl":
            command.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    try:
        if args.command == "render-nginx":
            print(render_site_config(args.processes, args.base_port, str(args.listen), args.host))
        elif args.command == "start":
            _check_distributed_settings()
            cluster = Cluster(run_dir, args.processes, args.base_port, args.listen)
            cluster.start()
            print(
                f"chat cluster: {args.processes} processes on ports {cluster.ports[0]}-{cluster.ports[-1]}, "
                f"nginx in front."
            )
            print(f"  browse   {cluster.url}")
            print(f"  logs     {run_dir / 'log'}")
            print("  control  make cluster-ctl ARGS='status'")
            print("  stop     make cluster-stop")
        elif args.command == "stop":
            Cluster.from_run_dir(run_dir).stop()
            print("chat cluster stopped")
        else:
            ctl_args = [a for a in args.args if a != "--"] or ["status"]
            print(Cluster.from_run_dir(run_dir).supervisorctl(*ctl_args, check=False), end="")
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
