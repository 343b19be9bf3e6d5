"""safetensors checkpoints: project format, Hugging Face folders, tokenizers, clear errors."""

import json
import struct

import numpy as np
import pytest
from sparktile.golden_model import load_model
from sparktile.golden_model.checkpoint import internal_to_hf, save_sparktile_folder
from sparktile.golden_model.safetensors_io import read_safetensors, write_safetensors
from sparktile.golden_model.testing import random_model, random_weights, tiny_config


def test_safetensors_roundtrip_and_bf16(tmp_path):
    t = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float16),
         "c": np.arange(4, dtype=np.int8)}
    write_safetensors(tmp_path / "x.safetensors", t)
    r = read_safetensors(tmp_path / "x.safetensors")
    for k in t:
        assert r[k].dtype == t[k].dtype
        np.testing.assert_array_equal(r[k], t[k])
    # BF16 written by hand: the high halves of float32 values.
    vals = np.array([1.0, -2.5, 3.140625], np.float32)
    raw = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    hdr = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr + raw)
    np.testing.assert_array_equal(read_safetensors(tmp_path / "b.safetensors")["w"], vals)


def test_safetensors_truncated(tmp_path):
    write_safetensors(tmp_path / "x.safetensors", {"w": np.zeros((16, 16), np.float32)})
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"x\.safetensors: tensor 'w' ends at byte 1024 of the "
                                         r"data section but the section has only 1014"):
        read_safetensors(tmp_path / "x.safetensors")
    (tmp_path / "x.safetensors").write_bytes(data[:4])
    with pytest.raises(ValueError, match="header missing"):
        read_safetensors(tmp_path / "x.safetensors")


def test_project_format_roundtrip(tmp_path):
    m = random_model(tiny_config(tie_word_embeddings=True), seed=3)
    save_sparktile_folder(tmp_path, m.config, m.weights)
    m2 = load_model(tmp_path)
    assert m2.config == m.config
    ids = [0, 1, 2, 200]
    np.testing.assert_array_equal(m2.logits(ids), m.logits(ids))
    assert m2.tokenizer.decode(m2.tokenizer.encode("é x")) == "é x"


def _project(tmp_path, **kw):
    cfg = tiny_config(**kw)
    save_sparktile_folder(tmp_path, cfg, random_weights(cfg))
    return tmp_path


def test_project_format_missing_tensor(tmp_path):
    p = _project(tmp_path)
    t = read_safetensors(p / "model.safetensors")
    del t["layers.1.mlp.gate.weight"]
    write_safetensors(p / "model.safetensors", t)
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'layers\.1\.mlp\.gate\."
                                         r"weight' is missing \(config 'tiny-random' needs "
                                         r"shape \(96, 64\)\)"):
        load_model(p)


def test_project_format_shape_disagrees(tmp_path):
    p = _project(tmp_path)
    cfg = json.loads((p / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"tensor 'layers\.0\.mlp\.gate\.weight' has shape "
                                         r"\(96, 64\) but the config says \(128, 64\)"):
        load_model(p)


def test_project_config_missing_key(tmp_path):
    p = _project(tmp_path)
    cfg = json.loads((p / "config.json").read_text())
    del cfg["head_dim"]
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: required key 'head_dim' missing"):
        load_model(p)


def _hf_folder(tmp_path, model_type="llama", tokenizer=True, **kw):
    cfg = tiny_config(attention_bias=model_type == "qwen2", **kw)
    w = random_weights(cfg, seed=4)
    write_safetensors(tmp_path / "model.safetensors", internal_to_hf(w))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": model_type, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "rope_theta": 1e5, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": cfg.tie_word_embeddings, "max_position_embeddings": 64,
        "bos_token_id": 0, "eos_token_id": [1, 2]}))
    if tokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel({f"<{i}>": i for i in range(3)}, unk_token="<0>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece()
        tok.save(str(tmp_path / "tokenizer.json"))
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
    return tmp_path, cfg, w


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_hf_folder(tmp_path, model_type):
    p, cfg, w = _hf_folder(tmp_path, model_type)
    m = load_model(p)
    assert m.config.rope_theta == 1e5 and m.config.eos_token_ids == (1, 2)
    assert m.config.attention_bias == (model_type == "qwen2")
    for k, v in w.items():
        np.testing.assert_array_equal(m.weights[k], v)
    assert m.tokenizer.encode("<2> <1>") == [2, 1]
    assert m.tokenizer.prompt_ids("<2>") == [0, 2]


def test_hf_folder_without_tokenizer(tmp_path):
    p, _, _ = _hf_folder(tmp_path, tokenizer=False)
    m = load_model(p)
    assert m.tokenizer is None
    assert m.logits([3, 4]).shape == (2, 256)
    assert len(m.generate([3, 4], 2, stop_at_eos=False).token_ids) == 2
    with pytest.raises(ValueError, match="has no tokenizer; pass the prompt as a list"):
        m.generate("text", 2)


def test_hf_folder_unsupported(tmp_path):
    p, _, _ = _hf_folder(tmp_path, tokenizer=False)
    cfg = json.loads((p / "config.json").read_text())
    (p / "config.json").write_text(json.dumps(dict(cfg, model_type="gpt_neox")))
    with pytest.raises(ValueError, match="model_type 'gpt_neox' is not supported"):
        load_model(p)
    (p / "config.json").write_text(json.dumps(dict(cfg, mlp_bias=True)))
    with pytest.raises(ValueError, match="mlp_bias=true is not supported"):
        load_model(p)


def test_hf_sharded_index_missing_shard_tensor(tmp_path):
    p, _, w = _hf_folder(tmp_path, tokenizer=False)
    hf = read_safetensors(p / "model.safetensors")
    (p / "model.safetensors").unlink()
    names = sorted(hf)
    half = len(names) // 2
    write_safetensors(p / "a.safetensors", {n: hf[n] for n in names[:half]})
    write_safetensors(p / "b.safetensors", {n: hf[n] for n in names[half:]})
    index = {"weight_map": {n: "a.safetensors" if i < half else "b.safetensors"
                            for i, n in enumerate(names)}}
    (p / "model.safetensors.index.json").write_text(json.dumps(index))
    m = load_model(p)
    np.testing.assert_array_equal(m.weights["norm.weight"], w["norm.weight"])
    write_safetensors(p / "b.safetensors", {n: hf[n] for n in names[half + 1:]})
    with pytest.raises(ValueError, match=rf"tensor '{names[half]}' listed in the index is "
                                         r"missing from shard 'b\.safetensors'"):
        load_model(p)


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json in this folder"):
        load_model(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w\.bin: a model file must be \.gguf"):
        load_model(tmp_path / "w.bin")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="neither a sparktile checkpoint"):
        load_model(tmp_path)
