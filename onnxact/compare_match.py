"""Matching A's layers to B's for ``onnxact.compare`` (see that module's docstring for the rules).

Why its own module: matching is pure bookkeeping over layer records and array shapes, the part
of a comparison with the most cases (fused reads, framework modules, QDQ names, layouts); it
runs once per comparison, before any metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .activations import LayerInfo
from .compare_report import Unmatched
from .errors import InputError
from .layout import channel_axis, guess_layout_of_array

__all__ = ["Pair", "plan"]

#: channels-first <-> channels-last pairs and the permutation from the key layout to the value's
_PERMS = {("NCHW", "NHWC"): (0, 3, 1, 2), ("NHWC", "NCHW"): (0, 2, 3, 1), ("NCW", "NWC"): (0, 2, 1),
          ("NWC", "NCW"): (0, 2, 1), ("NCDHW", "NDHWC"): (0, 4, 1, 2, 3), ("NDHWC", "NCDHW"): (0, 2, 3, 4, 1)}


@dataclass(frozen=True)
class Pair:
    """A matched layer: A's key and B's key, how they were matched, and B's transpose into A's layout."""

    name: str
    a_key: str
    b_key: str
    a_tensor: str
    b_tensor: str
    matched_by: str
    perm: tuple[int, ...] | None
    axis: int | None  # channel axis of A's array


# -- matching ---------------------------------------------------------------------------------

def _infos(acts: Mapping[str, Any]) -> dict[str, LayerInfo]:
    layers = getattr(acts, "layers", None) or {}
    out: dict[str, LayerInfo] = {}
    for k, v in acts.items():
        info = layers.get(k)
        if info is None:
            shape = tuple(np.shape(v))
            info = LayerInfo(k, "", "", guess_layout_of_array(shape), shape)
        out[k] = info
    return out


def _read_name(key: str, info: LayerInfo, raw: bool) -> str:
    """The framework layer whose output this key holds (a conv read after its ReLU: the ReLU)."""
    return key if raw or not info.fused else info.fused[-1]


def _category(info: LayerInfo) -> str:
    return "pool" if "pool" in info.op_type.lower() else "other"


def _core_shape(info: LayerInfo, arr: Any) -> tuple[int, ...]:
    """Shape without the batch axis, channels first, for position matching across layouts."""
    shape = tuple(np.shape(arr))
    perm = _PERMS.get(("NCHW" if len(shape) == 4 else "NCW" if len(shape) == 3 else "NCDHW", info.layout))
    if info.layout in ("NHWC", "NWC", "NDHWC") and perm:
        shape = tuple(shape[p] for p in perm)
    return shape[1:]


def _resolve(name: str, infos: Mapping[str, LayerInfo], side: str) -> str:
    if name in infos:
        return name
    for k, info in infos.items():
        if info.tensor and info.tensor == name:
            return k
    shown = ", ".join(list(infos)[:12]) + (" ..." if len(infos) > 12 else "")
    raise InputError(f"--map names '{name}', which is not a layer of {side} (its layers: {shown})")


def plan(a: Mapping[str, Any], b: Mapping[str, Any], map: Mapping[str, str] | None = None,
         map_how: str = "map") -> tuple[list[Pair], list[Unmatched], list[Unmatched]]:
    """Match A's layers to B's: ``(pairs in A's order, unmatched A, unmatched B)``.

    Raises ``InputError`` only before any comparison: a ``map`` naming unknown layers, or no layer
    in common at all (the message lists both sides' names and suggests ``map``).
    """
    ia, ib = _infos(a), _infos(b)
    raw_a, raw_b = bool(getattr(a, "raw_outputs", False)), bool(getattr(b, "raw_outputs", False))
    look_a, look_b = set(getattr(a, "lookup_only", ())), set(getattr(b, "lookup_only", ()))
    prim_a = [k for k in ia if k not in look_a]
    prim_b = [k for k in ib if k not in look_b]
    found: dict[str, tuple[str, str]] = {}  # a key -> (b key, how)
    used: set[str] = set()

    def take(ka: str, kb: str, how: str) -> None:
        found[ka] = (kb, how)
        used.add(kb)

    for ka, kb in (map or {}).items():
        take(_resolve(ka, ia, "A"), _resolve(kb, ib, "B"), map_how)
    # 1. with a framework side: where the ONNX side reads the layer (a conv read after its ReLU is
    # that ReLU module's output). Two ONNX sides are matched by key instead: their fused names
    # can coincide by accident (one model's 'relu1' inside another's 'block1').
    read_b: dict[str, str] = {}
    for kb, info in ib.items():
        read_b.setdefault(_read_name(kb, info, raw_b), kb)
    if raw_a and not raw_b:  # a framework A: find each of B's layers among A's modules
        for kb in prim_b:
            ka = _read_name(kb, ib[kb], raw_b)
            if kb not in used and ka in ia and ka not in found:
                take(ka, kb, "name")
    elif raw_b:
        for ka in prim_a:
            kb = read_b.get(_read_name(ka, ia[ka], raw_a))
            if ka not in found and kb is not None and kb not in used:
                take(ka, kb, "name")
    # 2. the same key (two ONNX sides, one with fused activations, one without: fp32 vs QDQ)
    if not raw_a and not raw_b:
        for ka in prim_a:
            if ka not in found and ka in ib and ka not in used:
                take(ka, ka, "name")
        # 3. the ONNX tensor name
        by_tensor = {_dequantized(info.tensor): kb for kb, info in ib.items() if info.tensor}
        by_tensor.update({info.tensor: kb for kb, info in ib.items() if info.tensor})
        for ka in prim_a:
            kb = by_tensor.get(ia[ka].tensor) if ia[ka].tensor else None
            if ka not in found and kb is not None and kb not in used:
                take(ka, kb, "tensor")
        # 4. position, when both default sets have the same sequence of kinds and shapes
        if len(prim_a) == len(prim_b) and any(k not in found for k in prim_a) and all(
                (not ia[x].op_type or not ib[y].op_type or _category(ia[x]) == _category(ib[y])) and _core_shape(ia[x], a[x]) == _core_shape(ib[y], b[y])
                for x, y in zip(prim_a, prim_b)):
            for x, y in zip(prim_a, prim_b):
                if x not in found and y not in used:
                    take(x, y, "position")
    if not found:
        raise InputError(
            f"A and B have no layer in common; A has {_names(prim_a)}; B has {_names(prim_b)}; "
            "pass map={A name: B name} (CLI: --map FILE.json)")
    pairs: list[Pair] = []
    un_a: list[Unmatched] = []
    un_b: list[Unmatched] = []
    folded_a = _folded(ia, [kb for kb, _ in found.values()], ib) if raw_a else set()
    for ka in ia:
        if ka not in found:
            if ka not in look_a and ka not in folded_a:
                un_a.append(Unmatched("a", ka, "no layer of B has this name, tensor or position"))
            continue
        kb, how = found[ka]
        la, lb = ia[ka].layout, ib[kb].layout
        perm = _PERMS.get((la, lb)) if la != lb else None
        sa, sb = tuple(np.shape(a[ka])), tuple(np.shape(b[kb]))
        sb_as_a = tuple(sb[p] for p in perm) if perm and len(perm) == len(sb) else sb
        if sa != sb_as_a and _squeezed(sa) == _squeezed(sb_as_a):  # GAP: (N, C) vs (N, 1, 1, C)
            sb_as_a = sa
        if sa != sb_as_a:
            why = f"matched by {how}, but shapes differ: A {sa} {la} vs B {sb} {lb}"
            un_a.append(Unmatched("a", ka, f"{why} (B's '{kb}')"))
            un_b.append(Unmatched("b", kb, f"{why} (A's '{ka}')"))
            continue
        shown = kb if raw_a and not raw_b else ka  # the ONNX layer's name (the conv), not its ReLU module
        pairs.append(Pair(shown, ka, kb, ia[ka].tensor or ka, ib[kb].tensor or kb, how, perm, channel_axis(la)))
    consumed = {p.b_key for p in pairs} | {u.name for u in un_b}
    if raw_b:  # a framework side: also the modules folded into a matched ONNX layer (conv + bn + relu)
        consumed |= _folded(ib, [p.a_key for p in pairs], ia)
    un_b += [Unmatched("b", kb, "no layer of A has this name, tensor or position")
             for kb in prim_b if kb not in consumed]
    return pairs, un_a, un_b


#: quantize_static names the dequantized copy of tensor T ``T_DequantizeLinear_Output``
_DQ = "_DequantizeLinear_Output"


def _dequantized(tensor: str) -> str:
    return tensor[: -len(_DQ)] if tensor.endswith(_DQ) else tensor


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _folded(raw: Mapping[str, LayerInfo], matched: Sequence[str], onnx: Mapping[str, LayerInfo]) -> set[str]:
    """A framework side's modules folded into matched ONNX layers: the layer, its fused ones, and
    the modules inside a matched container (``stem.0`` inside ``stem``, a Conv-BN-ReLU Sequential)."""
    names = {f for k in matched for f in (k, *onnx[k].fused)}
    return {k for k in raw if k in names or any(k.startswith(n + ".") for n in matched)}


def _names(keys: Sequence[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "") if keys else "no layers"
