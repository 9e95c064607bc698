"""Property-based API test: schemathesis generates requests from the app's own /openapi.json and
checks that none gets a server error (5xx). Bounded: a few examples per operation, no deadline.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

import tiny  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from PIL import Image  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from onnxact.viewer.app import create_app  # noqa: E402


def _gallery(tmp_path_factory):
    d = tmp_path_factory.mktemp("st") / "images"
    d.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, "PNG")
    (d / "one.png").write_bytes(buf.getvalue())
    return d


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    a = create_app(tiny.conv_net(channels=(3, 4), size=16), _gallery(tmp_path_factory), max_upload=100_000)
    yield a
    a.state.viewer.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def real_id(app):
    return app.state.viewer.scan()[0].id


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
