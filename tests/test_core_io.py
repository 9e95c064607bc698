"""Save / load of activations: npz + versioned manifest, round trip."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import onnxact
from onnxact.errors import InputError
from tests import tiny


def test_round_trip(tmp_path):
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    proto = tiny.conv_net(batch="N")
    m2 = onnxact.load(proto)
    # the manifest records the sha256 of the model's serialized bytes: one exact value
    assert m2.sha256 == hashlib.sha256(proto.SerializeToString()).hexdigest()
    acts = onnxact.get_activations(m2, x)
    acts.save(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["model_sha256"] == m2.sha256
    back = onnxact.load_activations(tmp_path / "out")
    assert list(back) == list(acts)
    for k in acts:
        np.testing.assert_array_equal(back[k], acts[k])
        assert back.layers[k] == acts.layers[k]
    assert back.model_sha256 == m2.sha256


def test_plain_dict_and_newer_version(tmp_path):
    onnxact.save_activations({"a/b:0": np.ones((1, 2, 3, 3))}, tmp_path)
    assert list(onnxact.load_activations(tmp_path)) == ["a/b:0"]
    mf = tmp_path / "manifest.json"
    data = json.loads(mf.read_text())
    data["format_version"] = 99
    mf.write_text(json.dumps(data))
    with pytest.raises(InputError, match="upgrade onnxact"):
        onnxact.load_activations(tmp_path)
    with pytest.raises(InputError, match="no manifest"):
        onnxact.load_activations(tmp_path / "nothing")


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(onnxact.OutputError):
        onnxact.save_activations({"a": np.ones(3)}, blocker / "sub")
