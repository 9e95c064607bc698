"""The JSON API's schema: pydantic response models and the accepted query values.

Its own stage because it is the API contract (it is what /openapi.json and the schemathesis
tests are built from); the routes only fill these models in.
"""

from typing import Any, Literal

from pydantic import BaseModel

Colormap = Literal["viridis", "magma", "gray", "jet", "inferno", "plasma", "cividis", "hot", "coolwarm"]
Normalize = Literal["tile", "layer"]


class InputModel(BaseModel):
    name: str
    shape: list[Any]
    dtype: str
    layout: str

class LayerModel(BaseModel):
    index: int
    name: str
    tensor: str
    op_type: str
    activation: str | None
    layout: str
    shape: list[Any] | None
    captured_shape: list[int] | None = None  # the shape captured for an image (unknown dims filled in)
    kind: str | None = None  # "maps" (a tile grid), "channels" (1x1 maps: bars), "sequence", "vector"
    channels: int | None
    spatial: bool
    dead_filters: int | None
    dead_over_images: int

class ModelSummary(BaseModel):
    name: str
    sha256: str
    framework: str | None
    inputs: list[InputModel]
    outputs: list[str]
    class_names: list[str] | None
    layers: list[LayerModel]
    cam_method: str
    dead_eps: float = 0.0  # a filter is dead when max |a| <= dead_eps over the images (as in `check`)

class ImageModel(BaseModel):
    id: str
    name: str
    source: str

class Prediction(BaseModel):
    index: int
    label: str
    score: float

class OutputPredictions(BaseModel):
    output: str
    probabilities: bool
    top: list[Prediction]

class Predictions(BaseModel):
    image: str
    output: str | None
    probabilities: bool
    top: list[Prediction]
    note: str | None = None  # why there is no top list (e.g. the first output is not a numeric tensor)
    others: list[OutputPredictions] = []  # further classifier outputs, each by name

class LayerStats(BaseModel):
    image: str
    layer: int
    name: str
    shape: list[int]
    min: float
    max: float
    mean: float
    std: float
    zero_fraction: float
    channels: int
    dead_on_image: int
    dead_channels: list[int] = []  # channels with max |a| <= eps on this image
    channel_max: list[float]
    channel_mean: list[float]

class Error(BaseModel):
    detail: Any

