"""Viewer security: no file outside IMAGES_DIR or the app's assets is reachable, uploads are bounded
and checked, the model cannot be changed, and errors are JSON without stack traces.

Traversal requests go over a raw socket to a live uvicorn server, because HTTP clients normalise
``..`` and percent-encodings before sending.
"""

from __future__ import annotations

import io
import json
import os
import socket
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

import tiny  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from viewer_support import live_server, no_upload_folders_left  # noqa: E402,F401 - autouse: no upload folder left behind

from onnxact.viewer.app import create_app  # noqa: E402

SECRET = b"TOP-SECRET-MARKER"


def _png(seed=0, size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """IMAGES_DIR with a good image, plus secrets outside it reached by symlinks."""
    tmp = tmp_path_factory.mktemp("sec")
    outside = tmp / "outside"
    outside.mkdir()
    # a real, decodable PNG outside the folder that carries a marker in a text chunk
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", SECRET.decode())
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside / "secret.png", pnginfo=info)
    (outside / "secret.txt").write_bytes(SECRET)
    images = tmp / "images"
    images.mkdir()
    (images / "ok.png").write_bytes(_png(1))
    os.symlink(outside / "secret.png", images / "link.png")
    os.symlink(outside, images / "linkdir")
    os.symlink(images / "ok.png", images / "inner_link.png")  # a link that stays inside is fine
    return tmp, images


@pytest.fixture(scope="module")
def live(world):
    tmp, images = world
    app = create_app(tiny.conv_net(), images, max_upload=200_000)
    with live_server(app) as base:
        yield int(base.rsplit(":", 1)[1]), app


def raw_get(port: int, target: str) -> tuple[int, bytes, bytes]:
    """Send ``GET target`` byte for byte (no client-side normalisation); return (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, head, body


TRAVERSALS = [
    "/api/gallery/../outside/secret.png",
    "/api/gallery/..%2foutside%2fsecret.png",
    "/api/gallery/%2e%2e/outside/secret.png",
    "/api/gallery/%2e%2e%2foutside%2fsecret.png",
    "/api/gallery/%252e%252e%252foutside%252fsecret.png",
    "/api/gallery/..%5coutside%5csecret.png",
    "/api/gallery//etc/passwd",
    "/api/gallery/%2fetc%2fpasswd",
    "/api/gallery/link.png",
    "/api/gallery/linkdir/secret.png",
    "/api/gallery/linkdir/secret.txt",
    "/api/gallery/./../outside/secret.png",
    "/api/gallery/ok.png/../../outside/secret.png",
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e/app.py",
    "/static/%2e%2e%2f%2e%2e%2fmodel.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/api/images/..%2f..%2fetc%2fpasswd/image.png",
    "/api/images/%2e%2e/image.png",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_never_reads_outside(live, target):
    port, _ = live
    status, head, body = raw_get(port, target)
    assert status in (400, 404, 405, 422), (target, status, body[:200])
    assert SECRET not in body and b"root:" not in body and b"import " not in body
    assert b"Traceback" not in body
    if body:
        assert b"application/json" in head.lower(), (target, head)
        json.loads(body)


def test_the_legitimate_paths_work(live):
    port, _ = live
    assert raw_get(port, "/api/gallery/ok.png")[0] == 200
    assert raw_get(port, "/api/gallery/inner_link.png")[0] == 200
    assert raw_get(port, "/static/app.js")[0] == 200


def test_symlinks_that_leave_the_folder_are_not_listed(live):
    port, app = live
    names = {e.name for e in app.state.viewer.scan()}
    assert names == {"ok.png", "inner_link.png"}


@pytest.fixture()
def client(world):
    _, images = world
    app = create_app(tiny.conv_net(), images, max_upload=200_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.state.viewer.close()


def _bomb_png(w=30000, h=30000) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb)."""
    def chunk(t, d):
        return len(d).to_bytes(4, "big") + t + d + zlib.crc32(t + d).to_bytes(4, "big")
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name,data,status", [
    ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 300_000, 413),
    ("text.png", b"hello, not an image", 415),
    ("empty.png", b"", 422),
    ("truncated.png", _png(3, (64, 64))[:200], 422),
    ("bomb.png", _bomb_png(), 422),
    ("script.html", b"<script>alert(1)</script>", 415),
], ids=["too-big", "text", "empty", "truncated", "bomb", "html"])
def test_bad_uploads_are_refused(client, name, data, status):
    before = set(os.listdir(client.app.state.viewer.upload_dir))
    r = client.post("/api/images", files={"file": (name, data, "image/png")})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json") and "Traceback" not in r.text
    assert set(os.listdir(client.app.state.viewer.upload_dir)) == before


def test_upload_is_stored_under_the_temp_folder_whatever_its_name(client, world):
    tmp, images = world
    r = client.post("/api/images", files={"file": ("../../../evil.png", _png(4), "image/png")})
    assert r.status_code == 201
    state = client.app.state.viewer
    entry = state.uploads[r.json()["id"]]
    assert entry.path.parent == state.upload_dir and entry.path.name.startswith("u")
    assert r.json()["name"] == "evil.png"
    assert not (tmp / "evil.png").exists() and not (images / "evil.png").exists()


def test_upload_without_content_length_is_still_bounded(client):
    def gen():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
        yield b"Content-Type: image/png\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 10_000
        yield b"\r\n--b--\r\n"
    r = client.post("/api/images", content=gen(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    # refused by the streaming count (max_upload 200,000 + 64 KB), while the body arrives: the
    # upload check after parsing would answer "the upload is over the ... MB limit" instead
    assert r.status_code == 413, r.text
    assert r.json() == {"detail": f"request body over the {(200_000 + 64 * 1024) // 1024} KB limit"}
    assert r.headers["content-type"].startswith("application/json")


def test_model_cannot_be_changed_from_the_web(client):
    spec = client.get("/openapi.json").json()
    writes = [(p, m) for p, ops in spec["paths"].items() for m in ops if m in ("post", "put", "patch", "delete")]
    # uploads, and starting the exemplar scan of IMAGES_DIR (reads the folder, writes nothing)
    assert writes == [("/api/images", "post"), ("/api/exemplars", "post")]
    sha = client.get("/api/model").json()["sha256"]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = client.request(method, "/api/model", content=b"\x08\x07")
        assert r.status_code == 405 and r.headers["content-type"].startswith("application/json")
    assert client.get("/api/model").json()["sha256"] == sha


def test_internal_errors_are_json_without_trace(client, monkeypatch):
    def boom(image_id):
        raise RuntimeError("secret internals at /home/me")
    monkeypatch.setattr(client.app.state.viewer, "capture", boom)
    iid = client.get("/api/images").json()[0]["id"]
    r = client.get(f"/api/images/{iid}/predictions")
    assert r.status_code == 500
    assert r.json()["detail"].startswith("internal error") and "/home/me" not in r.text and "Traceback" not in r.text


def test_oversized_content_length_is_refused_early(client):
    r = client.post("/api/images", content=b"x" * 10, headers={"Content-Length": "999999999",
                                                                "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
