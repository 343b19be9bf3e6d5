"""GGUF loading on small files written here with gguf.GGUFWriter (llama.cpp's own package).

The files are laid out as llama.cpp's converter writes them: ``blk.N.*`` names, ``attn_q`` /
``attn_k`` rows permuted for the interleaved rotary kernel (the converter's ``permute`` is
copied below verbatim, not imported from the golden model), byte-level BPE vocabulary.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter, quants
from sparktile.golden_model import load_model
from sparktile.golden_model.testing import random_weights, tiny_config

CFG = tiny_config(vocab_size=288, bos_token_id=1, eos_token_ids=(2,))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"]


def converter_permute(weights, n_head, n_head_kv):
    """llama.cpp convert_hf_to_gguf.py, LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def bytes_to_unicode():
    """GPT-2's byte -> printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def vocab():
    b2u = bytes_to_unicode()
    tokens = list(SPECIALS) + [b2u[b] for b in range(256)]
    merges = ["Ġ Ġ", "d e", "de f", "Ġ r", "e t", "Ġr et", "Ġret u", "r n", "Ġretu rn",
              "i n", "Ġ in", "s e", "l f", "se lf", "ĠĠ ĠĠ"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
    while len(tokens) < CFG.vocab_size:
        tokens.append(f"<unused{len(tokens)}>")
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, merges, types


GGUF_NAMES = {
    "attn_norm.weight": "attn_norm.weight", "mlp_norm.weight": "ffn_norm.weight",
    "attn.q.weight": "attn_q.weight", "attn.k.weight": "attn_k.weight",
    "attn.v.weight": "attn_v.weight", "attn.o.weight": "attn_output.weight",
    "mlp.gate.weight": "ffn_gate.weight", "mlp.up.weight": "ffn_up.weight",
    "mlp.down.weight": "ffn_down.weight",
}


def write_gguf(path, weights, qtype="F32", arch="llama", drop=(), reshape=None,
               tokenizer_model="gpt2", force_type=None, cfg=CFG):
    """Write ``weights`` (internal names) as a llama.cpp-style GGUF file."""
    w = GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.head_dim)
    tokens, merges, types = vocab()
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    for name, t in weights.items():
        if name == "embed.weight":
            gname = "token_embd.weight"
        elif name == "norm.weight":
            gname = "output_norm.weight"
        elif name == "head.weight":
            gname = "output.weight"
        else:
            _, i, rest = name.split(".", 2)
            gname = f"blk.{i}.{GGUF_NAMES[rest]}"
        if gname in drop:
            continue
        t = np.asarray(t, np.float32)
        if rest_is(name, "attn.q.weight"):
            t = converter_permute(t, cfg.num_heads, cfg.num_heads)
        elif rest_is(name, "attn.k.weight"):
            t = converter_permute(t, cfg.num_heads, cfg.num_kv_heads)
        if reshape and gname in reshape:
            t = t[: reshape[gname]]
        kind = force_type.get(gname, qtype) if force_type else qtype
        if t.ndim == 1 or kind == "F32":
            w.add_tensor(gname, t)
        elif kind == "F16":
            w.add_tensor(gname, t.astype(np.float16))
        else:
            q = GGMLQuantizationType[kind]
            w.add_tensor(gname, quants.quantize(t, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def rest_is(name, suffix):
    return name.startswith("layers.") and name.endswith(suffix)


def roundtrip(t, qtype):
    """What a reader of a ``qtype`` tensor must get back."""
    if qtype == "F32" or t.ndim == 1:
        return t
    if qtype == "F16":
        return t.astype(np.float16).astype(np.float32)
    q = GGMLQuantizationType[qtype]
    return quants.dequantize(quants.quantize(t, q), q).astype(np.float32)


@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, seed=21)


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"])
def test_gguf_tensors_dequantized_and_unpermuted(qtype, weights, tmp_path):
    path = write_gguf(tmp_path / f"m-{qtype}.gguf", weights, qtype)
    m = load_model(path)
    c = m.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
            c.intermediate_size, c.vocab_size) == (2, 64, 4, 2, 16, 96, 288)
    assert not c.tie_word_embeddings and c.bos_token_id == 1 and c.eos_token_ids == (2,)
    for name, t in weights.items():
        np.testing.assert_array_equal(m.weights[name], roundtrip(t, qtype), err_msg=name)
    if qtype == "F32":  # identical weights: identical logits to the original model
        from sparktile.golden_model.model import Model

        ref = Model(CFG, weights)
        ids = [1, 5, 300 - 20, 100, 7]
        np.testing.assert_array_equal(m.logits(ids), ref.logits(ids))
    else:
        err = max(np.abs(m.weights[n] - t).max() / np.abs(t).max() for n, t in weights.items())
        assert err < {"F16": 1e-3, "Q8_0": 1e-2, "Q4_0": 0.2, "Q4_1": 0.2}[qtype]


def test_gguf_tied_head(weights, tmp_path):
    w = {k: v for k, v in weights.items() if k != "head.weight"}
    m = load_model(write_gguf(tmp_path / "tied.gguf", w))
    assert m.config.tie_word_embeddings
    assert m.matmul_ops()[-1].shape == (288, 64)


def test_gguf_vocabulary(weights, tmp_path):
    m = load_model(write_gguf(tmp_path / "v.gguf", weights))
    tok = m.tokenizer
    text = "def f(self):\n    return x in y  # é ✓"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    tokens, _, _ = vocab()
    assert tokens.index("def") in ids and tokens.index("Ġreturn") in ids
    assert tokens.index("ĠĠ") in ids  # "\n   " before " return": GPT-2 split keeps 3
    assert tok.encode("<|im_start|>x") == [1, 4 + ord("x")]  # special token whole
    assert tok.decode([1, 70, 2]) == tokens[70]  # specials dropped
    assert tok.prompt_ids("a")[0] == 1  # add_bos_token from the file
    g = m.generate("def", 3, stop_at_eos=False)
    assert len(g.token_ids) == 3


def test_gguf_other_quant_type_refused(weights, tmp_path):
    path = write_gguf(tmp_path / "q5.gguf", weights, "Q8_0",
                      force_type={"blk.1.ffn_up.weight": "Q5_1"})
    with pytest.raises(ValueError, match=r"q5\.gguf: tensor 'blk\.1\.ffn_up\.weight' has type "
                                         r"Q5_1; supported types are F32, F16"):
        load_model(path)


def test_gguf_truncated(weights, tmp_path):
    path = write_gguf(tmp_path / "t.gguf", weights)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(ValueError, match=r"t\.gguf: tensor '.+' \(F32, shape .+\) ends at byte "
                                         r"\d+ but the file has \d+ bytes; truncated"):
        load_model(path)
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=r"t\.gguf: not a readable GGUF file"):
        load_model(path)


def test_gguf_missing_tensor(weights, tmp_path):
    path = write_gguf(tmp_path / "m.gguf", weights, drop={"blk.1.attn_v.weight"})
    with pytest.raises(ValueError, match=r"m\.gguf: tensor 'blk\.1\.attn_v\.weight' is missing"):
        load_model(path)


def test_gguf_shape_disagrees(weights, tmp_path):
    path = write_gguf(tmp_path / "s.gguf", weights, reshape={"blk.0.ffn_up.weight": 64})
    with pytest.raises(ValueError, match=r"s\.gguf: tensor 'blk\.0\.ffn_up\.weight' has shape "
                                         r"\(64, 64\) but the metadata says \(96, 64\)"):
        load_model(path)


def test_gguf_unsupported_architecture(weights, tmp_path):
    path = write_gguf(tmp_path / "f.gguf", weights, arch="falcon")
    with pytest.raises(ValueError, match=r"f\.gguf: architecture 'falcon' is not supported"):
        load_model(path)


def test_gguf_non_bpe_vocabulary(weights, tmp_path):
    path = write_gguf(tmp_path / "spm.gguf", weights, tokenizer_model="llama")
    with pytest.raises(ValueError, match=r"spm\.gguf: tokenizer model 'llama' is not supported"):
        load_model(path)


def test_not_a_gguf(tmp_path):
    p = tmp_path / "junk.gguf"
    p.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"junk\.gguf: not a readable GGUF file"):
        load_model(p)


@pytest.mark.parametrize("key, count", [("tokenizer.ggml.token_type", 1 << 40),
                                        ("tokenizer.ggml.tokens", 1 << 62),
                                        ("tokenizer.ggml.merges", 10 ** 6)])
def test_gguf_array_claiming_more_elements_than_the_file_holds(tmp_path, key, count):
    """GGUFReader loops over an array's element count, and past the end of the file every
    element reads as zero bytes: a count of 2**40 looped and allocated for ever (the long fuzz
    run, 7 GB when it was stopped). The count is checked against the bytes left first."""
    import struct

    from fuzzing import time_limit
    from sparktile.golden_model.testing import write_gguf
    write_gguf(tmp_path / "m.gguf")
    raw = bytearray((tmp_path / "m.gguf").read_bytes())
    at = raw.index(key.encode()) + len(key) + 8          # value type, element type, count
    struct.pack_into("<Q", raw, at, count)
    (tmp_path / "bad.gguf").write_bytes(bytes(raw))
    with time_limit(30), pytest.raises(   # a hang guard: without the check it never returns
            ValueError, match=rf"metadata array at byte \d+ claims {count} elements "
                              rf"\(\d+ bytes or more each\) but \d+ bytes are left"):
        load_model(tmp_path / "bad.gguf")


@pytest.mark.parametrize("bad", ["blk.0", "blk.x.ffn_up.weight", "blk..weight"])
def test_gguf_tensor_name_that_is_not_blk_layer_kind(tmp_path, bad):
    """A mangled tensor name (the long fuzz run: "blk.0\\0\\0...weight") is not used, and the
    tensor it should have been is reported missing, by name."""
    from sparktile.golden_model.testing import write_gguf
    write_gguf(tmp_path / "m.gguf")
    raw = (tmp_path / "m.gguf").read_bytes()
    good = b"blk.0.ffn_up.weight"
    assert len(bad) <= len(good)
    # Same length, so every offset in the file stays valid: pad with NULs inside the name.
    mangled = bad.encode() + b"\0" * (len(good) - len(bad))
    (tmp_path / "bad.gguf").write_bytes(raw.replace(good, mangled, 1))
    with pytest.raises(ValueError, match=r"tensor 'blk.0.ffn_up.weight' is missing"):
        load_model(tmp_path / "bad.gguf")
