"""Viewer safety (issue 21): bounded decodes, uploads off the event loop, same-origin writes, the Host
check whatever --host is, errors without server paths, answers for any model output, clean stops.

Each test backs a row of docs/robustness.md, section "Safety: hostile images and the viewer".
"""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import tiny  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from PIL import Image  # noqa: E402
from viewer_support import listening, live_server, needs_proc, no_upload_folders_left, serve_process  # noqa: E402,F401

from onnxact.viewer.app import create_app  # noqa: E402
from tests.test_safety_images import big_png, peak_rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def png(size=(24, 24), seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def gallery(tmp_path):
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    (d / "a.png").write_bytes(png(seed=1))
    (d / "sub" / "broken.png").write_bytes(png(seed=2)[:150])  # truncated
    return d


@pytest.fixture()
def client(gallery):
    app = create_app(tiny.conv_net(), gallery, scan_dead=False)
    with TestClient(app) as c:
        yield c
    app.state.viewer.close()


def ids(c) -> dict[str, str]:
    return {i["name"]: i["id"] for i in c.get("/api/images").json()}


# --------------------------------------------------------------------------- same-origin writes
@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.com"},
    {"Origin": "null"},
    {"Origin": "http://testserver.evil.com"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port or sub-domain of the same site is another origin
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
], ids=["evil-origin", "null-origin", "lookalike-origin", "cross-site", "same-site", "cross-site-fetch-wins"])
def test_cross_site_upload_is_refused(client, headers):
    state = client.app.state.viewer
    r = client.post("/api/images", files={"file": ("x.png", png(), "image/png")}, headers=headers)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"].startswith("cross-site request refused")
    assert state.uploads == {} and list(state.upload_dir.iterdir()) == []


