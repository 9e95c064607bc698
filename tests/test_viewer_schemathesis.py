"""Property-based API test: schemathesis generates requests from the app's own /openapi.json and
checks that none gets a server error (5xx). Bounded: a few examples per operation, no deadline.
"""

from __future__ import annotations

import io
import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

import tiny  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from PIL import Image  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from onnxact.viewer.app import create_app  # noqa: E402


def _gallery(root: Path) -> Path:
    d = root / "images"
    d.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, "PNG")
    (d / "one.png").write_bytes(buf.getvalue())
    return d


# The schema is loaded eagerly from an app made at import: schemathesis' lazy `from_fixture`
# schema reaches into pytest's private `Function._nodeid`, which pytest 9.2 removed.
_ROOT = Path(tempfile.mkdtemp(prefix="onnxact-st-"))
APP = create_app(tiny.conv_net(channels=(3, 4), size=16), _gallery(_ROOT), max_upload=100_000)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _close_app():
    yield
    APP.state.viewer.close()
    shutil.rmtree(_ROOT, ignore_errors=True)
    assert not APP.state.viewer.upload_dir.exists()  # made at import, so checked here, not in a private tmp


@pytest.fixture(scope="module")
def real_id():
    return APP.state.viewer.scan()[0].id


_turn = itertools.count()


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, real_id):
    # Every other request uses a real image id so the handlers behind the id check are exercised.
    if case.path_parameters and "image_id" in case.path_parameters and next(_turn) % 2 == 0:
        case.path_parameters["image_id"] = real_id
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        ctype = response.headers.get("content-type") or response.headers.get("Content-Type") or [""]
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith("application/json"), (response.status_code, ctype)
