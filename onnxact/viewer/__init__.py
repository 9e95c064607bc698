"""The browser viewer (``onnxact serve``): a FastAPI app over one model plus a static page.

Needs the ``viewer`` extra (fastapi, uvicorn, python-multipart); importing this package alone
does not import them, ``create_app`` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(model: Any, images_dir: Any = None, labels: Any = None, **kw: Any) -> Any:
    """See :func:`onnxact.viewer.app.create_app`."""
    try:
        from .app import create_app as _create
    except ImportError as e:
        from ..errors import missing_dependency

        raise missing_dependency(e.name or "fastapi", "viewer", "the viewer") from None
    return _create(model, images_dir, labels, **kw)
