"""The app's defences: body size limit, upload checks, Host check, safe headers, errors without traces.

Its own stage because these are the rules every request passes through, whatever the route;
keeping them together makes the security review (tests/test_viewer_security.py) one file's read.
"""

import io
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import OnnxactError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_ALLOWED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_ID_PATTERN = r"^[gu][0-9a-f]{16}$"


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with a JSON 413.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it arrives and the read fails with HTTPException(413) (FastAPI re-raises
    HTTPExceptions from body parsing, so the client gets the JSON error, not a 400 or 500).
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body over the {self.limit // 1024} KB limit"
        for k, v in scope.get("headers", []):
            if k == b"content-length" and (not v.isdigit() or int(v) > self.limit):
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(status_code=413, detail=detail)
            return msg

        await self.app(scope, counted, send)


def _http(status: int, detail: str) -> Exception:
    return HTTPException(status_code=status, detail=detail)


def check_upload(data: bytes, max_upload: int) -> str:
    """The Pillow format name of an upload, after refusing empty, oversized, non-image and bomb files.

    Identifying the format is not enough (a header can lie), so the whole image is decoded once
    with the pixel-count limit of :func:`onnxact.preprocess.load_image` before it is kept.
    """
    from PIL import Image

    from ..preprocess import load_image

    if not data:
        raise _http(422, "the uploaded file is empty")
    if len(data) > max_upload:
        raise _http(413, f"the upload is over the {max_upload // (1024 * 1024)} MB limit")
    try:
        fmt = Image.open(io.BytesIO(data)).format
    except Image.DecompressionBombError:
        raise _http(422, "the uploaded image has too many pixels to decode safely; resize it first") from None
    except Exception:  # noqa: BLE001 - any failure to identify means "not an image"
        fmt = None
    if fmt not in _ALLOWED_FORMATS:
        raise _http(415, "the upload is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)")
    try:
        load_image(data)  # full decode, with the pixel-count (bomb) limit
    except OnnxactError as e:
        raise _http(422, str(e)) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for hostile files
        raise _http(422, "the upload could not be decoded as an image") from None
    return fmt


def install_guards(app: FastAPI, allowed_hosts: list[str] | None) -> None:
    """Host-header check (DNS rebinding), security headers, and JSON errors that never carry a trace."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if allowed_hosts is not None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
            if host not in allowed_hosts:
                return JSONResponse({"detail": "host not allowed"}, status_code=400)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        return response

    @app.exception_handler(OnnxactError)
    async def onnxact_error(request: Request, exc: OnnxactError) -> Any:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Any:  # never a stack trace
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)
