"""The exemplar endpoints of the viewer (issue 15): the background scan of IMAGES_DIR, its progress
states, one filter's top list against an independent ``find_exemplars``, the crops, the cache and
its invalidation, and the path rules (relative names only, nothing outside the folder)."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import tiny  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from subjects import photo  # noqa: E402
from viewer_support import no_upload_folders_left, photo_folder, serve_process  # noqa: E402,F401 - autouse: no upload folder left behind

from onnxact.errors import InputError  # noqa: E402
from onnxact.viewer.app import create_app  # noqa: E402
from onnxact.viewer.exemplars_job import ExemplarJob  # noqa: E402

PHOTOS = {"astronaut.png": "astronaut.png", "coffee.png": "drinks/coffee.png", "rocket.jpg": "rocket.jpg",
          "chelsea.png": "chelsea.png", "camera.png": "camera.png"}
TOP = 3


def _folder(tmp: Path) -> Path:
    return photo_folder(tmp, PHOTOS)


def _model():
    return tiny.conv_net(channels=(4, 8), size=32)


@pytest.fixture()
def folder(tmp_path):
    return _folder(tmp_path)


@pytest.fixture()
def app(folder):
    a = create_app(_model(), folder, scan_dead=False, exemplar_top=TOP)
    yield a
    a.state.viewer.close()


@pytest.fixture()
def client(app):
    with TestClient(app) as c:
        yield c


def _wait(client, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while True:
        st = client.get("/api/exemplars").json()
        if st["state"] != "running" or time.time() > deadline:
            return st
        time.sleep(0.05)


def _relative(folder: Path, image: str) -> str:
    return Path(image).resolve().relative_to(folder.resolve()).as_posix()


def test_scan_runs_in_the_background_and_lists_equal_an_independent_find_exemplars(client, folder):
    import onnxact
    from onnxact.exemplars import find_exemplars

    assert client.get("/api/exemplars").json()["state"] == "idle"
    st = client.post("/api/exemplars")
    assert st.status_code == 202 and st.json()["total"] == len(PHOTOS) and st.json()["folder"] == "photos"
    st = _wait(client)
    assert st["state"] == "done" and st["done"] == st["total"] == st["images"] == len(PHOTOS), st
    assert st["skipped"] == 0 and st["error"] is None

    m = onnxact.load(_model())
    found = find_exemplars(m, sorted(str(p) for p in folder.rglob("*.*")), top=TOP)
    ids = {im["name"]: im["id"] for im in client.get("/api/images").json()}
    compared = 0
    for index, layer in enumerate(m.layers):
        for channel, top in enumerate(found.layers.get(layer.name, [])):
            r = client.get(f"/api/exemplars/layers/{index}/channels/{channel}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["name"] == layer.name and body["images"] == len(PHOTOS)
            got = body["top"]
            assert [e["image"] for e in got] == [_relative(folder, e.image) for e in top]
            assert [e["value"] for e in got] == pytest.approx([e.value for e in top], rel=1e-6)
            assert [e["box"] for e in got] == [list(e.box) for e in top]
            assert [e["id"] for e in got] == [ids[e["image"]] for e in got]  # the gallery's own ids
            assert [e["rank"] for e in got] == list(range(len(top)))
            compared += 1
    assert compared >= 12  # both convs and pools of the tiny net, every filter


def test_progress_states_running_then_done_with_counts(app, client, monkeypatch):
    release = threading.Event()
    seen: list[tuple[int, int]] = []
    report = ExemplarJob.progress

    def held(self, done, total):
        release.wait(60)
        seen.append((done, total))
        report(self, done, total)

    monkeypatch.setattr(ExemplarJob, "progress", held)
    st = client.post("/api/exemplars").json()
    assert st["state"] == "running" and st["done"] == 0 and st["total"] == len(PHOTOS)
    assert client.get("/api/exemplars").json()["state"] == "running"
    r = client.get("/api/exemplars/layers/0/channels/0")  # not ready yet: 409, one line
    assert r.status_code == 409 and "still being computed (0 of 5 images)" in r.json()["detail"]
    assert client.get("/api/exemplars/layers/0/channels/0/0.png").status_code == 409
    again = client.post("/api/exemplars").json()  # the same folder: the same running scan, not a second one
    assert again["scan"] == st["scan"] and again["state"] == "running"
    release.set()
    st = _wait(client)
    assert st["state"] == "done" and seen and seen[-1] == (len(PHOTOS), len(PHOTOS))
    assert all(0 <= d <= t == len(PHOTOS) for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # done only grows


def test_cached_until_the_folder_changes(client, folder):
    first = client.post("/api/exemplars").json()
    assert _wait(client)["state"] == "done"
    again = client.post("/api/exemplars").json()  # unchanged folder: the cached result at once
    assert again["state"] == "done" and again["scan"] == first["scan"]

    # a new image that excites every first-layer filter more than any photo: a new scan, a new top 1
    white = np.full((64, 64, 3), 255, np.uint8)
    white[::2, ::2] = 0  # a fine checkerboard: strong edges for every 3x3 filter
    Image.fromarray(white).save(folder / "zz_pattern.png")
    changed = client.post("/api/exemplars").json()
    assert changed["scan"] != first["scan"] and changed["total"] == len(PHOTOS) + 1
    assert _wait(client)["state"] == "done"
    listed = {e["image"] for c in range(4) for e in client.get(f"/api/exemplars/layers/0/channels/{c}").json()["top"]}
    assert "zz_pattern.png" in listed  # the new image is in the new result
    assert client.get("/api/exemplars").json()["images"] == len(PHOTOS) + 1

    # rewriting a file (new mtime and size) also gives a new scan
    os.utime(folder / "rocket.jpg", ns=(1_000_000_000, 1_000_000_000))
    assert client.post("/api/exemplars").json()["scan"] not in (first["scan"], changed["scan"])
    assert _wait(client)["state"] == "done"


def test_unknown_layer_channel_rank_are_404_with_one_line(client):
    client.post("/api/exemplars")
    assert _wait(client)["state"] == "done"
    cases = {
        "/api/exemplars/layers/99/channels/0": "layer 99 does not exist",
        "/api/exemplars/layers/0/channels/4": "layer 0 has 4 filters; channel 4 does not exist",
        "/api/exemplars/layers/0/channels/0/3.png": f"has {TOP} top images; rank 3 does not exist",
        "/api/exemplars/layers/99/channels/0/0.png": "layer 99 does not exist",
    }
    for url, words in cases.items():
        r = client.get(url)
        assert r.status_code == 404, (url, r.status_code)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail, (url, detail)
    for url in ("/api/exemplars/layers/-1/channels/0", "/api/exemplars/layers/0/channels/x",
                "/api/exemplars/layers/0/channels/0/0.png?size=4096"):
        assert client.get(url).status_code == 422, url


def test_crop_is_the_box_region_of_the_right_image(client, folder):
    client.post("/api/exemplars")
    assert _wait(client)["state"] == "done"
    top = client.get("/api/exemplars/layers/0/channels/1").json()["top"]
    for e in top:
        r = client.get(f"/api/exemplars/layers/0/channels/1/{e['rank']}.png?size=96")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        crop = Image.open(io.BytesIO(r.content))
        assert max(crop.size) == 96 and crop.mode == "RGB"
        # the crop keeps the box's region's aspect (box plus margin, clipped to the image)
        w, h = Image.open(folder / e["image"]).size
        x0, y0, x1, y1 = (max(0, min(w, e["box"][0])), max(0, min(h, e["box"][1])),
                          max(0, min(w, e["box"][2])), max(0, min(h, e["box"][3])))
        mx, my = max(8, (x1 - x0) // 2), max(8, (y1 - y0) // 2)
        cw, ch = min(w, x1 + mx) - max(0, x0 - mx), min(h, y1 + my) - max(0, y0 - my)
        assert crop.size[0] / crop.size[1] == pytest.approx(cw / ch, rel=0.05)


def test_no_server_path_in_any_answer_and_no_escape_from_the_folder(client, folder, tmp_path):
    client.post("/api/exemplars")
    st = _wait(client)
    assert st["state"] == "done"
    bodies = [client.get("/api/exemplars").text]
    for layer in range(4):
        bodies.append(client.get(f"/api/exemplars/layers/{layer}/channels/0").text)
    for text in bodies:
        assert str(tmp_path) not in text and str(folder.resolve()) not in text
    top = client.get("/api/exemplars/layers/0/channels/0").json()["top"]
    assert all(not e["image"].startswith("/") and ".." not in e["image"] for e in top)

    # traversal in the URL never reaches a file: the crop is addressed by rank, not by name
    for url in ("/api/exemplars/layers/0/channels/0/..%2F..%2F..%2Fetc%2Fpasswd.png",
                "/api/exemplars/layers/0/channels/0/../../../etc/passwd",
                "/api/exemplars/layers/0/channels/0/%2e%2e%2fsecret.png"):
        r = client.get(url)
        assert r.status_code in (404, 422), (url, r.status_code)
        assert "root:" not in r.text

    # a top image swapped after the scan for a link to a file outside the folder: refused
    outside = tmp_path / "secret.png"
    shutil.copy(photo("coffee.png"), outside)
    victim = folder / top[0]["image"]
    victim.unlink()
    victim.symlink_to(outside)
    r = client.get("/api/exemplars/layers/0/channels/0/0.png")
    assert r.status_code == 404 and "changed or left the folder" in r.json()["detail"]
    assert str(tmp_path) not in r.text

    # a top image rewritten after the scan (its box would be wrong): refused, reopen to recompute
    victim.unlink()
    shutil.copy(photo("chelsea.png"), victim)
    os.utime(victim, ns=(1, 1))
    r = client.get("/api/exemplars/layers/0/channels/0/0.png")
    assert r.status_code == 404 and "open the panel again" in r.json()["detail"]


def test_oversized_image_is_skipped_and_named_relatively(client, folder):
    # a PNG whose header claims 40000 x 40000 pixels: refused before decoding (the byte bound)
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    (folder / "drinks" / "huge.png").write_bytes(bomb)
    client.post("/api/exemplars")
    st = _wait(client)
    assert st["state"] == "done", st
    assert st["images"] == len(PHOTOS) and st["skipped"] == 1
    skipped = st["skipped_images"][0]
    assert skipped["image"] == "drinks/huge.png" and str(folder) not in skipped["reason"] and skipped["reason"]


def test_empty_folder_fails_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    a = create_app(_model(), empty, scan_dead=False)
    try:
        with TestClient(a) as c:
            c.post("/api/exemplars")
            st = _wait(c)
            assert st["state"] == "failed" and st["error"].startswith("no images in the folder empty;")
            r = c.get("/api/exemplars/layers/0/channels/0")
            assert r.status_code == 409 and "the exemplar scan failed: no images" in r.json()["detail"]
    finally:
        a.state.viewer.close()


def test_without_a_folder_exemplars_are_unavailable(tmp_path):
    a = create_app(_model(), None, scan_dead=False)
    try:
        with TestClient(a) as c:
            st = c.get("/api/exemplars").json()
            assert st["state"] == "unavailable" and st["folder"] is None
            assert st["error"].startswith("exemplars need a folder of images")
            r = c.post("/api/exemplars")
            assert r.status_code == 409 and r.json()["detail"] == st["error"]
            assert c.get("/api/exemplars/layers/0/channels/0").status_code == 409
    finally:
        a.state.viewer.close()


def test_one_image_instead_of_a_folder_is_served_alone_without_exemplars(folder):
    a = create_app(_model(), folder / "drinks" / "coffee.png", scan_dead=False)  # onnxact serve MODEL IMAGE
    try:
        with TestClient(a) as c:
            images = c.get("/api/images").json()
            assert [im["name"] for im in images] == ["coffee.png"]  # its neighbours are not listed
            assert c.get(f"/api/images/{images[0]['id']}/predictions").status_code == 200
            assert c.get("/api/gallery/astronaut.png").status_code == 404
            st = c.get("/api/exemplars").json()
            assert st["state"] == "unavailable" and st["folder"] is None and "need a folder" in st["error"]
            assert c.post("/api/exemplars").status_code == 409
    finally:
        a.state.viewer.close()
    with pytest.raises(InputError, match="images folder not found: .*nothing.png; pass a folder of images"):
        create_app(_model(), folder / "nothing.png")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"notes.txt is not an image \(.png, .jpg.*\); pass a folder of images"):
        create_app(_model(), folder / "notes.txt")


def test_serve_command_takes_one_image(folder, tmp_path):
    import httpx
    import onnx

    model = tmp_path / "tiny.onnx"
    onnx.save(_model(), model)
    with serve_process(str(model), str(folder / "rocket.jpg"), "--normalize", "0-1") as (p, url):
        assert [im["name"] for im in httpx.get(url + "api/images", timeout=30).json()] == ["rocket.jpg"]
        assert httpx.get(url + "api/exemplars", timeout=30).json()["state"] == "unavailable"
        p.terminate()  # a graceful stop removes the upload folder
        assert p.wait(20) == 143


def test_serve_top_option(folder, tmp_path, monkeypatch, capsys):
    import onnx
    import uvicorn

    from onnxact.cli import main

    model = tmp_path / "tiny.onnx"
    onnx.save(_model(), model)
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert main(["serve", str(model), str(folder), "--port", "0", "--top", "2", "--normalize", "0-1"]) == 0
    with TestClient(apps[0], base_url="http://127.0.0.1:8000") as c:  # serve turns the Host check on
        assert c.post("/api/exemplars").json()["top"] == 2
        assert _wait(c)["state"] == "done"
        assert len(c.get("/api/exemplars/layers/0/channels/0").json()["top"]) == 2
    apps[0].state.viewer.close()
    capsys.readouterr()
    for bad in ("0", "-3"):
        assert main(["serve", str(model), str(folder), "--port", "0", "--top", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "at least 1" in err and "Traceback" not in err


def test_cross_site_post_cannot_start_a_scan(client):
    r = client.post("/api/exemplars", headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert client.get("/api/exemplars").json()["state"] == "idle"


def test_closing_the_viewer_stops_a_running_scan(folder, monkeypatch):
    release = threading.Event()
    report = ExemplarJob.progress

    def held(self, done, total):
        release.wait(60)
        report(self, done, total)

    monkeypatch.setattr(ExemplarJob, "progress", held)
    a = create_app(_model(), folder, scan_dead=False)
    with TestClient(a) as c:
        c.post("/api/exemplars")
        a.state.viewer.close()
        release.set()
        st = _wait(c)
    assert st["state"] == "failed" and st["error"] == "stopped: the viewer closed"


def test_top_must_be_positive():
    with pytest.raises(InputError, match="at least 1"):
        create_app(_model(), None, exemplar_top=0)