@pytest.mark.parametrize("headers", [
    {}, {"Origin": "http://testserver"}, {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
    {"Sec-Fetch-Site": "none"},
], ids=["tool-without-headers", "own-origin", "same-origin-fetch", "typed-by-user"])
def test_own_page_and_tools_can_upload(client, headers):
    r = client.post("/api/images", files={"file": ("x.png", png(), "image/png")}, headers=headers)
    assert r.status_code == 201, r.text


def test_cross_site_reads_are_answered(client):
    """Reads change nothing (and the browser keeps another site's script from reading the answer)."""
    assert client.get("/api/model", headers={"Origin": "http://evil.com"}).status_code == 200


# -------------------------------------------------------------------------------- upload thread
def test_upload_is_validated_off_the_event_loop(gallery, monkeypatch):
    """While one upload is being validated, another request is answered (the event loop is free).

    The validation (a full decode) is held on an event, standing for an 11-s decode.
    """
    from onnxact.viewer import state as state_mod

    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    real = state_mod.check_upload

    def slow_check(data: bytes, max_upload: int) -> str:
        started.set()
        release.wait(30)
        try:
            return real(data, max_upload)
        finally:
            finished.set()

    monkeypatch.setattr(state_mod, "check_upload", slow_check)
    app = create_app(tiny.conv_net(), gallery, scan_dead=False)
    try:
        with live_server(app, close_app=False) as base, ThreadPoolExecutor(1) as pool:
            upload = pool.submit(httpx.post, f"{base}/api/images", files={"file": ("x.png", png(), "image/png")},
                                 timeout=60)
            assert started.wait(30)
            r = httpx.get(f"{base}/api/images", timeout=60)
            answered_while_validating = not finished.is_set()
            release.set()
            up = upload.result()
        assert r.status_code == 200 and answered_while_validating
        assert up.status_code == 201 and up.json()["id"] in app.state.viewer.uploads
    finally:
        release.set()
        app.state.viewer.close()


# ------------------------------------------------------------------------------ unknown image ids
def test_unknown_ids_neither_rescan_nor_grow_the_lock_table(client, monkeypatch):
    state = client.app.state.viewer
    known = ids(client)
    scans = []
    real_scan = state.scan
    monkeypatch.setattr(state, "scan", lambda: scans.append(1) or real_scan())
    locks = list(state._capture_locks)
    for i in range(300):
        r = client.get(f"/api/images/g{i:016x}/layers/0/tiles/0.png")
        assert r.status_code == 404
    assert client.get("/api/gallery/no/such.png").status_code == 404
    assert scans == []  # was one walk of IMAGES_DIR per unknown id (250 ms each on 2000 files)
    assert list(state._capture_locks) == locks  # a fixed table, whatever ids are asked for
    assert client.get(f"/api/images/{known['a.png']}/predictions").status_code == 200
    assert client.get("/api/images").status_code == 200 and scans == [1]  # the listing does rescan


def test_new_files_appear_after_the_listing_not_on_a_guessed_id(client, gallery):
    before = ids(client)
    (gallery / "new.png").write_bytes(png(seed=9))
    after = ids(client)
    assert set(after) - set(before) == {"new.png"}
    assert client.get(f"/api/images/{after['new.png']}/image.png").status_code == 200


# ------------------------------------------------------------------------ errors without paths
def test_errors_name_the_image_by_its_gallery_name_not_its_path(client, gallery, tmp_path):
    big_png(gallery / "huge.png", 10000, 10000, colour=2)  # 381 MB once decoded: refused from its header
    known = ids(client)
    for name, why in (("sub/broken.png", "truncated or corrupt"), ("huge.png", "over the 256 MB limit")):
        iid = known[name]
        for url in (f"/api/images/{iid}/predictions", f"/api/images/{iid}/image.png",
                    f"/api/images/{iid}/layers/0/stats", f"/api/images/{iid}/cam.png", f"/api/gallery/{name}"):
            r = client.get(url)
            assert r.status_code == 422, (url, r.status_code, r.text)
            detail = r.json()["detail"]
            assert name in detail and why in detail, (url, detail)
            assert str(tmp_path) not in r.text and "/images/" not in detail, (url, detail)


def test_upload_errors_carry_no_server_path(client):
    state = client.app.state.viewer
    r = client.post("/api/images", files={"file": ("x.png", png()[:120], "image/png")})
    assert r.status_code == 422 and str(state.upload_dir) not in r.text and "/tmp" not in r.text


# ------------------------------------------------------------------------------- model outputs
def zipmap_model(keep_probs: bool = True) -> onnx.ModelProto:
    """tiny.conv_net whose first output is a ZipMap (a sequence of maps) of its probabilities,
    with the probabilities tensor kept as a second output or not."""
    m = tiny.conv_net()
    m.graph.node.append(helper.make_node("ZipMap", ["probs"], ["label_probs"], domain="ai.onnx.ml",
                                         classlabels_int64s=list(range(5))))
    seq = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    m.graph.output.insert(0, helper.make_value_info("label_probs", seq))
    if not keep_probs:
        del m.graph.output[1]
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    onnx.checker.check_model(m)
    return m


def test_sequence_of_maps_output_answers_predictions(gallery):
    """A ZipMap output (a list of dicts) made /predictions a 500. Now 200: the classes come from a
    numeric [N, classes] output when there is one, else an empty list with a note saying why."""
    with_probs = create_app(zipmap_model(), gallery, scan_dead=False)
    with TestClient(with_probs) as c:
        iid = ids(c)["a.png"]
        r = c.get(f"/api/images/{iid}/predictions")
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["output"] == "probs" and p["probabilities"] is True and len(p["top"]) == 5 and p["note"] is None
        assert abs(sum(t["score"] for t in p["top"]) - 1) < 1e-5
    with_probs.state.viewer.close()
    only_map = create_app(zipmap_model(keep_probs=False), gallery, scan_dead=False)
    with TestClient(only_map) as c:
        iid = ids(c)["a.png"]
        r = c.get(f"/api/images/{iid}/predictions")
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["output"] is None and p["top"] == [] and p["note"].startswith("no classifier head")
        assert c.get(f"/api/images/{iid}/layers/0/tiles/0.png").status_code == 200
    only_map.state.viewer.close()


# ---------------------------------------------------------------------------- hostile gallery
def test_hostile_16bit_png_in_the_gallery_costs_bounded_memory(tmp_path):
    """A 194 KB 10000x10000 16-bit PNG: one image request peaked at 2.6 GB; now its 200 MB decode + 8-bit copy."""
    d = tmp_path / "images"
    d.mkdir()
    big_png(d / "grey16.png", 10000, 10000, bits=16)
    model = tmp_path / "m.onnx"
    onnx.save(tiny.conv_net(size=32), model)
    code = f"""
import json
import os
from fastapi.testclient import TestClient
from onnxact.viewer.app import create_app
app = create_app({str(model)!r}, {str(d)!r}, scan_dead=False)
with TestClient(app) as c:
    iid = c.get("/api/images").json()[0]["id"]
    a = c.get(f"/api/images/{{iid}}/image.png?size=256")
    b = c.get(f"/api/images/{{iid}}/predictions")
app.state.viewer.close()
print(json.dumps({{"image": a.status_code, "size": len(a.content), "predictions": b.status_code}}))
"""
    peak, out = peak_rss_mb(code)
    assert out["image"] == 200 and out["predictions"] == 200 and out["size"] > 100
    assert peak < 700, f"peak RSS {peak:.0f} MB"


# --------------------------------------------------------------------------- serve, for real
@pytest.fixture()
def model_file(tmp_path):
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny.conv_net(), p)
    return p


