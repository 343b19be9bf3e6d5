"""Reading and writing ``.safetensors`` files with numpy alone.

The format (https://github.com/huggingface/safetensors) is an 8-byte little-endian header
length, a JSON header mapping each tensor name to ``dtype``, ``shape`` and ``data_offsets``
(relative to the end of the header), then the raw little-endian tensor bytes. Reading it
with numpy keeps the golden model free of torch; ``BF16`` tensors are widened to float32
by shifting their bits into the high half of a 32-bit word (exact).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["read_safetensors", "write_safetensors", "read_sharded"]

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


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Read every tensor of a ``.safetensors`` file into numpy arrays.

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
    ValueError
        If the file is truncated, its header is not valid JSON, a dtype is unknown, or a
        tensor's byte range disagrees with its shape; the message names the file and tensor.
    """
    path = Path(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file ({size} bytes, header missing)")
        (hlen,) = struct.unpack("<Q", head)
        if 8 + hlen > size:
            raise ValueError(f"{path}: header claims {hlen} bytes but the file has {size}; "
                             "truncated?")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: safetensors header is not valid JSON ({e})") from None
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + hlen) if size > 8 + hlen \
        else np.zeros(0, np.uint8)
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (lo, hi) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        if hi > data.size:
            raise ValueError(f"{path}: tensor {name!r} ends at byte {hi} of the data section "
                             f"but the section has only {data.size}; truncated file?")
        raw = data[lo:hi]
        if dt == "BF16":
            want = 2 * int(np.prod(shape, dtype=np.int64))
            if raw.size != want:
                raise ValueError(f"{path}: tensor {name!r} has {raw.size} bytes, "
                                 f"shape {shape} of BF16 needs {want}")
            bits = np.frombuffer(raw.tobytes(), dtype="<u2").astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(shape)
            continue
        if dt not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {dt!r}; supported are "
                             f"BF16, {', '.join(_DTYPES)}")
        npdt = _DTYPES[dt]
        want = npdt.itemsize * int(np.prod(shape, dtype=np.int64))
        if raw.size != want:
            raise ValueError(f"{path}: tensor {name!r} has {raw.size} bytes, "
                             f"shape {shape} of {dt} needs {want}")
        out[name] = np.frombuffer(raw.tobytes(), dtype=npdt).reshape(shape)
    return out


def read_sharded(folder) -> dict[str, np.ndarray]:
    """Read ``model.safetensors`` or every shard listed in ``model.safetensors.index.json``.

    Raises
    ------
    FileNotFoundError
        If the folder holds neither file.
    ValueError
        If a shard named in the index lacks a tensor the index assigns to it.
    """
    folder = Path(folder)
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.exists():
        return read_safetensors(single)
    if not index.exists():
        raise FileNotFoundError(f"{folder}: neither model.safetensors nor "
                                "model.safetensors.index.json found")
    weight_map = json.loads(index.read_text())["weight_map"]
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        tensors = read_safetensors(folder / shard)
        out.update(tensors)
    missing = sorted(n for n in weight_map if n not in out)
    if missing:
        raise ValueError(f"{index}: tensor {missing[0]!r} listed in the index is missing from "
                         f"shard {weight_map[missing[0]]!r}")
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
