"""The numpy decoder of the Llama family, with a float32 path and an int8 path.

One forward pass (:meth:`Model.forward`) serves both paths; they differ only at the matmul
dispatch point, :meth:`Model._matmul`, through which every weight matmul goes:

* ``mode="float"``: ``x @ W.T`` in float32 on the host (the reference).
* ``mode="int"``: the whole decoder in integers (:mod:`.intpath`, built on
  :mod:`.arith`): int32 logits out, int8 KV cache; only its weight matmuls go through the
  backend (as :class:`MatmulOp` s of their own).
* ``mode="int8"``: the host quantizes ``x`` with the op's static scale, the backend
  (``model.backend``: :class:`~sparktile.golden_model.backend.NumpyBackend` by default, the RTL
  mesh in hardware-in-the-loop runs) executes the op's
  :class:`~sparktile.golden_model.backend.MatmulOp`, and the host dequantizes (see
  :mod:`sparktile.golden_model.quant`).

In the float and int8 paths everything else stays on the host in float32: embedding lookup,
RMSNorm, rotary embeddings, attention scores, softmax and the attention-weighted sum of
values (the KV cache holds float32), SiLU, residual additions and biases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import arith, intpath
from .backend import Backend, MatmulOp, MatmulShape, NumpyBackend, output_of
from .config import ModelConfig
from .errors import GenerationError
from .quant import ACT_SCALES, CALIBRATION_TEXT, GROUP, QuantLinear, make_linear
from .rope import apply_rope, rope_tables
from .sampling import check_sampling, next_token
from .smoothing import smooth

__all__ = ["MODES", "OUTLIER_RATIO_DYNAMIC", "Model", "KVCache", "Generation"]

#: The numeric paths.
MODES = ("float", "int8", "int")
_LAYER_KINDS = ("q", "k", "v", "o", "gate", "up", "down")
#: ``act_scales="auto"`` picks per-token dynamic scales when the calibration's outlier ratio
#: (largest token's input maximum over the median token's, worst matmul) exceeds this: a
#: static per-tensor scale would leave the median token fewer than 127 / 16 ~ 8 levels.
OUTLIER_RATIO_DYNAMIC = 16.0


def check_group(config: ModelConfig) -> None:
    """Refuse, naming the field, a model whose matmul inputs the ``group`` scheme cannot cut
    into groups of :data:`~.quant.GROUP` channels."""
    for field_, n in (("hidden_size", config.hidden_size),
                      ("num_heads * head_dim", config.num_heads * config.head_dim),
                      ("intermediate_size", config.intermediate_size)):
        if n % GROUP:
            raise GenerationError(f"config {config.name!r}: {field_} = {n} is not a multiple of "
                                  f"{GROUP}, the group size of act_scales='group'; use "
                                  "act_scales='dynamic' or 'static'")


class KVCache:
    """Keys and values (after RoPE) of past positions, grown on demand.

    float32 for the float and int8 paths, int8 (static per-channel scales) for the int path
    (``dtype=np.int8``, :meth:`Model.new_cache` with ``mode="int"``).

    Attributes
    ----------
    length : int
        Positions held.
    """

    def __init__(self, config: ModelConfig, capacity: int = 64, dtype=np.float32):
        self.config = config
        self.length = 0
        shape = (config.num_layers, config.num_kv_heads, max(1, capacity), config.head_dim)
        self.k = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store (T, kv_heads, head_dim) keys/values of ``layer`` after the current length.

        Returns all keys and values of ``layer`` so far, (kv_heads, length + T, head_dim).
        The length advances once per forward pass (:meth:`advance`).
        """
        t = k.shape[0]
        end = self.length + t
        if end > self.k.shape[2]:
            cap = max(end, 2 * self.k.shape[2])
            grow = ((0, 0), (0, 0), (0, cap - self.k.shape[2]), (0, 0))
            self.k = np.pad(self.k, grow)
            self.v = np.pad(self.v, grow)
        self.k[layer, :, self.length:end] = k.transpose(1, 0, 2)
        self.v[layer, :, self.length:end] = v.transpose(1, 0, 2)
        return self.k[layer, :, :end], self.v[layer, :, :end]

    def advance(self, t: int) -> None:
        self.length += t


