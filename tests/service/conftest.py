"""Fixtures of the service tests: a fake retriever, an in-process client and a live loopback server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from .fake_retriever import FakeRetriever


@pytest.fixture(scope="module")
def fake() -> FakeRetriever:
    return FakeRetriever(n=30, seed=0)


@pytest.fixture(scope="module")
def client(fake: FakeRetriever):
    from fastapi.testclient import TestClient

    from csmae.service import create_app

    with TestClient(create_app(fake), raise_server_exceptions=False) as c:
        yield c


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app, *, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def real_retriever(v1_roots, tmp_path_factory):
    """The real retrieval core over the v1 samples: tiny random model -> embeddings -> exact index."""
    s2_root, s1_root = v1_roots
    if not s2_root.exists():
        pytest.skip(f"v1 sample not found at {s2_root}")
    pytest.importorskip("csmae.retrieval.retriever", reason="retrieval core not built yet")
    import torch

    import csmae
    from csmae.retrieval import Retriever, build_index, embed_dataset

    tmp = tmp_path_factory.mktemp("serve-real")
    torch.manual_seed(0)
    csmae.create_model("csmae_sesd_tiny").save_pretrained(tmp / "model")
    sources = [str(s2_root), str(s1_root)]
    emb = embed_dataset(tmp / "model", sources, tmp / "emb", precision="fp32", device="cpu", batch_size=8)
    build_index(emb, kind="exact", out=tmp / "index")
    return Retriever.load(tmp / "index", model_dir=tmp / "model", data=sources)


@pytest.fixture(scope="module")
def page_retriever(request):
    """The real retriever when the shared samples and the retrieval core exist, else the fake one."""
    try:
        return request.getfixturevalue("real_retriever")
    except pytest.skip.Exception:
        return FakeRetriever(n=30, seed=0)


@pytest.fixture(scope="module")
def live_server(page_retriever) -> Iterator[LiveServer]:
    from csmae.service import create_app

    with LiveServer(create_app(page_retriever)) as server:
        yield server
