"""Tokenizers: raw bytes, ``tokenizer.json`` files, and the vocabulary inside a GGUF file.

All three share one small interface, :class:`Tokenizer`: ``encode(text) -> list[int]``
(no special tokens added), ``decode(ids) -> str`` (special tokens dropped), ``vocab_size``,
``bos_id``, ``eos_ids`` and ``add_bos`` (whether a prompt should start with ``bos_id``).
"""

from __future__ import annotations

from sparktile.errors import one_line

from .errors import CheckpointError

__all__ = ["Tokenizer", "ByteTokenizer", "HFTokenizer", "gguf_bpe_tokenizer", "TextStream"]

# Pre-tokenization split patterns of llama.cpp's byte-level BPE variants (``tokenizer.ggml.pre``),
# as in the corresponding Hugging Face tokenizer.json files.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class Tokenizer:
    """Common interface (see module docstring)."""

    vocab_size: int
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    add_bos: bool = False
    #: The checkpoint's own chat template (:class:`~.chat.ChatTemplate`), where it has one.
    chat_template = None

    def encode(self, text: str) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, ids) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def prompt_ids(self, text: str) -> list[int]:
        """``encode(text)``, preceded by ``bos_id`` when ``add_bos``."""
        ids = self.encode(text)
        if self.add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids


class TextStream:
    """The text of a generation as its tokens arrive, released piece by piece.

    A byte-level token can end in the middle of a UTF-8 character, which decodes as U+FFFD;
    that tail is held back until the token that completes it arrives, so a streamed copy never
    shows a replacement character the whole text does not have.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.shown = 0          # characters released so far

    def push(self, token: int) -> str:
        """Add ``token``; return the text that may be released now (possibly "")."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        out, self.shown = text[self.shown:], len(text)
        return out

    def rest(self, text: str) -> str:
        """What of the generation's final ``text`` has not been released yet."""
        return text[self.shown:]


class ByteTokenizer(Tokenizer):
    """One token per UTF-8 byte (ids 0..255); the shipped model's vocabulary.

    Parameters
    ----------
    bos_id : int or None
        Id prepended to prompts (the shipped model uses 0, the NUL byte, absent from source).
    """

    vocab_size = 256

    def __init__(self, bos_id: int | None = None, eos_ids=()):
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.add_bos = bos_id is not None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        special = {self.bos_id, *self.eos_ids}
        data = bytes(int(i) for i in ids if int(i) not in special)
        return data.decode("utf-8", errors="replace")

    def __repr__(self):
        return f"ByteTokenizer(bos_id={self.bos_id})"


class HFTokenizer(Tokenizer):
    """A :class:`tokenizers.Tokenizer` (``tokenizer.json``) behind the common interface.

    Parameters
    ----------
    tok : tokenizers.Tokenizer
        The tokenizer.
    bos_id, eos_ids, add_bos
        Special-token policy (from the checkpoint's config, not the tokenizer).
    """

    def __init__(self, tok, bos_id=None, eos_ids=(), add_bos=False, source=""):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.add_bos = bool(add_bos) and bos_id is not None
        self.source = source

    @classmethod
    def from_file(cls, path, **kw) -> HFTokenizer:
        """Load a ``tokenizer.json``."""
        from tokenizers import Tokenizer as _Tok

        try:
            tok = _Tok.from_file(str(path))
        except Exception as e:  # the Rust side raises its own exception type
            raise CheckpointError(f"{path}: cannot load tokenizer "
                                  f"({one_line(e, 300)})") from None
        return cls(tok, source=str(path), **kw)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def __repr__(self):
        return f"HFTokenizer({self.source!r}, vocab={self.vocab_size})"


def gguf_bpe_tokenizer(tokens, merges, token_types=None, pre="gpt2", bos_id=None,
                       eos_ids=(), add_bos=False, source="") -> HFTokenizer:
    """Byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2) from a GGUF file's vocabulary.

    Parameters
    ----------
    tokens : list of str
        ``tokenizer.ggml.tokens``, in id order (byte-level, GPT-2 byte-to-unicode alphabet).
    merges : list of str
        ``tokenizer.ggml.merges``, ``"a b"`` per merge, by priority.
    token_types : list of int, optional
        ``tokenizer.ggml.token_type``; types 3 (control) and 4 (user defined) become
        special tokens, matched whole in text and dropped by ``decode``.
    pre : str
        ``tokenizer.ggml.pre``: ``smollm``, ``llama-bpe``/``llama3``, ``qwen2`` select their
        own split patterns; anything else uses GPT-2's.
    """
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as _Tok

    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise CheckpointError(f"{source}: malformed BPE merge {m!r:.100} (expected "
                                  "'a b')")
        pairs.append((a, b))
    try:
        tok = _Tok(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    except Exception as e:  # the Rust side raises its own exception type
        raise CheckpointError(f"{source}: the BPE vocabulary and merges do not fit together "
                              f"({one_line(e, 300)})") from None
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pattern = {"llama-bpe": _LLAMA3, "llama3": _LLAMA3, "qwen2": _QWEN2}.get(pre, _GPT2)
    steps = [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), byte_level]
    if pre == "smollm":
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    if token_types is not None:
        special = [AddedToken(t, special=True, normalized=False)
                   for t, ty in zip(tokens, token_types, strict=True) if ty in (3, 4)]
        if special:
            tok.add_special_tokens(special)
    return HFTokenizer(tok, bos_id=bos_id, eos_ids=eos_ids, add_bos=add_bos, source=source)
