"""GGUF files of Llama-architecture models, read with llama.cpp's own ``gguf`` package.

Tensors of type F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are dequantized to float32 with
``gguf.quants.dequantize``; any other type is refused by name. llama.cpp's converter
permutes the rows of ``attn_q`` / ``attn_k`` so that its interleaved rotary kernel works;
:func:`unpermute_qk` undoes that to get back the rotate-half layout used here (and by
Hugging Face). The vocabulary, merges and special tokens come from the file
(``tokenizer.ggml.*``); only byte-level BPE vocabularies (``tokenizer.ggml.model = gpt2``)
are supported.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from sparktile.errors import one_line

from .chat import for_tokenizer
from .checkpoint import validate_weights
from .config import ModelConfig, check_bool, check_float, check_int
from .errors import CheckpointError, CheckpointNotFound
from .tokenizer import gguf_bpe_tokenizer

__all__ = ["SUPPORTED_TYPES", "load_gguf", "unpermute_qk", "permute_qk"]

#: GGML tensor types this loader dequantizes.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
_ARCHS = ("llama",)

_GGUF_LAYER = {
    "attn_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "mlp_norm.weight",
    "attn_q.weight": "attn.q.weight",
    "attn_k.weight": "attn.k.weight",
    "attn_v.weight": "attn.v.weight",
    "attn_output.weight": "attn.o.weight",
    "attn_q.bias": "attn.q.bias",
    "attn_k.bias": "attn.k.bias",
    "attn_v.bias": "attn.v.bias",
    "ffn_gate.weight": "mlp.gate.weight",
    "ffn_up.weight": "mlp.up.weight",
    "ffn_down.weight": "mlp.down.weight",
}
_GGUF_TOP = {"token_embd.weight": "embed.weight", "output_norm.weight": "norm.weight",
             "output.weight": "head.weight"}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp converter's row permutation (rotate-half -> interleaved pairs)."""
    r = w.shape[0]
    return (w.reshape(n_head, 2, r // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (interleaved pairs -> rotate-half)."""
    r = w.shape[0]
    return (w.reshape(n_head, r // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _open(path: Path):
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as e:  # gguf raises ValueError, struct/numpy errors on broken files
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: "
                              f"{one_line(e, 200)}); truncated or corrupt?") from None


def _min_item_bytes() -> dict[int, int]:
    """The fewest bytes one element of a metadata array of each GGUF value type takes: the
    scalar types' sizes from gguf's own table, a string's length field, an array's element
    type and count."""
    from gguf import GGUFReader, GGUFValueType
    sizes = {int(k): np.dtype(v).itemsize for k, v in GGUFReader.gguf_scalar_to_np.items()}
    sizes[int(GGUFValueType.STRING)] = 8
    sizes[int(GGUFValueType.ARRAY)] = 12
    return sizes


def _check_extent(path: Path):
    """Before ``GGUFReader`` maps the tensors: every tensor's bytes must lie in the file.

    ``GGUFReader`` itself reports a truncated file without the tensor's name; this walks the
    header with ``gguf``'s own field parser to name it.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType

    size = os.path.getsize(path)
    min_item_bytes = _min_item_bytes()

    class _Probe(GGUFReader):
        def _get_field_parts(self, orig_offs, raw_type):
            # An array's element count comes from the file: GGUFReader loops over it, and
            # past the end of the file each element reads as zero bytes, so a count of 2**40
            # loops (and allocates) for ever. Found by the long fuzz run.
            if raw_type == GGUFValueType.ARRAY:
                itype, count = self._get(orig_offs, np.uint32), self._get(orig_offs + 4,
                                                                          np.uint64)
                if len(itype) and len(count):   # else GGUFReader reports the truncation
                    itype, count = int(itype[0]), int(count[0])
                    per = min_item_bytes.get(itype)
                    left = size - (orig_offs + 12)
                    if per is None:
                        raise CheckpointError(f"{path}: metadata array at byte {orig_offs} has "
                                              f"unknown element type {itype}")
                    if count * per > left:
                        raise CheckpointError(
                            f"{path}: metadata array at byte {orig_offs} claims {count} "
                            f"elements ({per} bytes or more each) but {max(left, 0)} bytes "
                            f"are left in the file; corrupt file")
            return super()._get_field_parts(orig_offs, raw_type)

        def _build_tensors(self, start_offs, fields):
            for field in fields:
                _nl, name_data, _nd, dims, raw_dtype, offset = field.parts
                name = bytes(name_data).decode("utf-8", errors="replace")
                try:
                    qt = GGMLQuantizationType(int(raw_dtype[0]))
                except ValueError:
                    raise CheckpointError(f"{path}: tensor {name!r} has unknown GGML type "
                                          f"{int(raw_dtype[0])}") from None
                block, tsize = GGML_QUANT_SIZES[qt]
                # Python ints: a corrupt dimension must not wrap around to a small size.
                n = math.prod(int(x) for x in dims)
                end = int(start_offs) + int(offset[0]) + n * tsize // block
                if end > size:
                    raise CheckpointError(f"{path}: tensor {name!r} ({qt.name}, shape "
                                     f"{tuple(int(d) for d in reversed(dims))}) ends at byte "
                                     f"{end} but the file has {size} bytes; truncated file")
            self.tensors = []

    try:
        _Probe(path)
    except CheckpointError:
        raise
    except Exception as e:  # gguf raises ValueError, struct/numpy errors on broken files
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: "
                              f"{one_line(e, 200)}); truncated or corrupt?") from None


def _field(reader, key, path, default=None, required=True):
    f = reader.fields.get(key)
    if f is None:
        if required and default is None:
            raise CheckpointError(f"{path}: metadata key {key!r} missing")
        return default
    try:
        return f.contents()
    except Exception as e:  # a corrupt value type or length inside the gguf package
        raise CheckpointError(f"{path}: metadata key {key!r} is unreadable "
                              f"({type(e).__name__}: {one_line(e, 200)})") from None


def _str(v, key, path) -> str:
    if not isinstance(v, str):
        raise CheckpointError(f"{path}: metadata {key} must be a string, not {v!r:.100}")
    return v


def _strings(v, key, path) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise CheckpointError(f"{path}: metadata {key} must be an array of strings, not "
                              f"{v!r:.100}")
    return v


def _dequantize(t, path) -> np.ndarray:
    from gguf import quants

    name = t.tensor_type.name
    if name not in SUPPORTED_TYPES:
        raise CheckpointError(f"{path}: tensor {t.name!r} has type {name}; supported types "
                              f"are {', '.join(SUPPORTED_TYPES)}")
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    if name in ("F32", "F16"):
        a = np.asarray(t.data, dtype=np.float32)
    else:
        a = quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
    return a.reshape(shape)


def load_gguf(path) -> tuple[ModelConfig, dict, object]:
    """Load a Llama-architecture GGUF file: ``(config, weights, tokenizer)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For a truncated or corrupt file, an architecture other than ``llama``, a tensor of
        an unsupported type, a missing tensor or one whose shape disagrees with the
        metadata, or a non-BPE vocabulary; the message names the file and the tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"GGUF file {path} not found")
    _check_extent(path)
    r = _open(path)
    arch = _field(r, "general.architecture", path)
    if arch not in _ARCHS:
        raise CheckpointError(f"{path}: architecture {arch!r:.100} is not supported; "
                              f"supported are {', '.join(_ARCHS)}")
    a = arch

    def num(key, default=None, lo=1):
        return check_int(_field(r, f"{a}.{key}", path, default=default), f"{a}.{key}", path,
                         lo=lo)

    def real(key, default=None, hi=math.inf):
        return check_float(_field(r, f"{a}.{key}", path, default=default), f"{a}.{key}", path,
                           hi=hi)

    def opt_id(key):
        v = _field(r, key, path, required=False)
        return None if v is None else check_int(v, key, path, lo=0)

    tokens = _strings(_field(r, "tokenizer.ggml.tokens", path), "tokenizer.ggml.tokens", path)
    d = num("embedding_length")
    heads = num("attention.head_count")
    kv = num("attention.head_count_kv", default=heads)
    if f"{a}.attention.key_length" not in r.fields and d % heads:
        raise CheckpointError(f"{path}: {a}.embedding_length ({d}) must be divisible by "
                              f"{a}.attention.head_count ({heads}) when "
                              f"{a}.attention.key_length is not given")
    hd = num("attention.key_length", default=d // heads)
    rope_dim = num("rope.dimension_count", default=hd)
    if rope_dim != hd:
        raise CheckpointError(f"{path}: partial rotary embeddings (rope.dimension_count "
                              f"{rope_dim} != head dim {hd}) are not supported")
    scaling = None
    st = _field(r, f"{a}.rope.scaling.type", path, required=False)
    if st is not None:
        st = _str(st, f"{a}.rope.scaling.type", path)
    if st not in (None, "none"):
        scaling = {"rope_type": st, "factor": real("rope.scaling.factor", default=1.0)}
    eos, bos = opt_id("tokenizer.ggml.eos_token_id"), opt_id("tokenizer.ggml.bos_token_id")
    tensors = {t.name: t for t in r.tensors}
    vocab = num("vocab_size", default=len(tokens) or None)
    if len(tokens) > vocab:
        raise CheckpointError(f"{path}: tokenizer.ggml.tokens has {len(tokens)} tokens but "
                              f"{a}.vocab_size is {vocab}")
    config = ModelConfig.checked(
        str(path), vocab_size=vocab, hidden_size=d, num_layers=num("block_count"),
        num_heads=heads, num_kv_heads=kv, head_dim=hd,
        intermediate_size=num("feed_forward_length"),
        rope_theta=real("rope.freq_base", default=10000.0),
        rms_norm_eps=real("attention.layer_norm_rms_epsilon", hi=1.0),
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias="blk.0.attn_q.bias" in tensors,
        max_position_embeddings=num("context_length", default=2048),
        bos_token_id=bos, eos_token_ids=() if eos is None else (eos,), rope_scaling=scaling,
        name=_str(_field(r, "general.name", path, default=path.stem), "general.name", path))

    # Tensors: refuse unknown types before the (slow) dequantization of the others.
    for t in r.tensors:
        if t.tensor_type.name not in SUPPORTED_TYPES:
            raise CheckpointError(f"{path}: tensor {t.name!r} has type "
                                  f"{t.tensor_type.name}; supported types are "
                                  f"{', '.join(SUPPORTED_TYPES)}")
    weights = {}
    for name, t in tensors.items():
        if name in _GGUF_TOP:
            key = _GGUF_TOP[name]
        elif name.startswith("blk."):
            parts = name.split(".", 2)
            # A name that is not blk.<layer>.<kind> is not a tensor this loader uses (found by
            # the long fuzz run: "blk.0\0\0...weight" raised ValueError from the unpacking).
            if len(parts) < 3 or not parts[1].isdigit() or parts[2] not in _GGUF_LAYER:
                continue
            _, i, rest = parts
            key = f"layers.{i}.{_GGUF_LAYER[rest]}"
        else:
            continue
        weights[key] = (name, t)
    # Shapes are checked against the metadata before dequantizing.
    shapes = config.expected_shapes()
    for key, shape in shapes.items():
        if key not in weights:
            gname = {v: k for k, v in _GGUF_TOP.items()}.get(key) or _gguf_name(key)
            raise CheckpointError(f"{path}: tensor {gname!r} is missing (needed with shape "
                                  f"{shape})")
        gname, t = weights[key]
        got = tuple(int(x) for x in reversed(t.shape.tolist()))
        if got != shape:
            raise CheckpointError(f"{path}: tensor {gname!r} has shape {got} but the "
                                  f"metadata says {shape}")
    out = {}
    for key in shapes:
        gname, t = weights[key]
        w = _dequantize(t, path)
        if key.endswith(("attn.q.weight", "attn.q.bias")):
            w = unpermute_qk(w, heads)
        elif key.endswith(("attn.k.weight", "attn.k.bias")):
            w = unpermute_qk(w, kv)
        out[key] = w
    weights = validate_weights(config, out, str(path))

    model = _field(r, "tokenizer.ggml.model", path)
    if model != "gpt2":
        raise CheckpointError(f"{path}: tokenizer model {model!r:.100} is not supported; only "
                              "byte-level BPE ('gpt2') vocabularies are")
    types = _field(r, "tokenizer.ggml.token_type", path, required=False)
    if types is not None and (not isinstance(types, list) or len(types) != len(tokens)
                              or not all(isinstance(x, int) for x in types)):
        raise CheckpointError(f"{path}: tokenizer.ggml.token_type must be an array of "
                              f"{len(tokens)} integers (one per token), not {types!r:.100}")
    tok = gguf_bpe_tokenizer(
        tokens, _strings(_field(r, "tokenizer.ggml.merges", path), "tokenizer.ggml.merges",
                         path),
        token_types=types,
        pre=_str(_field(r, "tokenizer.ggml.pre", path, default="gpt2"), "tokenizer.ggml.pre",
                 path),
        bos_id=config.bos_token_id, eos_ids=config.eos_token_ids,
        add_bos=check_bool(_field(r, "tokenizer.ggml.add_bos_token", path, default=False,
                                  required=False), "tokenizer.ggml.add_bos_token", path),
        source=str(path))
    template = _field(r, "tokenizer.chat_template", path, required=False)
    if template is not None:
        tok.chat_template = for_tokenizer(tok, _str(template, "tokenizer.chat_template", path),
                                          f"{path}: tokenizer.chat_template")
    return config, weights, tok


def _gguf_name(key: str) -> str:
    _, i, rest = key.split(".", 2)
    inv = {v: k for k, v in _GGUF_LAYER.items()}
    return f"blk.{i}.{inv.get(rest, rest)}"
