"""Bad checkpoints, configs and data through ``sparktile generate`` / ``eval``: every one is
one line on stderr starting ``error:``, naming the bad value, and exit status 2 (issue 17).

Each case starts from a valid checkpoint written by the project's own writers and breaks one
thing, so that a case passing for the wrong reason (the checkpoint was broken anyway) shows up
as the wrong message.
"""

import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from sparktile.golden_model import CheckpointError, load_model
from sparktile.golden_model.checkpoint import internal_to_hf, save_sparktile_folder
from sparktile.golden_model.config import ModelConfig
from sparktile.golden_model.safetensors_io import read_safetensors, write_safetensors
from sparktile.golden_model.testing import random_weights, tiny_config, write_gguf

from sparktile.cli import main
from sparktile.errors import UserError


def _cli(*args):
    return CliRunner().invoke(main, list(args))


def _assert_user_error(r, *needles):
    """Exit 2, exactly one stderr line ``error: ...`` containing every needle, no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in r.output


# ------------------------------------------------------------------ checkpoint writers

def _project(path, **kw):
    cfg = tiny_config(**kw)
    save_sparktile_folder(path, cfg, random_weights(cfg))
    return path


def _hf(path, **kw):
    cfg = tiny_config(**kw)
    write_safetensors(path / "model.safetensors", internal_to_hf(random_weights(cfg)))
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "bos_token_id": 0}))
    return path


def _edit(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is _DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "config.json").write_text(json.dumps(cfg))
    return path


_DELETE = object()


def _header(path, mutate):
    """Rewrite ``model.safetensors``'s JSON header through ``mutate(header)`` (data kept)."""
    f = path / "model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    mutate(header)
    hb = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
    return path


def _overlap_norm_with_embed(h):
    start = h["embed.weight"]["data_offsets"][0]
    h["norm.weight"]["data_offsets"] = [start + 4, start + 4 + 256]  # inside embed's bytes


def _set_entry(name, **fields):
    return lambda h: h[name].update(fields)


# ------------------------------------------------------------------ the reproducers

def test_generate_nonexistent_model():
    _assert_user_error(_cli("generate", "--prompt", "x", "--model", "/nonexistent"),
                       "no model at /nonexistent")


