"""Cross-check of the float path against Hugging Face transformers (optional extra).

Random ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` models of small size are saved with
``save_pretrained`` and loaded by :func:`load_model` as Hugging Face folders, so the test
covers the loader as well as the numerics: max |logits difference| must be <= 1e-4.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'reference' extra (CPU torch)")
transformers = pytest.importorskip("transformers",
                                   reason="needs the 'reference' extra (transformers)")

from sparktile.golden_model import load_model  # noqa: E402
from sparktile.golden_model.reference import to_transformers  # noqa: E402
from sparktile.golden_model.testing import random_model, tiny_config  # noqa: E402

CASES = {
    "llama-gqa-untied": ("llama", dict(num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=False, rope_theta=10000.0)),
    "llama-mha-tied": ("llama", dict(num_attention_heads=4, num_key_value_heads=4,
                                     tie_word_embeddings=True, rope_theta=1e6)),
    "llama-mqa-headdim": ("llama", dict(num_attention_heads=2, num_key_value_heads=1,
                                        head_dim=24, tie_word_embeddings=False,
                                        rope_theta=500.0, rms_norm_eps=1e-6)),
    "llama3-rope-scaling": ("llama", dict(
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 16})),
    "qwen2-bias-untied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2,
                                        tie_word_embeddings=False, rope_theta=1e6)),
    "qwen2-bias-tied": ("qwen2", dict(num_attention_heads=8, num_key_value_heads=2,
                                      tie_word_embeddings=True, rope_theta=10000.0)),
}


def _hf_model(arch, kw, seed):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kw = dict(kw)
    if "rope_scaling" in kw:  # transformers 5 takes it as rope_parameters
        kw["rope_parameters"] = dict(kw.pop("rope_scaling"), rope_theta=kw.pop("rope_theta"))
    common = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  max_position_embeddings=256)
    cfg_cls, cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                    "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    torch.manual_seed(seed)
    model = cls(cfg_cls(**common, **kw)).eval().float()
    with torch.no_grad():  # every parameter random, so biases and norms matter too
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / max(1, p.shape[-1]) ** 0.5)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_logits_match_transformers(case, tmp_path):
    arch, kw = CASES[case]
    ref_model = _hf_model(arch, kw, seed=len(case))
    shard = "40KB" if case.startswith("qwen2-bias-untied") else "2GB"
    ref_model.save_pretrained(tmp_path, max_shard_size=shard)
    if shard == "40KB":
        assert (tmp_path / "model.safetensors.index.json").exists()
    ids = np.random.default_rng(0).integers(0, 160, 96).tolist()
    with torch.no_grad():
        ref = ref_model(torch.tensor([ids])).logits[0].numpy()
    ours = load_model(tmp_path)
    assert ours.config.attention_bias == (arch == "qwen2")
    assert ours.config.tie_word_embeddings == kw["tie_word_embeddings"]
    got = ours.logits(ids)
    assert got.shape == ref.shape == (96, 160)
    assert np.abs(got - ref).max() <= 1e-4, np.abs(got - ref).max()
    # The KV-cache path (prefill then one token at a time) agrees too.
    cache = ours.new_cache()
    inc = np.concatenate([ours.forward(ids[:50], cache)]
                         + [ours.forward([t], cache) for t in ids[50:]])
    assert np.abs(inc - ref).max() <= 1e-4


@pytest.mark.parametrize("kw", [{}, {"attention_bias": True, "tie_word_embeddings": True}])
def test_to_transformers_twin(kw):
    m = random_model(tiny_config(**kw), seed=11)
    hf = to_transformers(m)
    ids = list(range(0, 250, 5))
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(m.logits(ids) - ref).max() <= 1e-4


def test_greedy_generation_matches_transformers():
    m = random_model(tiny_config(), seed=12)
    hf = to_transformers(m)
    prompt = [0, 40, 41, 42]
    ours = m.generate(prompt, 16, stop_at_eos=False).token_ids
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False,
                          attention_mask=torch.ones(1, 4, dtype=torch.long),
                          pad_token_id=0)
    assert out[0, 4:].tolist() == ours
