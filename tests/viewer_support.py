"""For the viewer tests: a private temporary folder checked for left-over upload folders, a real
``onnxact serve`` process whose listening sockets can be read, and a real uvicorn server for an
app in a thread (:func:`live_server`).

Every ``ViewerState`` keeps uploads in an ``onnxact-uploads-*`` folder under the temporary
directory and must remove it when closed (and ``onnxact serve`` on Ctrl-C or SIGTERM). The
viewer test modules import this autouse fixture: it points ``tempfile`` (and, for the serve
subprocesses, ``TMPDIR``) at a folder of their own, so other processes' folders never count,
and fails the module if any upload folder is still there when the module's servers are gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Debian's Chromium, driven by playwright (``playwright install`` cannot download here)
CHROMIUM = os.environ.get("ONNXACT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
needs_proc = pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="reads sockets from Linux /proc")


@pytest.fixture(scope="module", autouse=True)
def no_upload_folders_left(tmp_path_factory):
    d = tmp_path_factory.mktemp("tmpdir")
    old_tempdir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(d)
    os.environ["TMPDIR"] = str(d)
    try:
        yield d
    finally:
        tempfile.tempdir = old_tempdir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
    left = sorted(p.name for p in d.glob("onnxact-uploads-*"))
    assert not left, f"the viewer tests left upload folders behind: {left}"


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs the process ``pid`` listens on, read from /proc (its socket inodes)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                f = line.split()
                if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                    continue
                raw, port = bytes.fromhex(f[1].split(":")[0]), int(f[1].split(":")[1], 16)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per-word byte order
                found.add((socket.inet_ntop(family, raw), port))
    return found


@contextlib.contextmanager
def serve_process(*args: str):
    """``onnxact serve ARGS`` in a real interpreter; yields (process, url); always reaped."""
    import httpx

    code = "import sys; from onnxact.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen([sys.executable, "-c", code, "serve", *args, "--port", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = p.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(url + "favicon.ico", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or p.poll() is not None:
                    raise
                time.sleep(0.1)
        yield p, url
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app: Any, log_level: str = "critical", close_app: bool = True) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1; yields its base URL; stops the server (and closes the viewer state
    unless ``close_app`` is false) afterwards."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(10)
        if close_app:
            app.state.viewer.close()


def photo_folder(tmp: Path, photos: dict[str, str]) -> Path:
    """``tmp/photos`` holding each test photo (``subjects.photo`` name) at its relative path."""
    import shutil

    from subjects import photo

    d = tmp / "photos"
    for src, rel in photos.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo(src), d / rel)
    return d