def test_eval_nonexistent_model(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    _assert_user_error(_cli("eval", "--data", str(tmp_path), "--model", "/nonexistent"),
                       "no model at /nonexistent")


# (how to break a valid checkpoint, what the error must say). `p` is the folder.
CASES = {
    "config-is-a-list": (lambda p: (p / "config.json").write_text("[1, 2]"),
                         ["config.json: must hold a JSON object, not a list"]),
    "config-not-json": (lambda p: (p / "config.json").write_text("{'a': 1"),
                        ["config.json: not valid JSON"]),
    "heads-zero": (lambda p: _edit(p, num_heads=0),
                   ["num_heads must be a positive integer, not 0"]),
    "heads-string": (lambda p: _edit(p, num_heads="4"),
                     ["num_heads must be a positive integer, not '4'"]),
    "layers-bool": (lambda p: _edit(p, num_layers=True),
                    ["num_layers must be a positive integer, not True"]),
    "hidden-float": (lambda p: _edit(p, hidden_size=64.0),
                     ["hidden_size must be a positive integer, not 64.0"]),
    "kv-not-dividing": (lambda p: _edit(p, num_kv_heads=3),
                        ["num_heads (4) must be a multiple of num_kv_heads (3)"]),
    "eps-nan": (lambda p: _edit(p, rms_norm_eps=float("nan")),
                ["rms_norm_eps must be a number in (0, 1.0), not nan"]),
    "theta-string": (lambda p: _edit(p, rope_theta="1e4"),
                     ["rope_theta must be a finite number > 0, not '1e4'"]),
    "tie-int": (lambda p: _edit(p, tie_word_embeddings=0),
                ["tie_word_embeddings must be true or false, not 0"]),
    "rope-scaling-string": (lambda p: _edit(p, rope_scaling="linear"),
                            ["rope_scaling must be an object or null, not 'linear'"]),
    "rope-linear-no-factor": (lambda p: _edit(p, rope_scaling={"rope_type": "linear"}),
                              ["rope_scaling.factor must be a finite number > 0, not None"]),
    "rope-yarn": (lambda p: _edit(p, rope_scaling={"rope_type": "yarn", "factor": 2}),
                  [("rope_scaling type 'yarn' is not supported; supported are default, "
                   "linear, llama3")]),
    "rope-llama3-inverted": (lambda p: _edit(p, rope_scaling={
        "rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1,
        "original_max_position_embeddings": 64}),
        ["high_freq_factor (1.0) must be greater than low_freq_factor (4.0)"]),
    "tokenizer-int": (lambda p: _edit(p, tokenizer=5),
                      ["tokenizer must be a file name inside the checkpoint folder, not 5"]),
    "tokenizer-escapes": (lambda p: _edit(p, tokenizer="../../../../etc/passwd"),
                          [("tokenizer '../../../../etc/passwd' points outside the checkpoint "
                           "folder")]),
    "tokenizer-absolute": (lambda p: _edit(p, tokenizer="/etc/passwd"),
                           ["tokenizer '/etc/passwd' points outside the checkpoint folder"]),
    "tokenizer-missing": (lambda p: _edit(p, tokenizer="tok.json"),
                          ["tokenizer 'tok.json': no such file in"]),
    "fewer-layers-than-file": (lambda p: _edit(p, num_layers=1),
                               [("the file has tensors of 2 layers but the config says "
                                "num_layers 1")]),
    "more-layers-than-file": (lambda p: _edit(p, num_layers=3),
                              ["tensor 'layers.2.attn_norm.weight' is missing"]),
    "format-version-99": (lambda p: _edit(p, format_version=99),
                          ["format_version 99 is not supported; this sparktile reads 1"]),
    "format-missing-key": (lambda p: _edit(p, head_dim=_DELETE),
                           ["required key 'head_dim' missing"]),
    "eos-outside-vocab": (lambda p: _edit(p, eos_token_id=300),
                          ["eos_token_id 300 is outside the vocabulary [0, 256)"]),
    "bos-negative": (lambda p: _edit(p, bos_token_id=-1),
                     ["bos_token_id must be an integer >= 0, not -1"]),
    "vocab-vs-embedding": (lambda p: _edit(p, vocab_size=300),
                           [("tensor 'embed.weight' has shape (256, 64) but the config says "
                            "(300, 64)")]),
    "bias-unused": (lambda p: _edit(p, attention_bias=False) and _add_tensor(
        p, "layers.0.attn.q.bias", np.zeros(64, np.float32)),
        [("tensor 'layers.0.attn.q.bias' is in the file but the config does not use it "
         "(attention_bias is false)")]),
    "nan-weight": (lambda p: _add_tensor(p, "norm.weight", np.full(64, np.nan, np.float32)),
                   ["tensor 'norm.weight' holds non-finite values"]),
    "offset-negative": (lambda p: _header(p, _set_entry("norm.weight",
                                                        data_offsets=[-256, 0])),
                        [("tensor 'norm.weight': data_offsets [-256, 0] must satisfy 0 <= "
                         "start <= end")]),
    "offset-past-end": (lambda p: _header(p, _set_entry("norm.weight",
                                                        data_offsets=[0, 10 ** 12])),
                        [("tensor 'norm.weight' ends at byte 1000000000000 of the data "
                         "section")]),
    "offsets-overlap": (lambda p: _header(p, _overlap_norm_with_embed),
                        ["tensors 'embed.weight' and 'norm.weight' overlap"]),
    "dtype-unknown": (lambda p: _header(p, _set_entry("norm.weight", dtype="F8_E4M3")),
                      ["tensor 'norm.weight' has dtype 'F8_E4M3'; supported are BF16"]),
    "shape-vs-bytes": (lambda p: _header(p, _set_entry("norm.weight", shape=[65])),
                       ["tensor 'norm.weight' has 256 bytes, shape (65,) of F32 needs 260"]),
    "shape-not-list": (lambda p: _header(p, _set_entry("norm.weight", shape="64")),
                       ["shape must be a list of at most 8 non-negative integers, not '64'"]),
    "header-not-object": (lambda p: (p / "model.safetensors").write_bytes(
        struct.pack("<Q", 2) + b"[]"), ["safetensors header must be a JSON object, not a list"]),
    "header-not-json": (lambda p: (p / "model.safetensors").write_bytes(
        struct.pack("<Q", 4) + b"\xff{x}"), ["safetensors header is not valid JSON"]),
    "header-too-long": (lambda p: (p / "model.safetensors").write_bytes(
        struct.pack("<Q", 1 << 60) + b"{}"),
        [f"header claims {1 << 60} bytes but the file has 10; truncated?"]),
    "header-truncated": (lambda p: (p / "model.safetensors").write_bytes(b"\x10\x00"),
                         ["not a safetensors file (2 bytes, header missing)"]),
    "data-truncated": (lambda p: (p / "model.safetensors").write_bytes(
        (p / "model.safetensors").read_bytes()[:-100]), ["truncated file?"]),
    "safetensors-missing": (lambda p: (p / "model.safetensors").unlink(),
                            ["model.safetensors not found"]),
}


def _add_tensor(path, name, value):
    t = read_safetensors(path / "model.safetensors")
    t[name] = value
    write_safetensors(path / "model.safetensors", t)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_project_checkpoint(tmp_path, case):
    p = _project(tmp_path / "ckpt")
    assert _cli("generate", "--prompt", "x", "--max-tokens", "1", "--model",
                str(p)).exit_code == 0  # valid before it is broken
    breaker, needles = CASES[case]
    breaker(p)
    _assert_user_error(_cli("generate", "--prompt", "x", "--max-tokens", "1", "--model",
                            str(p)), *needles)


HF_CASES = {
    "heads-zero": (dict(num_attention_heads=0),
                   "num_attention_heads must be a positive integer, not 0"),
    "heads-string": (dict(num_attention_heads="4"),
                     "num_attention_heads must be a positive integer, not '4'"),
    "hidden-not-divisible": (dict(hidden_size=66),
                             ("hidden_size (66) must be divisible by num_attention_heads (4) "
                             "when head_dim is not given")),
    "kv-zero": (dict(num_key_value_heads=0),
                "num_key_value_heads must be a positive integer, not 0"),
    "rope-scaling-string": (dict(rope_scaling="dynamic"),
                            "rope_scaling must be an object or null, not 'dynamic'"),
    "rope-linear-no-factor": (dict(rope_scaling={"type": "linear"}),
                              "rope_scaling.factor must be a finite number > 0, not None"),
    "mlp-bias-string": (dict(mlp_bias="no"), "mlp_bias must be true or false, not 'no'"),
    "eos-list-outside": (dict(eos_token_id=[1, 999]),
                         "eos_token_id 999 is outside the vocabulary [0, 256)"),
    "layers-too-few": (dict(num_hidden_layers=1),
                       "the file has tensors of 2 layers but the config says num_layers 1"),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_broken_hf_checkpoint(tmp_path, case):
    p = _hf(tmp_path)
    assert load_model(p).config.num_heads == 4  # valid before it is broken
    changes, needle = HF_CASES[case]
    _edit(p, **changes)
    r = _cli("generate", "--prompt", "x", "--max-tokens", "1", "--model", str(p))
    _assert_user_error(r, "config.json" if "layers" not in case else "model.safetensors",
                       needle)


def test_hf_shard_outside_folder(tmp_path):
    (tmp_path / "ckpt").mkdir()
    p = _hf(tmp_path / "ckpt")
    (p / "model.safetensors").rename(tmp_path / "outside.safetensors")
    names = read_safetensors(tmp_path / "outside.safetensors")
    (p / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: "../outside.safetensors" for n in names}}))
    _assert_user_error(_cli("generate", "--prompt", "x", "--model", str(p)),
                       "shard '../outside.safetensors' points outside the checkpoint folder")


