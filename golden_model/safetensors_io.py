"""Reading and writing ``.safetensors`` files with numpy alone.

The format (https://github.com/huggingface/safetensors) is an 8-byte little-endian header
length, a JSON header mapping each tensor name to ``dtype``, ``shape`` and ``data_offsets``
(relative to the end of the header), then the raw little-endian tensor bytes. Reading it
with numpy keeps the golden model free of torch; ``BF16`` tensors are widened to float32
by shifting their bits into the high half of a 32-bit word (exact).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from sparktile.errors import one_line

from .errors import CheckpointError, CheckpointNotFound

__all__ = ["read_safetensors", "write_safetensors", "read_sharded", "MAX_HEADER_BYTES"]

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_BY_KIND = {(v.kind, v.itemsize): k for k, v in _DTYPES.items()}


#: Largest header accepted (the safetensors reference implementation's own limit): a corrupt
#: length is refused before anything is read or allocated for it.
MAX_HEADER_BYTES = 100_000_000


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Read every tensor of a ``.safetensors`` file into numpy arrays.

    The file is untrusted: the header length, every header field and every byte range are
    checked against the file before anything is allocated, so a corrupt file gives a
    :class:`~sparktile.golden_model.errors.CheckpointError` rather than a crash or a huge
    allocation.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    dict of str to numpy.ndarray
        Tensors by name, in the file's dtype except ``BF16``, which becomes float32.

    Raises
    ------
    CheckpointNotFound
        If the file does not exist.
    CheckpointError
        If the file is truncated, its header is not valid JSON, a dtype is unknown, a shape
        or offset is malformed, two tensors overlap, or a tensor's byte range disagrees
        with its shape; the message names the file and tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"{path}: safetensors file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, header "
                                  "missing)")
        (hlen,) = struct.unpack("<Q", head)
        if 8 + hlen > size:
            raise CheckpointError(f"{path}: header claims {hlen} bytes but the file has "
                                  f"{size}; truncated?")
        if hlen > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: header claims {hlen} bytes, more than the "
                                  f"{MAX_HEADER_BYTES} safetensors allows; corrupt file?")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{path}: safetensors header is not valid JSON "
                                  f"({type(e).__name__}: {one_line(e, 200)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header must be a JSON object, not a "
                              f"{type(header).__name__}")
    n_data = size - 8 - hlen
    spans = sorted((_check_entry(path, name, meta, n_data), name)
                   for name, meta in header.items() if name != "__metadata__")
    for ((_, hi_a, _, _), a), ((lo_b, _, _, _), b) in itertools.pairwise(spans):
        if lo_b < hi_a:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap (bytes up to "
                                  f"{hi_a} and from {lo_b} of the data section)")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + hlen) if n_data > 0 \
        else np.zeros(0, np.uint8)
    out = {}
    for (lo, hi, dt, shape), name in spans:
        raw = data[lo:hi].tobytes()
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(shape)
        else:
            out[name] = np.frombuffer(raw, dtype=_DTYPES[dt]).reshape(shape)
    del data
    return dict(sorted(out.items()))


def _check_entry(path, name: str, meta, n_data: int):
    """``(lo, hi, dtype, shape)`` of one header entry, every field checked."""
    def bad(what):
        return CheckpointError(f"{path}: tensor {name!r}: {what}")

    if not isinstance(meta, dict):
        raise bad(f"header entry must be an object, not {meta!r:.100}")
    dt, shape, offs = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if dt != "BF16" and (not isinstance(dt, str) or dt not in _DTYPES):
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {dt!r:.100}; supported are "
                              f"BF16, {', '.join(_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise bad(f"shape must be a list of at most 8 non-negative integers, not "
                  f"{shape!r:.100}")
    if not isinstance(offs, list) or len(offs) != 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in offs):
        raise bad(f"data_offsets must be a list of two integers, not {offs!r:.100}")
    lo, hi = offs
    if not 0 <= lo <= hi:
        raise bad(f"data_offsets {offs} must satisfy 0 <= start <= end")
    if hi > n_data:
        raise CheckpointError(f"{path}: tensor {name!r} ends at byte {hi} of the data section "
                              f"but the section has only {n_data}; truncated file?")
    itemsize = 2 if dt == "BF16" else _DTYPES[dt].itemsize
    want = itemsize * math.prod(shape)
    if hi - lo != want:
        raise CheckpointError(f"{path}: tensor {name!r} has {hi - lo} bytes, shape "
                              f"{tuple(shape)} of {dt} needs {want}")
    return lo, hi, dt, tuple(shape)


def read_sharded(folder) -> dict[str, np.ndarray]:
    """Read ``model.safetensors`` or every shard listed in ``model.safetensors.index.json``.

    Shard names come from the index, a file of the checkpoint: each must name a file inside
    ``folder`` (no ``..``, no absolute path), so that a checkpoint cannot make the loader read
    elsewhere.

    Raises
    ------
    CheckpointNotFound
        If the folder holds neither file, or a shard is missing.
    CheckpointError
        If the index is malformed, a shard lies outside the folder, or a shard lacks a
        tensor the index assigns to it.
    """
    from .paths import inside

    folder = Path(folder)
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.exists():
        return read_safetensors(single)
    if not index.exists():
        raise CheckpointNotFound(f"{folder}: neither model.safetensors nor "
                                 "model.safetensors.index.json found")
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{index}: not valid JSON ({one_line(e, 200)})") from None
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: must be an object whose 'weight_map' maps tensor "
                              "names to shard file names")
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        tensors = read_safetensors(inside(folder, shard, f"{index}: shard"))
        out.update(tensors)
    missing = sorted(n for n in weight_map if n not in out)
    if missing:
        raise CheckpointError(f"{index}: tensor {missing[0]!r} listed in the index is missing "
                              f"from shard {weight_map[missing[0]]!r}")
    return out


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata=None) -> None:
    """Write numpy arrays as a ``.safetensors`` file (tensors sorted by name).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file, overwritten.
    tensors : dict of str to numpy.ndarray
        Arrays of a dtype in ``F64, F32, F16, I64, I32, I16, I8, U8, BOOL``.
    metadata : dict of str to str, optional
        Stored as the header's ``__metadata__``.
    """
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        key = _BY_KIND.get((a.dtype.kind, a.dtype.itemsize))
        if key is None:
            raise ValueError(f"write_safetensors: tensor {name!r} has unsupported dtype "
                             f"{a.dtype}")
        b = a.astype(_DTYPES[key], copy=False).tobytes()
        header[name] = {"dtype": key, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
