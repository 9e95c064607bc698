"""The browser viewer (``onnxact serve``): a FastAPI app over one model plus a static page,
and the same views as a notebook widget (``onnxact.widget``).

The app needs the ``viewer`` extra (fastapi, uvicorn, python-multipart), the widget the
``notebook`` extra (anywidget); importing this package alone imports neither.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "widget"]


def create_app(model: Any, images_dir: Any = None, labels: Any = None, **kw: Any) -> Any:
    """See :func:`onnxact.viewer.app.create_app`."""
    try:
        from .app import create_app as _create
    except ImportError as e:
        from ..errors import missing_dependency

        raise missing_dependency(e.name or "fastapi", "viewer", "the viewer") from None
    return _create(model, images_dir, labels, **kw)


def widget(model: Any, images: Any, **kw: Any) -> Any:
    """An interactive layer / filter browser in a Jupyter notebook, served by the kernel (no server).

    ``model``: a path, bytes, proto or :class:`onnxact.Model`; ``images``: a folder of images (the
    first 2000 are listed), one image file or a list of them. Views: the layer's filters (click one for its map), a filter's
    or the layer's mean map over the image (``heatmap``), the class activation map (``cam``), the
    whole layer as the report draws it (``picture``), and the layer's statistics and the top
    predictions beside them. Keywords: ``labels``, ``preprocess``, ``cam_layer``, ``class_output``
    (as :func:`create_app`), ``scan_dead=True`` to count dead filters over the whole folder first.
    Returns an :class:`onnxact.viewer.widget.ActivationBrowser` (display it: the cell's last line).
    """
    try:
        from .widget import widget as _widget
    except ImportError as e:
        from ..errors import missing_dependency

        if e.name not in ("anywidget", "ipywidgets", "traitlets", "IPython", "comm"):
            raise
        raise missing_dependency(e.name or "anywidget", "notebook", "onnxact.widget") from None
    return _widget(model, images, **kw)
