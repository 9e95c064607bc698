"""``onnxact.compare_sums``: the chunked one-pass sums against float64 numpy, on real captures.

Every branch of the kernel is run on maps captured by onnxruntime from the Conv-BN-ReLU net at
272x272 (73,984 values per map row: longer than one chunk) and after its pool (18,496: several
rows per chunk, a partial last block), channels first, channels last and flat; B's
requantization chunk by chunk against requantizing the whole map first; nearly equal models
(one conv's weights x (1 + 1e-6)) keep their SQNR, equal ones read inf; and no thread is left
once a comparison returns.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxact
from bench.models import tenblock_onnx
from onnxact.compare import _Session, compare, compare_activations
from onnxact.compare_qdq import Requant
from onnxact.compare_sums import _CHUNK, channel_sums

SIZE = 272
WIDTHS = (4, 6, 8)


def _scaled(proto: onnx.ModelProto, block: int, factor: float) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for t in m.graph.initializer:
        if t.name == f"w{block}":
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) * np.float32(factor)), t.name))
    return m


@pytest.fixture(scope="module")
def pair():
    """(base net, copy with conv 0 x (1 + 1e-6), input batch of 2)."""
    base = tenblock_onnx(size=SIZE, widths=WIDTHS, pool_after=(1,))
    x = np.random.default_rng(7).random((2, 3, SIZE, SIZE), dtype=np.float32)
    return base, _scaled(base, 0, 1 + 1e-6), x


def _reference(a: np.ndarray, b: np.ndarray, axis: int | None):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = a64 - b64
    other = tuple(i for i in range(a.ndim) if i != axis) if axis is not None else None
    ch_a = (a64 ** 2).sum(axis=other) if other is not None else np.array([(a64 ** 2).sum()])
    ch_d = (d ** 2).sum(axis=other) if other is not None else np.array([(d ** 2).sum()])
    return ch_a, ch_d, float((b64 ** 2).sum()), float(np.abs(d).max())


def _check(got, ref, rel=1e-6):
    for g, r in zip(got[:2], ref[:2]):
        np.testing.assert_allclose(g, r, rtol=rel)
    assert got[2] == pytest.approx(ref[2], rel=rel)
    assert got[3] == pytest.approx(ref[3], rel=1e-6)


def test_chunked_sums_equal_float64_numpy_on_every_path(pair):
    base, _, x = pair
    a = onnxact.get_activations(base, x)
    shapes = {k: v.shape for k, v in a.items()}
    long_rows = [k for k, s in shapes.items() if s[2] * s[3] > _CHUNK]
    short_rows = [k for k, s in shapes.items() if 1 < s[2] * s[3] <= _CHUNK]
    partial = [k for k in short_rows if (shapes[k][0] * shapes[k][1]) % (_CHUNK // (shapes[k][2] * shapes[k][3]))]
    assert long_rows and partial, shapes  # both row paths, the short one with a partial last block
    rng = np.random.default_rng(1)
    for k in long_rows + short_rows:
        va = a[k]
        vb = (va * (1 + 1e-3 * rng.standard_normal(va.shape, dtype=np.float32))).astype(np.float32)
        _check(channel_sums(va, vb, 1), _reference(va, vb, 1))  # channels first
        last_a, last_b = va.transpose(0, 2, 3, 1), vb.transpose(0, 2, 3, 1)
        _check(channel_sums(last_a, last_b, 3), _reference(last_a, last_b, 3))  # channels last
        _check(channel_sums(va, vb, None), _reference(va, vb, None))  # one flat row
        flat_a, flat_b = va.reshape(len(va), -1), vb.reshape(len(vb), -1)
        _check(channel_sums(flat_a, flat_b, 1), _reference(flat_a, flat_b, 1))  # (N, features), last axis
        # B requantized chunk by chunk (a QDQ side read before its Q) == requantized whole, bit for bit
        r = Requant("t", float(np.abs(vb).max()) / 127, -128.0, 127.0)
        whole = channel_sums(va, r.apply(vb), 1)
        chunked = channel_sums(va, vb, 1, post=r.apply)
        for g, w in zip(chunked, whole):
            np.testing.assert_array_equal(g, w)
        assert not np.array_equal(r.apply(vb), vb)  # the requantization changed B
    empty = np.zeros((0, 4, 3, 3), np.float32)
    ca, cd, sb2, mx = channel_sums(empty, empty, 1)
    assert ca.shape == cd.shape == (4,) and sb2 == mx == 0.0


def test_nearly_equal_models_keep_their_sqnr_and_equal_ones_read_inf(pair):
    base, tiny, x = pair
    r = compare(base, tiny, x, batch_size=2)
    a, b = onnxact.get_activations(base, x), onnxact.get_activations(tiny, x)
    assert [la.name for la in r.layers] == list(a)
    for la in r.layers:
        a64, b64 = a[la.name].astype(np.float64), b[la.name].astype(np.float64)
        sd, sa = ((a64 - b64) ** 2).sum(), (a64 ** 2).sum()
        assert sd > 0, la.name
        sqnr = 10 * math.log10(sa / sd)
        assert 100 < la.sqnr_db < 160 and la.sqnr_db == pytest.approx(sqnr, abs=1e-3), (la.name, la.sqnr_db, sqnr)
        assert la.rel_l2 == pytest.approx(math.sqrt(sd / sa), rel=1e-4)
        assert la.max_abs == pytest.approx(float(np.abs(a64 - b64).max()), rel=1e-6)
        assert la.cosine == pytest.approx(1.0, abs=1e-6)
    same = compare(base, base, x, batch_size=2)
    assert all(la.sqnr_db == math.inf and la.rel_l2 == 0 and la.max_abs == 0 and la.cosine == 1.0
               for la in same.layers), same.table()


def test_no_summing_thread_outlives_a_comparison(pair):
    base, tiny, x = pair

    def ours() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("onnxact-compare")]

    a, b = onnxact.get_activations(base, x[:1]), onnxact.get_activations(tiny, x[:1])
    with _Session(None, None, None, False) as s:
        s.pool.workers = 2  # the pool even on a one-CPU runner
        s.add(a, b)
        assert ours(), "the layers were not summed in the pool"
    assert not ours()
    with pytest.raises(RuntimeError), _Session(None, None, None, False) as s:  # a comparison that fails midway
        s.pool.workers = 2
        s.add(a, b)
        raise RuntimeError("stopped")
    assert not ours()
    compare(base, tiny, x, batch_size=2)
    compare_activations(a, b)
    assert not ours()