def test_gguf_metadata_errors(tmp_path):
    cfg = tiny_config(vocab_size=16, bos_token_id=0, eos_token_ids=(1,))
    write_gguf(tmp_path / "ok.gguf", cfg)
    assert load_model(tmp_path / "ok.gguf").config.vocab_size == 16  # the writer is valid
    # An EOS id outside the vocabulary: ModelConfig refuses to build it, so patch the file.
    raw = (tmp_path / "ok.gguf").read_bytes()
    key = b"tokenizer.ggml.eos_token_id"
    i = raw.index(key) + len(key) + 4  # then the uint32 value type, then the value
    (tmp_path / "eos.gguf").write_bytes(raw[:i] + struct.pack("<I", 99) + raw[i + 4:])
    _assert_user_error(_cli("generate", "--prompt", "a", "--model", str(tmp_path / "eos.gguf")),
                       "eos.gguf", "eos_token_id 99 is outside the vocabulary [0, 16)")
    (tmp_path / "cut.gguf").write_bytes(raw[:len(raw) // 2])
    _assert_user_error(_cli("generate", "--prompt", "a", "--model", str(tmp_path / "cut.gguf")),
                       "cut.gguf")


def test_eval_empty_data_folder(tmp_path):
    _assert_user_error(_cli("eval", "--data", str(tmp_path)),
                       f"no .py files under {tmp_path}")


def test_eval_json_folder_missing_is_refused_before_the_run(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    _assert_user_error(_cli("eval", "--data", str(tmp_path), "--model", "/nonexistent",
                            "--json", str(tmp_path / "nodir" / "r.json")),
                       "folder", "nodir", "does not exist")


def test_generate_request_errors():
    _assert_user_error(_cli("generate", "--prompt", "x" * 600, "--max-tokens", "1"),
                       "exceeds")
    r = _cli("generate", "--prompt", "x", "--seed", "-1")
    assert r.exit_code == 2 and "-1 is not in the range x>=0" in r.stderr


def test_error_types_keep_builtin_compatibility(tmp_path):
    # A UserError for the CLI, and still the builtin types older callers catch.
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "none")
    with pytest.raises(ValueError) as e:
        ModelConfig.from_sparktile([1], "c.json")
    assert isinstance(e.value, UserError) and isinstance(e.value, CheckpointError)
