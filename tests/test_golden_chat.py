"""Chat prompts: a checkpoint's own Jinja2 chat template, rendered as transformers does."""

from __future__ import annotations

import json

import pytest
from sparktile.golden_model import load_model
from sparktile.golden_model.chat import PLAIN_TEMPLATE, ChatTemplate, ChatTemplateError
from sparktile.golden_model.errors import CheckpointError
from sparktile.golden_model.testing import tiny_config, write_gguf

# ChatML, as SmolLM2-Instruct and Qwen2 ship it (tokenizer_config.json's chat_template).
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system'"
          " %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
          "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")
# Llama-style: writes out bos_token and refuses a conversation that does not alternate.
LLAMA = ("{{ bos_token }}{% for m in messages %}{% if (m['role'] == 'user') != "
         "(loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate user/assistant') }}"
         "{% endif %}[{{ m['role'] | upper }}] {{ m['content'] | trim }}\n{% endfor %}"
         "{% if add_generation_prompt %}[ASSISTANT] {% endif %}")

MSGS = [{"role": "user", "content": "write a loop"},
        {"role": "assistant", "content": "for i in range(3):"},
        {"role": "user", "content": "  and print i  "}]


def test_plain_template_is_one_line_per_message():
    assert ChatTemplate(PLAIN_TEMPLATE).render(MSGS) == (
        "user: write a loop\nassistant: for i in range(3):\nuser:   and print i  \nassistant: ")


def test_chatml_renders_as_transformers_does():
    assert ChatTemplate(CHATML).render(MSGS[:1]) == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nwrite a loop"
        "<|im_end|>\n<|im_start|>assistant\n")
    assert ChatTemplate(CHATML).render(MSGS[:1], add_generation_prompt=False).endswith(
        "<|im_end|>\n")


def test_bos_written_once():
    t = ChatTemplate(LLAMA, bos_token="<s>")
    assert t.render(MSGS).startswith("<s>[USER] write a loop\n")
    # The tokenizer adds its own BOS id: the template's copy is dropped.
    assert ChatTemplate(LLAMA, bos_token="<s>", strip_bos=True).render(MSGS).startswith(
        "[USER] write a loop\n[ASSISTANT] for i in range(3):\n[USER] and print i\n")


@pytest.mark.parametrize("source, words", [
    (LLAMA, "roles must alternate"),                       # the template's raise_exception
    ("{{ messages.__class__.__mro__ }}", "SecurityError"),  # the sandbox
    ("{{ messages[7]['role'] }}", "failed on these messages"),
    ("{{ 1 // 0 }}", "ZeroDivisionError"),
])
def test_a_template_refusing_the_messages_is_a_clear_error(source, words):
    msgs = [{"role": "assistant", "content": "x"}]
    with pytest.raises(ChatTemplateError, match=words):
        ChatTemplate(source, origin="t").render(msgs)


@pytest.mark.parametrize("source, words", [
    ("{% for m in messages %}", "does not compile"), ("", "non-empty"), (5, "non-empty"),
    ("x" * (1 << 18), "at most"),
])
def test_a_bad_template_is_refused_when_loaded(source, words):
    with pytest.raises(CheckpointError, match=words):
        ChatTemplate(source)


def _hf(tmp_path, tokenizer_config: dict, jinja: str | None = None):
    from sparktile.golden_model.checkpoint import internal_to_hf
    from sparktile.golden_model.safetensors_io import write_safetensors
    from sparktile.golden_model.testing import random_weights
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg = tiny_config()
    write_safetensors(tmp_path / "model.safetensors", internal_to_hf(random_weights(cfg)))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "tie_word_embeddings": cfg.tie_word_embeddings, "max_position_embeddings": 64,
        "bos_token_id": 0, "eos_token_id": 1}))
    tok = Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "[USER]": 2, "hi": 3, "<unk>": 4},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if jinja is not None:
        (tmp_path / "chat_template.jinja").write_text(jinja)
    return tmp_path


def test_hf_folder_template_from_tokenizer_config(tmp_path):
    m = load_model(_hf(tmp_path, {"add_bos_token": True, "chat_template": LLAMA}))
    t = m.tokenizer.chat_template
    assert t.bos_token == "<s>" and t.eos_token == "</s>" and t.strip_bos
    text = t.render([{"role": "user", "content": "hi"}])
    assert text == "[USER] hi\n[ASSISTANT] "
    assert m.tokenizer.prompt_ids(text)[:3] == [0, 2, 3]      # one BOS, from the tokenizer


def test_hf_folder_named_templates_and_jinja_file(tmp_path):
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": CHATML}]
    m = load_model(_hf(tmp_path, {"chat_template": named}))
    assert m.tokenizer.chat_template.render(MSGS[:1]).startswith("<|im_start|>system")
    m = load_model(_hf(tmp_path, {"chat_template": named}, jinja="J{{ messages | length }}"))
    assert m.tokenizer.chat_template.render(MSGS) == "J3"          # the .jinja file wins


@pytest.mark.parametrize("tc, words", [
    ({"chat_template": [{"name": "tool_use", "template": "T"}]}, "without a template named"),
    ({"chat_template": 7}, "must be text or a list"),
    ({"chat_template": "{% if %}"}, "does not compile"),
])
def test_hf_folder_bad_template(tmp_path, tc, words):
    with pytest.raises(CheckpointError, match=words):
        load_model(_hf(tmp_path, tc))


def test_gguf_template(tmp_path):
    write_gguf(tmp_path / "m.gguf", chat_template=CHATML)
    assert load_model(tmp_path / "m.gguf").tokenizer.chat_template.render(MSGS[:1]) \
        .endswith("<|im_start|>assistant\n")
    write_gguf(tmp_path / "bad.gguf", chat_template="{{ x }")
    with pytest.raises(CheckpointError, match="tokenizer.chat_template: the chat template "
                                              "does not compile"):
        load_model(tmp_path / "bad.gguf")
    write_gguf(tmp_path / "none.gguf")
    assert load_model(tmp_path / "none.gguf").tokenizer.chat_template is None
