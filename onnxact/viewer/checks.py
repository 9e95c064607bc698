"""The viewer's request checks that need no web framework: limits, ids, upload validation, refusals.

Why apart from :mod:`.security`: the notebook widget (:mod:`.widget`) shares the viewer's state
and payloads without FastAPI, so what they raise is an :class:`onnxact.errors.RequestError`
(carrying the HTTP status the app answers with), never FastAPI's ``HTTPException``.
"""

import io

from ..errors import OnnxactError, RequestError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_ALLOWED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_ID_PATTERN = r"^[gu][0-9a-f]{16}$"


def _http(status: int, detail: str) -> RequestError:
    """The refusal of a request: the app answers ``status`` with ``detail``; the widget shows ``detail``."""
    return RequestError(status, detail)


def check_upload(data: bytes, max_upload: int) -> str:
    """The Pillow format name of an upload, after refusing empty, oversized, non-image and bomb files.

    Identifying the format is not enough (a header can lie), so the whole image is decoded once
    with the pixel-count limit of :func:`onnxact.preprocess.load_image` before it is kept.
    """
    from PIL import Image

    from ..limits import decode_slot
    from ..preprocess import load_image

    if not data:
        raise _http(422, "the uploaded file is empty")
    if len(data) > max_upload:
        limit = f"{max_upload // 2**20} MB" if max_upload >= 2**20 else f"{max_upload:,}-byte"
        raise _http(413, f"the upload is over the {limit} limit")
    try:
        fmt = Image.open(io.BytesIO(data)).format
    except Image.DecompressionBombError:
        raise _http(422, "the uploaded image has too many pixels to decode safely; resize it first") from None
    except Exception:  # noqa: BLE001 - any failure to identify means "not an image"
        fmt = None
    if fmt not in _ALLOWED_FORMATS:
        raise _http(415, "the upload is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)")
    try:
        with decode_slot():
            load_image(data)  # full decode, within the decoded-bytes bound (refused from the header)
    except OnnxactError as e:
        raise _http(422, str(e)) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for hostile files
        raise _http(422, "the upload could not be decoded as an image") from None
    return fmt


