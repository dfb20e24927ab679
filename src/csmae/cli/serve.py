"""Serve the search page and HTTP API over an index.

Examples:
  csmae serve runs/index --data ../shared/data/bigearthnet-v1/BigEarthNet-v1.0 \\
      ../shared/data/bigearthnet-v1/BigEarthNet-S1-v1.0
  csmae serve runs/index --port 8080           # no previews without --data
  CSMAE_ADMIN_TOKEN=... csmae serve runs/index # enables POST /api/reload (Authorization: Bearer ...)

Open http://127.0.0.1:8000/ for the page, /docs for the API. The server binds to 127.0.0.1 by
default; binding another address exposes the archive to the network (no authentication).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging

LOOPBACK_NAMES = ("localhost",)


#: seconds uvicorn keeps an idle HTTP connection open (its default, 5 s, equals httpx's client expiry)
KEEP_ALIVE_S = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index_dir", metavar="INDEX_DIR", help="index folder written by `csmae index`")
    p.add_argument("--data", nargs="+", metavar="DATASET", default=None,
                   help="dataset source(s) of the archive, for previews (any format open_dataset reads)")
    p.add_argument("--model", metavar="MODEL_DIR", default=None,
                   help="model folder for queries by upload (default: the one recorded in the index)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-k", type=int, default=100, help="largest k a search may ask for")
    p.add_argument("--max-upload-mb", type=float, default=16.0, help="largest upload request in MiB")
    p.add_argument("--search-threads", type=int, default=1,
                   help="FAISS threads per search (default 1: concurrent requests use the cores instead)")
    p.add_argument("--serialize", action="store_true",
                   help="run one retriever call at a time (default: searches by id run concurrently)")
    p.add_argument("--basemap", metavar="URL_TEMPLATE", default=None,
                   help="tile URL template drawn under the footprints on the map, e.g. "
                        "'https://tile.openstreetmap.org/{z}/{x}/{y}.png' "
                        "(default: none; the page stays offline)")
    p.add_argument("--admin-token", metavar="TOKEN", default=None,
                   help="token POST /api/reload needs ('Authorization: Bearer TOKEN'); default: the "
                        "CSMAE_ADMIN_TOKEN environment variable; without one reload is disabled")
    p.add_argument("--allow-unverified-reload", action="store_true",
                   help="let /api/reload load an index that records no checksums (default: refused)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _basemap(url: str | None) -> str | None:
    """Check a tile URL template: http(s) with {z}, {x} and {y}."""
    if url is None:
        return None
    if not url.startswith(("http://", "https://")) or not all(p in url for p in ("{z}", "{x}", "{y}")):
        raise ValueError(
            f"--basemap must be an http(s) URL template with {{z}}, {{x}} and {{y}}, got {url!r}")
    return url


def _admin_token(given: str | None) -> str | None:
    """The reload token: --admin-token, else $CSMAE_ADMIN_TOKEN; None (reload off) when neither."""
    import os

    from csmae.service.admin import TOKEN_ENV

    token = given if given is not None else os.environ.get(TOKEN_ENV)
    if token is not None and len(token.strip()) < 8:
        raise ValueError(f"--admin-token / {TOKEN_ENV} must be at least 8 characters")
    return token.strip() if token else None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from csmae.retrieval import Retriever
    from csmae.service import ServiceSettings, create_app

    if args.max_k < 1:
        raise ValueError(f"--max-k must be at least 1, got {args.max_k}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.search_threads < 1:
        raise ValueError(f"--search-threads must be at least 1, got {args.search_threads}")
    try:
        import faiss

        faiss.omp_set_num_threads(args.search_threads)
    except ImportError:  # the retriever reports a missing FAISS itself
        pass
    args.host = args.host.strip("[]")  # "[::1]" as written in URLs
    loopback = is_loopback(args.host)
    if not loopback:
        logging.getLogger(__name__).warning(
            "binding %s: the archive and search are reachable from the network without authentication",
            args.host,
        )
    retriever = Retriever.load(args.index_dir, model_dir=args.model, data=args.data)
    settings = ServiceSettings(
        max_k=args.max_k,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        thread_safe=not args.serialize,
        allowed_hosts=tuple(dict.fromkeys(("127.0.0.1", "localhost", "::1", args.host))) if loopback
        else None,
        basemap=_basemap(args.basemap),
        admin_token=_admin_token(args.admin_token),
        allow_unverified_reload=args.allow_unverified_reload,
    )
    app = create_app(retriever, settings=settings)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    where = f"http://{shown}:{args.port}/" if args.port else f"{shown} on a free port (see below)"
    print(f"csmae serve: {where}  (API docs at /docs; Ctrl+C to stop)", flush=True)
    # keep idle connections longer than clients do (httpx and browsers: 5 s or less); with equal
    # timeouts a client may reuse a connection the server is closing ("disconnected without a response")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False,
                timeout_keep_alive=KEEP_ALIVE_S)
    return 0
