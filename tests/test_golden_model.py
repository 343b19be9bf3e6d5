"""The numpy decoder: KV cache, generation, sampling, errors; on seeded random models."""

import numpy as np
import pytest
from sparktile.golden_model.model import KVCache
from sparktile.golden_model.sampling import next_token
from sparktile.golden_model.testing import random_model, tiny_config

IDS = [0, 100, 101, 102, 58, 10, 32, 32, 32, 32, 114, 101, 116]


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_kv_cache_matches_teacher_forcing(mode):
    m = random_model(tiny_config(), seed=1)
    full = m.logits(IDS, mode=mode)
    assert full.shape == (len(IDS), 256) and full.dtype == np.float32
    cache = KVCache(m.config, capacity=2)  # forces growth
    parts = [m.forward(IDS[:5], cache, mode)]
    parts += [m.forward([t], cache, mode) for t in IDS[5:]]
    inc = np.concatenate(parts)
    if mode == "float":
        np.testing.assert_allclose(inc, full, atol=1e-5, rtol=1e-5)
    else:
        # Integer matmuls are exact; only the float host ops may round differently.
        np.testing.assert_allclose(inc, full, atol=0.2)
        assert (inc.argmax(1) == full.argmax(1)).mean() > 0.9
    assert cache.length == len(IDS)


def test_int8_is_close_to_float():
    m = random_model(tiny_config(), seed=2)
    f, q = m.logits(IDS), m.logits(IDS, mode="int8")
    err = np.abs(f - q).max() / np.abs(f).max()
    assert err < 0.1, err


def test_int8_is_deterministic_and_calibrated_once():
    m = random_model(seed=4)
    a = m.logits(IDS, mode="int8")
    ops = m.matmul_ops()
    b = m.logits(IDS, mode="int8")
    np.testing.assert_array_equal(a, b)
    assert m.matmul_ops()[0] is ops[0]


def test_generate_greedy_and_seeded():
    m = random_model(seed=5)
    g1 = m.generate("def f(x):", 12)
    g2 = m.generate("def f(x):", 12)
    assert g1.token_ids == g2.token_ids and len(g1.token_ids) == 12
    assert g1.prompt_ids[0] == 0  # BOS
    assert g1.stopped == "max_tokens" and g1.steps == 11 and g1.tokens_per_s > 0
    # Greedy equals the argmax of teacher-forced logits.
    seq = g1.prompt_ids + g1.token_ids
    assert m.logits(seq[:-1]).argmax(1)[len(g1.prompt_ids) - 1:].tolist() == g1.token_ids
    s1 = m.generate("x", 20, temperature=1.0, seed=7)
    s2 = m.generate("x", 20, temperature=1.0, seed=7)
    s3 = m.generate("x", 20, temperature=1.0, seed=8)
    assert s1.token_ids == s2.token_ids != s3.token_ids
    assert str(s1) == s1.text == m.tokenizer.decode(s1.token_ids)


def test_generate_stops_at_eos():
    m = random_model(tiny_config(eos_token_ids=tuple(range(256))), seed=5)
    g = m.generate("abc", 5)
    assert g.token_ids == [] and g.stopped == "eos"
    streamed = []
    g = random_model(seed=5).generate([0, 1], 4, on_token=streamed.append)
    assert streamed == g.token_ids


def test_sampling_filters():
    logits = np.array([1.0, 3.0, 2.0, 3.0, -5.0])
    assert next_token(logits) == 1  # greedy, lowest id on ties
    rng = np.random.default_rng(0)
    assert {next_token(logits, rng, 1.0, top_k=1) for _ in range(20)} <= {1, 3}
    assert {next_token(logits, rng, 1.0, top_p=1e-6) for _ in range(20)} == {1}
    draws = [next_token(logits, rng, 1.0, top_k=3) for _ in range(300)]
    assert set(draws) == {1, 2, 3}
    draws = [next_token(logits, rng, 100.0) for _ in range(500)]
    assert set(draws) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("kw,match", [
    ({"temperature": -1.0}, "temperature must be a finite number >= 0, not -1.0"),
    ({"top_k": 0}, "top_k must be a positive integer or None, not 0"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\] or None, not 1.5"),
])
def test_sampling_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        random_model().generate("a", 2, **kw)


def test_errors_quote_values():
    m = random_model()
    with pytest.raises(ValueError, match="mode must be one of 'float', 'int8', 'int', not 'fp16'"):
        m.logits([1, 2], mode="fp16")
    with pytest.raises(ValueError, match=r"token id 300 is outside the vocabulary \[0, 256\)"):
        m.logits([1, 300])
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings"):
        m.logits(list(range(129)))
    with pytest.raises(ValueError, match="max_tokens must be a positive integer, not 0"):
        m.generate("a", 0)
    with pytest.raises(ValueError, match=r"prompt \(2 tokens\) \+ max_tokens \(127\) exceeds"):
        m.generate("a", 127)


@pytest.mark.parametrize("kw,match", [
    ({"num_kv_heads": 3}, r"num_heads \(4\) must be a multiple of num_kv_heads \(3\)"),
    ({"head_dim": 15}, "head_dim must be even"),
    ({"hidden_size": 0}, "hidden_size must be a positive integer, not 0"),
    ({"rope_scaling": {"rope_type": "yarn"}}, "rope_scaling type 'yarn' is not supported"),
])
def test_config_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**kw)


def test_gqa_group_sharing():
    """With one KV head, every query head attends to the same keys (GQA/MQA)."""
    m = random_model(tiny_config(num_kv_heads=1), seed=9)
    assert m.logits(IDS).shape == (len(IDS), 256)
    ops = m.matmul_ops()
    assert ops[1].shape == (16, 64) and ops[2].shape == (16, 64)


def test_text_stream_holds_back_a_partial_utf8_character():
    from sparktile.golden_model.tokenizer import ByteTokenizer, TextStream
    tok = ByteTokenizer()
    ids = tok.encode("aé€b")
    s = TextStream(tok)
    pieces = [s.push(i) for i in ids]
    assert "".join(pieces) == "aé€b"
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[1] == ""                      # the first byte of "é" waits for the second
    assert s.rest("aé€b") == ""


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": True},
                                       {"attention_bias": True, "num_layers": 3}])
def test_matmul_shapes_are_the_ops_without_quantizing(overrides):
    """A planner (`sparktile run`'s fit check, the serve rtl backend) reads these instead of
    quantizing in its own process: they must be what matmul_ops() gives, in order."""
    from sparktile.golden_model.testing import random_model, tiny_config
    lm = random_model(tiny_config(**overrides), seed=3)
    shapes = lm.matmul_shapes()
    assert lm._qlin is None, "matmul_shapes must not quantize"
    assert [(s.name, s.kind, s.layer, s.shape, s.out) for s in shapes] == [
        (o.name, o.kind, o.layer, tuple(o.shape), o.out) for o in lm.matmul_ops()]