@needs_proc
def test_serve_listens_on_loopback_only_and_sigterm_removes_uploads(model_file, gallery):
    with serve_process(str(model_file), str(gallery)) as (p, url):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert listening(p.pid) == {("127.0.0.1", port)}
        r = httpx.post(url + "api/images", files={"file": ("x.png", png(), "image/png")}, timeout=10)
        assert r.status_code == 201
        folders = list(Path(tempfile.gettempdir()).glob("onnxact-uploads-*"))  # the fixture's private TMPDIR
        assert len(folders) == 1 and len(list(folders[0].iterdir())) == 1
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 143  # graceful stop, exit 128 + SIGTERM: the upload folder is removed on the way out
        assert "Traceback" not in p.stderr.read()
    assert not folders[0].exists()


@needs_proc
def test_serve_on_all_interfaces_keeps_the_host_check(model_file):
    with serve_process(str(model_file), "--host", "0.0.0.0", "--allowed-host", "viewer.lan",
                       "--allowed-host", "10.1.2.3") as (p, url):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert listening(p.pid) == {("0.0.0.0", port)}
        base = f"http://127.0.0.1:{port}/api/model"
        for host, status in (("evil.example", 400), ("viewer.lan", 200), (f"viewer.lan:{port}", 200),
                             (f"10.1.2.3:{port}", 200), (f"127.0.0.1:{port}", 200), ("localhost", 200),
                             ("viewer.lan.evil.example", 400)):
            r = httpx.get(base, headers={"Host": host}, timeout=10)
            assert r.status_code == status, (host, r.status_code)
        assert r.headers["content-type"].startswith("application/json")
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 143
        err = p.stderr.read()
        assert "warning" in err and "viewer.lan" in err and "--allowed-host" in err


def test_serve_answers_as_json_traces_nothing(model_file, gallery):
    """Refusals of the real server are JSON one-liners (host, cross-site) with no trace."""
    with serve_process(str(model_file), str(gallery)) as (p, url):
        r = httpx.post(url + "api/images", files={"file": ("x.png", png(), "image/png")},
                       headers={"Origin": "http://evil.com"}, timeout=10)
        assert r.status_code == 403 and json.loads(r.text)["detail"].startswith("cross-site request refused")
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 143


# ------------------------------------------------------------------------- in a real browser
CHROMIUM = os.environ.get("ONNXACT_CHROMIUM", "/usr/bin/chromium")
ATTACK = """<!doctype html><script>
const png = Uint8Array.from(atob("%s"), c => c.charCodeAt(0));
const fd = new FormData();
fd.append("file", new File([png], "evil.png", {type: "image/png"}));
// a multipart POST is a "simple" request: no CORS preflight, the browser just sends it
fetch("%s/api/images", {method: "POST", body: fd, mode: "no-cors"})
  .then(() => { document.title = "sent"; }, () => { document.title = "failed"; });
</script>"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")
def test_in_chromium_another_site_cannot_upload_but_the_page_can(gallery, tmp_path):
    import base64
    import http.server

    sync_api = pytest.importorskip("playwright.sync_api")
    app = create_app(tiny.conv_net(), gallery, scan_dead=False)
    state = app.state.viewer
    try:
        with live_server(app, close_app=False) as base:
            page_html = (ATTACK % (base64.b64encode(png()).decode(), base)).encode()

            class Evil(http.server.BaseHTTPRequestHandler):
                def do_GET(self):  # noqa: N802 - http.server's name
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    self.wfile.write(page_html)

                def log_message(self, *a):
                    pass

            evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
            threading.Thread(target=evil.serve_forever, daemon=True).start()
            try:
                with sync_api.sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                    try:
                        page = browser.new_page()
                        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
                        page.wait_for_function("document.title !== ''")
                        assert page.title() == "sent"  # the request did go out...
                        assert state.uploads == {}  # ...and was refused (403): nothing kept
                        own = browser.new_page()
                        own.goto(base + "/")
                        own.wait_for_selector("#upload", state="attached")
                        p = tmp_path / "mine.png"
                        p.write_bytes(png(seed=5))
                        own.set_input_files("#upload", str(p))
                        own.locator(".tag", has_text="upload").first.wait_for()  # the page's CSP forbids eval
                        assert [e.name for e in state.uploads.values()] == ["mine.png"]
                    finally:
                        browser.close()
            finally:
                evil.shutdown()
                evil.server_close()
    finally:
        state.close()


def test_host_names_are_compared_without_port_case_or_brackets():
    from onnxact.viewer.security import _host_name

    assert _host_name("[::1]:8000") == "::1" and _host_name("[::1]") == "::1" and _host_name("::1") == "::1"
    assert _host_name("Viewer.LAN:8000") == "viewer.lan" and _host_name("viewer.lan") == "viewer.lan"
    assert _host_name("evil.example:80:81") == "evil.example:80:81"  # not a name we would accept
