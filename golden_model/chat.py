"""Chat prompts: the checkpoint's own chat template, or a plain one for the shipped model.

A chat model was trained on conversations laid out one particular way (``<|im_start|>user
...<|im_end|>`` for SmolLM2 and Qwen2, ``<|start_header_id|>`` for Llama 3); a checkpoint
carries that layout as a Jinja2 template: ``chat_template.jinja`` or the ``chat_template``
field of ``tokenizer_config.json`` in a Hugging Face folder, ``tokenizer.chat_template`` in a
GGUF file. It is rendered here the way ``transformers`` renders it (a sandboxed environment,
``trim_blocks`` and ``lstrip_blocks``, ``raise_exception``, ``tojson``,
``add_generation_prompt``), so a served chat request gives the model the same tokens the
checkpoint's authors would. The shipped byte-level model has no template and gets
:data:`PLAIN_TEMPLATE`: one ``role: content`` line per message, then ``assistant: ``.

A template is untrusted input: the sandbox allows no attribute access outside plain data,
and a template that does not compile is a :class:`CheckpointError` when the checkpoint loads,
not when the first request arrives.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

from sparktile.errors import one_line

from .errors import CheckpointError

__all__ = ["ChatTemplate", "ChatTemplateError", "PLAIN_TEMPLATE", "ROLES", "read_hf_template",
           "for_tokenizer", "plain_template"]

#: The roles a message may have.
ROLES = ("system", "user", "assistant")

#: The layout used where a checkpoint has no template of its own.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}assistant: {% endif %}")

#: A template longer than this is refused (real ones are a few kB; Llama 3.1's is 5 kB).
MAX_TEMPLATE_CHARS = 1 << 17


class ChatTemplateError(ValueError):
    """The template refused the conversation (its own ``raise_exception``) or failed on it."""


class ChatTemplate:
    """A compiled chat template.

    Parameters
    ----------
    source : str
        The Jinja2 text.
    bos_token, eos_token : str
        The text of the tokenizer's BOS and EOS tokens, which templates write out.
    strip_bos : bool
        Drop a leading ``bos_token`` from the rendered text: the tokenizer adds the BOS id
        itself (``add_bos``), and the template's copy would make it two.
    origin : str
        Where the template came from, for messages.
    """

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "",
                 strip_bos: bool = False, origin: str = "the chat template"):
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if not isinstance(source, str) or not source.strip():
            raise CheckpointError(f"{origin}: a chat template must be non-empty text, not "
                                  f"{source!r:.100}")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise CheckpointError(f"{origin}: the chat template has {len(source)} characters; "
                                  f"at most {MAX_TEMPLATE_CHARS} are accepted")
        self.origin = origin
        self.bos_token, self.eos_token, self.strip_bos = bos_token, eos_token, strip_bos
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise CheckpointError(f"{origin}: the chat template does not compile "
                                  f"({one_line(e, 200)})") from None

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (each ``{"role", "content"}``, already checked)."""
        from jinja2 import TemplateError
        try:
            text = self._template.render(messages=messages, bos_token=self.bos_token,
                                         eos_token=self.eos_token,
                                         add_generation_prompt=add_generation_prompt)
        except ChatTemplateError:
            raise
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError,
                ZeroDivisionError, OverflowError, RecursionError) as e:
            # A template is a small program; any of these is it failing on this input.
            raise ChatTemplateError(f"{self.origin} failed on these messages "
                                    f"({type(e).__name__}: {one_line(e, 200)})") from None
        if self.strip_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token):]
        return text


def _raise(message):
    raise ChatTemplateError(f"the chat template refuses these messages: {message}")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def read_hf_template(folder, tokenizer_config) -> tuple[str, str] | None:
    """A Hugging Face folder's template: ``(text, origin)`` or None.

    ``chat_template.jinja`` (what ``transformers`` >= 4.43 writes) wins over the
    ``chat_template`` field of ``tokenizer_config.json``, which is a string or a list of
    ``{"name", "template"}`` (the one named ``default`` is used).
    """
    from pathlib import Path
    folder = Path(folder)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8"), str(jinja)
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{jinja}: cannot read the chat template "
                                  f"({one_line(e, 200)})") from None
    if not isinstance(tokenizer_config, dict) or "chat_template" not in tokenizer_config:
        return None
    origin = f"{folder / 'tokenizer_config.json'}: chat_template"
    t = tokenizer_config["chat_template"]
    if isinstance(t, list):
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        if "default" not in named:
            raise CheckpointError(f"{origin} is a list without a template named 'default' "
                                  f"(names: {sorted(map(str, named))!r:.200})")
        t = named["default"]
    if not isinstance(t, str):
        raise CheckpointError(f"{origin} must be text or a list of {{name, template}}, not "
                              f"{t!r:.100}")
    return t, origin


def for_tokenizer(tok, source: str, origin: str) -> ChatTemplate:
    """``source`` compiled for ``tok`` (an :class:`~.tokenizer.HFTokenizer`): the BOS and EOS
    texts from its vocabulary, a leading BOS dropped where the tokenizer adds its own."""
    def text(i):
        return (tok.tok.id_to_token(int(i)) or "") if i is not None else ""
    return ChatTemplate(source, bos_token=text(tok.bos_id),
                        eos_token=text(tok.eos_ids[0] if tok.eos_ids else None),
                        strip_bos=tok.add_bos, origin=origin)


@functools.cache
def plain_template() -> ChatTemplate:
    """:data:`PLAIN_TEMPLATE`, compiled once."""
    return ChatTemplate(PLAIN_TEMPLATE, origin="the plain chat template")
