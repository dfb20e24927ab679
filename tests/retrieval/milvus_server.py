"""A real Milvus standalone server for the tests, and the Lite / server deployments they run on.

The server is the ``milvus`` PyPI package (dev extra): Milvus standalone 2.3.5 with embedded etcd,
rocksmq and local storage, run as a separate process. Every port it listens on is a free one picked
here, its data, configs and logs live in a temporary folder, and it is stopped (with any child
process) when the test session ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: bounded start: the server answers /healthz in ~10 s on the dev machine (2 cores, loaded)
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bind_reusing(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _log_tail(data_dir: Path, n: int = 2000) -> str:
    tails = []
    for name in ("milvus-stderr.log", "milvus-stdout.log"):
        p = data_dir / "logs" / name
        if p.exists():
            tails.append(f"--- {p}:\n{p.read_text(errors='replace')[-n:]}")
    return "\n".join(tails) or "(no logs)"


@contextlib.contextmanager
def milvus_server(
    data_dir: Path, *, timeout: float = START_TIMEOUT_S, ports: dict[str, int] | None = None
) -> Iterator[str]:
    """Start a Milvus standalone server with its data in ``data_dir``; yield its URI; stop it.

    ``ports``: the listen ports to use (filled with the free ones picked when empty): a server
    restarted on the same folder and ports comes back at the same URI with its collections.

    Raises:
        RuntimeError: the server exits or does not become healthy within ``timeout`` seconds
            (with the tail of its logs).
    """
    import milvus
    from milvus import MilvusServer, MilvusServerConfig, __version__

    # the embedded etcd's peer port is 2380 unless its own config says otherwise: a free one here,
    # so several servers (a session's, a test's own, another session's) run side by side
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {} if ports is None else ports
    peer, client = ports.setdefault("etcd_peer_port", free_port()), ports.setdefault("etcd_port", free_port())
    etcd_yaml = data_dir / "embedEtcd.yaml"
    etcd_yaml.write_text(
        f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: default=http://127.0.0.1:{peer}\nlisten-client-urls: http://127.0.0.1:{client}\n"
        f"advertise-client-urls: http://127.0.0.1:{client}\n"
    )
    template = Path(milvus.__file__).parent / "data" / "config.yaml.template"
    text = template.read_text().replace(
        "  use:\n    embed: true", f"  config:\n    path: {etcd_yaml}\n  use:\n    embed: true", 1
    )
    own_template = data_dir / "config.yaml.template"
    own_template.write_text(text)
    config = MilvusServerConfig(template=str(own_template))
    config.glog_conf_file = str(template.parent / "glog.conf")  # set only for the default template
    server = MilvusServer(config, wait_for_started=False)
    server.set_base_dir(str(data_dir))
    if ports:  # a restart: the old server's ports may sit in TIME_WAIT, which Milvus (SO_REUSEADDR)
        server.config.try_bind_port = _bind_reusing  # binds but the package's pre-check would not
    for key in server.config_keys:  # every listen port: a free one (the package's defaults collide)
        if key.endswith("_port"):
            server.config.set(key, ports.setdefault(key, free_port()))
    server.webservice_port = ports.setdefault("webservice_port", free_port())  # /healthz and metrics
    t0 = time.monotonic()
    server.start()
    proc = server.server_proc
    try:
        health = f"http://127.0.0.1:{server.webservice_port}/healthz"
        while True:
            if proc.poll() is not None:
                why = f"exited with {proc.returncode}"
                raise RuntimeError(f"Milvus {__version__} {why}:\n{_log_tail(data_dir)}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(health, timeout=2) as r:
                    if b"OK" in r.read():
                        break
            if time.monotonic() - t0 > timeout:
                why = f"not healthy within {timeout:g} s at {health}"
                raise RuntimeError(f"Milvus {__version__} {why}:\n{_log_tail(data_dir)}")
            time.sleep(0.2)
        uri = f"http://127.0.0.1:{server.listen_port}"
        from pymilvus import MilvusClient

        MilvusClient(uri=uri, timeout=30).list_collections()  # the gRPC port answers too
        up = time.monotonic() - t0
        log.info("Milvus %s standalone up at %s in %.1f s (pid %d)", __version__, uri, up, proc.pid)
        yield uri
    finally:
        _stop(server, proc)


def _stop(server, proc: subprocess.Popen) -> None:
    kids = _children(proc.pid)
    server.stop()  # SIGTERM, SIGKILL after 1 s
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
    for pid in kids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Deployment:
    """Where a test's Milvus collections live: Milvus Lite (a ``.db`` per name) or the server."""

    kind: str  # "lite" | "server"
    _uri: Callable[[str], str]

    def uri(self, name: str) -> str:
        """A URI for a test's collection(s) named ``name`` (Lite: its own ``.db``; server: shared)."""
        return self._uri(name)

    @property
    def lite(self) -> bool:
        return self.kind == "lite"
