"""The app's defences: body size limit, upload checks, Host check, safe headers, errors without traces.

Its own stage because these are the rules every request passes through, whatever the route;
keeping them together makes the security review (tests/test_viewer_security.py) one file's read.
"""

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import OnnxactError
from .checks import _ALLOWED_FORMATS, _ID_PATTERN, MAX_UPLOAD_BYTES, _http, check_upload

__all__ = ["BodyLimit", "check_upload", "cross_site", "install_guards", "MAX_UPLOAD_BYTES", "_ALLOWED_FORMATS",
           "_ID_PATTERN", "_http"]

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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


def _host_name(value: str) -> str:
    """The name part of a Host header or URL authority: ``[::1]:8000`` -> ``::1``, ``Name:80`` -> ``name``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def cross_site(headers: Any) -> str | None:
    """Why a state-changing request comes from another site's page, or None when it is the viewer's own.

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with every cross-origin POST (a multipart
    form POST needs no CORS preflight, so without this check any page the user visits could
    upload to the viewer). Requests with neither header come from tools such as curl, not from
    a page, and pass.
    """
    site = (headers.get("sec-fetch-site") or "").lower()
    if site and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site}"
    origin = headers.get("origin")
    if origin is None:
        return None
    parts = urlsplit(origin)
    if origin == "null" or parts.scheme not in ("http", "https") or not parts.netloc:
        return f"Origin is {origin[:80]!r}"
    if parts.netloc.lower() != (headers.get("host") or "").strip().lower():
        return f"Origin {origin[:80]!r} is not this viewer"
    return None


def install_guards(app: FastAPI, allowed_hosts: list[str] | None,
                   public: Callable[[str], str] = lambda m: m) -> None:
    """Host-header check (DNS rebinding), same-origin writes, security headers, JSON errors without traces.

    ``public`` rewrites an error message for the client (the app passes one that takes the
    server's folders out of it).
    """
    allowed = {_host_name(h) for h in allowed_hosts} if allowed_hosts is not None else None

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if allowed is not None and _host_name(request.headers.get("host") or "") not in allowed:
            return JSONResponse({"detail": "host not allowed"}, status_code=400)
        if request.method in _WRITES:
            why = cross_site(request.headers)
            if why is not None:
                return JSONResponse({"detail": f"cross-site request refused ({why}); use the viewer's own page"},
                                    status_code=403)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        return response

    @app.exception_handler(OnnxactError)
    async def onnxact_error(request: Request, exc: OnnxactError) -> Any:
        # a RequestError carries its status (404 for an unknown id or layer); any other: bad input
        return JSONResponse({"detail": public(str(exc))}, status_code=getattr(exc, "status", 422))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        detail = public(exc.detail) if isinstance(exc.detail, str) else exc.detail
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Any:  # never a stack trace
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)