@dataclass
class Generation:
    """Result of :meth:`Model.generate`.

    Attributes
    ----------
    text : str
        The completion (prompt excluded, stop token excluded).
    token_ids : list of int
        Generated ids (stop token excluded).
    prompt_ids : list of int
        The prompt as fed to the model (BOS included when the tokenizer adds one).
    prefill_s, decode_s : float
        Wall time of the prompt pass and of the one-token passes after it.
    stopped : str
        ``"eos"`` or ``"max_tokens"``.
    """

    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    prefill_s: float
    decode_s: float
    stopped: str
    mode: str = "float"
    steps: int = field(default=0, repr=False)

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: one-token forward passes per second (prefill excluded)."""
        return self.steps / self.decode_s if self.decode_s > 0 else float("nan")

    def __str__(self):
        return self.text


class Model:
    """A Llama / Qwen2 decoder in numpy.

    Parameters
    ----------
    config : ModelConfig
        Shapes and constants.
    weights : dict of str to numpy.ndarray
        float32 tensors under the internal names (:mod:`sparktile.golden_model.config`).
    tokenizer : Tokenizer or None
        Text <-> ids; None for a model used on ids only.
    source : str
        Where it was loaded from (for messages).

    Attributes
    ----------
    backend : Backend
        Executes the int8 path's matmuls; settable (also :meth:`set_backend`).
    """

    def __init__(self, config: ModelConfig, weights: dict, tokenizer=None, source: str = ""):
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.source = source
        self.backend: Backend = NumpyBackend()
        self._qlin: dict[str, QuantLinear] | None = None
        self._qweights: dict[str, np.ndarray] | None = None
        self._calib: dict[str, list[float]] | None = None
        self._calib_extra: dict | None = None
        self._stats: dict | None = None
        self._extra: dict | None = None
        self._int: intpath.IntParams | None = None
        self._calib_tokens: dict = {}
        #: Activation-scale scheme asked for (:data:`~.quant.ACT_SCALES`); ``auto`` is
        #: resolved by calibration into :attr:`act_scales_used`.
        self.act_scales = "auto"
        #: The scheme in use after quantization (``static``, ``dynamic``, ``group``), else None.
        self.act_scales_used: str | None = None
        #: Calibration's activation outlier ratio (see :meth:`quantize`), else None.
        self.outlier_ratio: float | None = None

    def __repr__(self):
        c = self.config
        return (f"Model({c.name!r}, layers={c.num_layers}, d={c.hidden_size}, "
                f"heads={c.num_heads}/{c.num_kv_heads}, vocab={c.vocab_size}, "
                f"backend={self.backend!r})")

    # ------------------------------------------------------------------ matmul sites

    def sites(self) -> list[tuple[str, str, int]]:
        """``(name, kind, layer)`` of every weight matmul, in execution order for one token."""
        out = [(f"layers.{i}.{'attn' if k in ('q', 'k', 'v', 'o') else 'mlp'}.{k}", k, i)
               for i in range(self.config.num_layers) for k in _LAYER_KINDS]
        return out + [("head", "head", -1)]

    def weight(self, site: str) -> np.ndarray:
        """float32 weight matrix (out x in) of a matmul site."""
        if site == "head" and self.config.tie_word_embeddings:
            return self.weights["embed.weight"]
        return self.weights[site + ".weight"]

    def set_backend(self, backend: Backend) -> None:
        """Route the int8 path's matmuls to ``backend`` (anything with ``matmul(op, x_q)``)."""
        if not callable(getattr(backend, "matmul", None)):
            raise TypeError(f"a backend needs a matmul(op, x_q) method; {backend!r} has none")
        self.backend = backend

    def _matmul(self, site: str, x: np.ndarray, mode: str) -> np.ndarray:
        """The dispatch point: ``x`` (T, N) float32 -> (T, M) float32, bias included."""
        if mode == "float":
            y = x @ self.weight(site).T
            if self._calib is not None:
                ax, ay = np.abs(x).max(axis=0), np.abs(y).max(axis=0)
                self._calib_tokens.setdefault(site, []).append(np.abs(x).max(axis=1))
                st = self._calib.get(site)
                self._calib[site] = (ax, ay) if st is None else (np.maximum(st[0], ax),
                                                                 np.maximum(st[1], ay))
            b = self.weights.get(site + ".bias")
            return y + b if b is not None else y
        return self._qlin[site].run(self.backend, x)

    def _matmuls(self, sites: list[str], x: np.ndarray, mode: str) -> list[np.ndarray]:
        """Independent matmuls of one input (q, k and v; gate and up): a backend with
        ``matmul_many([(op, x_q), ...])`` gets them together (a mesh runs them at once on
        disjoint PEs); otherwise, and for the float path or a linear cut into several ops,
        one :meth:`_matmul` after another. The arithmetic is the same either way."""
        many = getattr(self.backend, "matmul_many", None)
        if mode == "float" or many is None or \
                any(len(self._qlin[s].ops) != 1 for s in sites):
            return [self._matmul(s, x, mode) for s in sites]
        lins = [self._qlin[s] for s in sites]
        inputs = [lin.quantize_input(x) for lin in lins]
        ys = many([(lin.op, x_q) for lin, (x_q, _s) in zip(lins, inputs, strict=True)])
        return [lin.dequantize(y, s_x) for lin, y, (_x, s_x) in zip(lins, ys, inputs, strict=True)]

    # ------------------------------------------------------------------ quantization

    def set_act_scales(self, scheme: str) -> None:
        """Choose the activation-scale scheme of the int8 and int paths (re-quantizes on the
        next quantized run): ``"static"``, ``"dynamic"`` or ``"auto"`` (see :meth:`quantize`).
        """
        if scheme not in ACT_SCALES:
            raise GenerationError(f"act_scales must be one of {', '.join(map(repr, ACT_SCALES))}"
                                  f", not {scheme!r}")
        if scheme != self.act_scales:
            self.act_scales = scheme
            self._qlin = self._int = None
            self.act_scales_used = None

    def quantize(self, calibration_text: str | None = None, calibration_ids=None,
                 smooth_alpha: float = 0.65, act_scales: str | None = None) -> None:
        """Calibrate activation scales and build every :class:`MatmulOp` (once).

        Called automatically the first time the int8 path runs. Calibration runs the float
        path over :data:`~sparktile.golden_model.quant.CALIBRATION_TEXT` (or the given text
        or ids), in windows of at most 512 tokens, and records the absolute maximum of each
        matmul's input and output per channel. Then activation outliers are migrated into
        the weights (:mod:`~sparktile.golden_model.smoothing`, strength ``smooth_alpha``; 0
        disables it) and each matmul is quantized (:func:`~.quant.make_linear`).

        ``act_scales`` (default: :attr:`act_scales`, ``"auto"``) picks static per-tensor or
        per-token dynamic input scales for every matmul of the int8 and int paths. ``auto``
        measures the *outlier ratio* over the calibration text: for each matmul input, the
        largest token's absolute maximum over the median token's; the largest ratio over
        all matmuls is :attr:`outlier_ratio`. Above :data:`OUTLIER_RATIO_DYNAMIC` (16: a
        static scale would leave the median token fewer than 8 of int8's 127 levels) the
        scheme is ``group`` (per-token scales for each group of 64 input channels, weights
        per output channel and group: :mod:`~.quant`), else ``static``. ``dynamic`` (one
        scale per token) is there to be asked for.
        """
        if act_scales is not None:
            self.set_act_scales(act_scales)
        if calibration_ids is None:
            text = CALIBRATION_TEXT if calibration_text is None else calibration_text
            if self.tokenizer is not None:
                calibration_ids = self.tokenizer.prompt_ids(text)
            else:  # no vocabulary: a fixed pseudo-random id sequence
                calibration_ids = np.random.default_rng(0).integers(
                    0, self.config.vocab_size, 256).tolist()
        ids = [int(i) for i in calibration_ids]
        if not ids:
            raise ValueError("calibration needs at least one token")
        win = min(512, self.config.max_position_embeddings)
        self._calib, self._calib_extra, self._calib_tokens = {}, {}, {}
        try:
            for s in range(0, len(ids), win):
                self.forward(ids[s:s + win], KVCache(self.config, win), mode="float")
            stats, self._extra = self._calib, self._calib_extra
        finally:
            self._calib = self._calib_extra = None
        ratios = []
        for rows in self._calib_tokens.values():
            a = np.concatenate(rows)
            med = float(np.median(a))
            ratios.append(float(a.max()) / med if med > 0 else 1.0)
        self._calib_tokens = {}
        self.outlier_ratio = max(ratios, default=1.0)
        if self.act_scales == "auto":
            dyn = self.outlier_ratio > OUTLIER_RATIO_DYNAMIC
            self.act_scales_used = "group" if dyn else "static"
        else:
            self.act_scales_used = self.act_scales
        if self.act_scales_used == "group":
            check_group(self.config)
        dynamic = self.act_scales_used in ("dynamic", "group")
        group = GROUP if self.act_scales_used == "group" else 0
        qw, stats = smooth(self.config, self.weights, stats, smooth_alpha)
        self._stats = stats
        self._int = None
        qlin = {}
        for name, kind, layer in self.sites():
            a_in, a_out = stats[name]
            w = qw["head.weight"] if name == "head" else qw[name + ".weight"]
            qlin[name] = make_linear(name, kind, layer, w, a_in.max(),
                                     None if output_of(kind) == "int32" else a_out,
                                     qw.get(name + ".bias"), dynamic=dynamic, group=group)
        self._qweights = qw
        self._qlin = qlin

    def matmul_ops(self) -> list[MatmulOp]:
        """Every :class:`MatmulOp`, in execution order for one token (quantizes if needed).

        The list is the same objects the int8 path executes, so a hardware backend can
        preload all weights and requantization constants before generating.
        """
        if self._qlin is None:
            self.quantize()
        return [op for name, _, _ in self.sites() for op in self._qlin[name].ops]

    def matmul_shapes(self) -> list[MatmulShape]:
        """:meth:`matmul_ops` without quantizing: name, kind, layer, shape and output type of
        every matmul, in the same order (what a fit check or a cycle estimate needs).

        Output types follow the activation-scale scheme: all ``int32`` under ``dynamic``
        and ``group`` (asked for, or resolved by a calibration already run; ``group`` gives
        one shape per group op); before calibration, an ``auto`` model is planned as
        ``static``."""
        scheme = self.act_scales_used or self.act_scales
        out = []
        for name, kind, layer in self.sites():
            m, n = (int(d) for d in self.weight(name).shape)
            if scheme == "group":
                out += [MatmulShape(f"{name}.g{j}", kind, layer, (m, GROUP), "int32")
                        for j in range(n // GROUP)]
            else:
                out.append(MatmulShape(name, kind, layer, (m, n), "int32"
                                       if scheme == "dynamic" else output_of(kind)))
        return out

    def quant_linears(self) -> dict[str, QuantLinear]:
        """The :class:`QuantLinear` of each site (quantizes if needed)."""
        if self._qlin is None:
            self.quantize()
        return dict(self._qlin)

    # ------------------------------------------------------------------ forward

    def new_cache(self, capacity: int = 64, mode: str = "float") -> KVCache:
        """An empty KV cache for this model (int8 for ``mode="int"``, else float32)."""
        return KVCache(self.config, capacity, np.int8 if mode == "int" else np.float32)

    def _check_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise GenerationError(f"mode must be one of {', '.join(map(repr, MODES))}, "
                                  f"not {mode!r}")
        if mode == "int":
            intpath.check_config(self.config)  # before calibrating: refuse early, by field
        if mode in ("int8", "int") and self._qlin is None:
            self.quantize()
        if mode == "int" and self._int is None:
            self._int = intpath.build(self, self._stats, self._extra, self._qweights)

    def int_params(self) -> intpath.IntParams:
        """The int path's constants (calibrates and builds them if needed)."""
        self._check_mode("int")
        return self._int

    @staticmethod
    def float_logits(logits: np.ndarray) -> np.ndarray:
        """Logits as real numbers: the int path's int32 (16 fractional bits) -> float64."""
        if np.issubdtype(logits.dtype, np.integer):
            return logits.astype(np.float64) * 2.0 ** -intpath.LOGIT_FRAC
        return logits

    def _note(self, key: str, amax) -> None:
        """Calibration: keep the running absolute maximum ``amax`` under ``key``."""
        if self._calib_extra is not None:
            old = self._calib_extra.get(key)
            self._calib_extra[key] = amax if old is None else np.maximum(old, amax)

    def forward(self, token_ids, cache: KVCache, mode: str = "float") -> np.ndarray:
        """Run ``token_ids`` (T,) after what ``cache`` holds; return logits (T, vocab).

        float32 logits for ``float`` and ``int8``; int32 logits with 16 fractional bits for
        ``int`` (:meth:`float_logits` converts), which needs an int8 cache
        (``new_cache(n, mode="int")``).

        Raises
        ------
        ValueError
            For an unknown mode, an id outside the vocabulary, or a sequence longer than
            ``max_position_embeddings``.
        """
        self._check_mode(mode)
        c = self.config
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("forward needs at least one token")
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            bad = ids[(ids < 0) | (ids >= c.vocab_size)][0]
            raise GenerationError(f"token id {bad} is outside the vocabulary [0, {c.vocab_size})")
        t, start = ids.size, cache.length
        if start + t > c.max_position_embeddings:
            raise GenerationError(f"sequence of {start + t} tokens exceeds the model's "
                             f"max_position_embeddings ({c.max_position_embeddings})")
        if (mode == "int") != (cache.k.dtype == np.int8):
            raise ValueError(f"mode {mode!r} needs a {'int8' if mode == 'int' else 'float32'} "
                             f"KV cache, not {cache.k.dtype}: use model.new_cache(n, "
                             f"mode={mode!r})")
        if mode == "int":
            return intpath.forward(self, self._int, ids, cache)
        cos, sin = rope_tables(c, np.arange(start, start + t))
        nh, nkv, hd, g = c.num_heads, c.num_kv_heads, c.head_dim, c.kv_group
        # Causal mask over (query t, key start+t): key j visible to query i if j <= start+i.
        mask = np.arange(start + t)[None, :] > (start + np.arange(t))[:, None]
        scale = np.float32(1.0 / np.sqrt(hd))
        x = self.weights["embed.weight"][ids]
        self._note("resid", np.abs(x).max())
        # Host-side norm weights: the int8 path's have the smoothing factors folded in.
        nw = self._qweights if mode == "int8" else self.weights
        for i in range(c.num_layers):
            p = f"layers.{i}."
            h = _rms_norm(x, nw[p + "attn_norm.weight"], c.rms_norm_eps)
            q, k, v = self._matmuls([p + "attn.q", p + "attn.k", p + "attn.v"], h, mode)
            q, k, v = q.reshape(t, nh, hd), k.reshape(t, nkv, hd), v.reshape(t, nkv, hd)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            self._note(p + "rope_q", np.abs(q).max(axis=0))
            self._note(p + "rope_k", np.abs(k).max(axis=0))
            keys, vals = cache.append(i, k, v)                 # (nkv, S, hd)
            qg = q.transpose(1, 0, 2).reshape(nkv, g * t, hd)  # heads of a group together
            s = (qg @ keys.transpose(0, 2, 1)).reshape(nkv, g, t, -1) * scale
            s = np.where(mask, np.float32(-np.inf), s)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            a = (s.reshape(nkv, g * t, -1) @ vals).reshape(nh, t, hd)
            x = x + self._matmul(p + "attn.o", a.transpose(1, 0, 2).reshape(t, nh * hd), mode)
            self._note("resid", np.abs(x).max())
            h = _rms_norm(x, nw[p + "mlp_norm.weight"], c.rms_norm_eps)
            gate, up = self._matmuls([p + "mlp.gate", p + "mlp.up"], h, mode)
            x = x + self._matmul(p + "mlp.down", _silu(gate) * up, mode)
            self._note("resid", np.abs(x).max())
        cache.advance(t)
        h = _rms_norm(x, nw["norm.weight"], c.rms_norm_eps)
        return self._matmul("head", h, mode)

    def logits(self, token_ids, mode: str = "float") -> np.ndarray:
        """Teacher-forced logits (len(token_ids), vocab), one fresh pass (see :meth:`forward`)."""
        ids = list(token_ids)
        return self.forward(ids, self.new_cache(len(ids), mode), mode)

    # ------------------------------------------------------------------ generation

    def generate(self, prompt, max_tokens: int = 64, *, mode: str = "float",
                 temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 stop_at_eos: bool = True, on_token=None) -> Generation:
        """Complete ``prompt`` (text, or a list of token ids) by up to ``max_tokens`` tokens.

        Greedy when ``temperature == 0`` (the default); otherwise samples with
        ``numpy.random.default_rng(seed)`` after temperature, top-k and top-p filtering.
        The prompt is run in one pass (prefill), then one token per pass with the KV cache.
        ``on_token(id)`` is called with each new id as it is produced.
        """
        if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
            raise GenerationError(f"max_tokens must be a positive integer, not {max_tokens!r}")
        check_sampling(temperature, top_k, top_p)
        self._check_mode(mode)
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise GenerationError(f"model {self.source or self.config.name!r} has no "
                                 "tokenizer; pass the prompt as a list of token ids")
            ids = self.tokenizer.prompt_ids(prompt)
        else:
            ids = [int(i) for i in prompt]
        if not ids:
            raise GenerationError("the prompt is empty (and the tokenizer adds no BOS)")
        limit = self.config.max_position_embeddings
        if len(ids) + max_tokens > limit:
            raise GenerationError(f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                             f"the model's max_position_embeddings ({limit})")
        rng = np.random.default_rng(seed)
        eos = set(self.config.eos_token_ids)
        if self.tokenizer is not None:
            eos |= set(self.tokenizer.eos_ids)
        cache = self.new_cache(len(ids) + max_tokens, mode)
        t0 = time.perf_counter()
        logits = self.forward(ids, cache, mode)[-1]
        t1 = time.perf_counter()
        out, stopped, steps = [], "max_tokens", 0
        while True:
            if mode == "int" and temperature == 0:
                tok = arith.argmax_int(logits)      # integer greedy: lowest index on ties
            else:
                tok = next_token(self.float_logits(logits), rng, temperature, top_k, top_p)
            if stop_at_eos and tok in eos:
                stopped = "eos"
                break
            out.append(tok)
            if on_token is not None:
                on_token(tok)
            if len(out) == max_tokens:
                break
            logits = self.forward([tok], cache, mode)[-1]
            steps += 1
        t2 = time.perf_counter()
        text = self.tokenizer.decode(out) if self.tokenizer is not None else ""
        return Generation(text=text, token_ids=out, prompt_ids=ids, prefill_s=t1 - t0,
                          decode_s=t2 - t1, stopped=stopped, mode=mode, steps=steps)


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(var + np.float32(eps))) * w


def _silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88 gives the right limit, 0
        return x / (np.float32(1) + np.exp(-x))
