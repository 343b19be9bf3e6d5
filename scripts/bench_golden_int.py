"""Quality and speed of the integer-only path beside float and int8, in one run.

    python -m sparktile.scripts.bench_golden_int [--max-bytes 150000] [--ablation]
        [--tokens 32] [--json out.json] [--model PATH] [--data DIR]
        [--act-scales auto|static|dynamic|group]

* **Bits per byte** of ``float``, ``int8`` and ``int`` on the held-out standard-library
  files (:func:`sparktile.golden_model.corpus.split_files`; the first ``--max-bytes`` bytes,
  files sorted by path, windows of 256 predictions as ``sparktile eval``).
* **Teacher-forced top-1 agreement** with the float path on the same positions.
* **Ablation** (``--ablation``): one approximation of the int path at a time, everything else
  float32 (with the smoothed weights, which leave the float function unchanged):
  ``norm`` (integer RMSNorm, int8 output), ``rope`` (int8 q/k, Q1.14 RoPE, int8 k cache and the
  folded q scales), ``softmax`` (integer scores and softmax, Q0.15 probabilities), ``silu``
  (int8 gate/up, SiLU table, requantized product), ``resid`` (the int32 residual format),
  ``pv`` (int8 v cache, requantized attention output); ``matmuls`` is the int8 path itself.
* **Decode tokens/s** of greedy decoding (prefill excluded) in each mode.

A measurement, not a test: it prints and returns the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from sparktile.golden_model import arith, load_model
from sparktile.golden_model.corpus import split_files, stdlib_root
from sparktile.golden_model.evaluate import _log_softmax_at, python_files
from sparktile.golden_model.model import _rms_norm, _silu
from sparktile.golden_model.rope import apply_rope, rope_tables

MODES = ("float", "int8", "int")
ABLATIONS = ("norm", "rope", "softmax", "silu", "pv", "resid")
PROMPT = "def fibonacci(n):\n"


def heldout_texts(max_bytes: int | None, data: Path | None = None) -> list[tuple[str, str]]:
    """The held-out stdlib files (or ``data``'s .py files), first ``max_bytes`` bytes."""
    if data is not None:
        return python_files(data, max_bytes)
    root = stdlib_root()
    out, total = [], 0
    for rel in split_files()[1]:
        text = (root / rel).read_bytes().decode("utf-8", errors="replace")
        if max_bytes is not None:
            room = max_bytes - total
            if room <= 0:
                break
            text = text.encode()[:room].decode("utf-8", errors="ignore")
        out.append((rel, text))
        total += len(text.encode())
    return out


def windows(model, texts, window: int = 256):
    """``(ids, targets, n_bytes_or_0)`` per window, as :func:`evaluate.bits_per_byte` cuts."""
    tok = model.tokenizer
    window = min(window, model.config.max_position_embeddings - 1)
    for _, text in texts:
        ids = tok.encode(text)
        if tok.add_bos and tok.bos_id is not None:
            seq, nb = [tok.bos_id] + ids, len(text.encode())
        else:
            seq, nb = ids, len(text.encode()) - len(tok.decode(ids[:1]).encode())
        if len(seq) < 2:
            continue
        for s in range(0, len(seq) - 1, window):
            chunk = seq[s:s + window + 1]
            yield chunk[:-1], np.asarray(chunk[1:]), (nb if s == 0 else 0)


def hybrid_logits(model, ids, op: str) -> np.ndarray:
    """Float forward (smoothed weights) with the int path's version of ``op`` only."""
    m, c, p = model, model.config, model.int_params()
    qw = m._qweights
    ids = np.asarray(ids)
    t = ids.size
    nh, nkv, hd, g = c.num_heads, c.num_kv_heads, c.head_dim, c.kv_group
    cos, sin = rope_tables(c, np.arange(t))
    mask = np.arange(t)[None, :] > np.arange(t)[:, None]
    s_r = 2.0 ** -p.frac

    def lin(name, x):
        b = qw.get(name + ".bias")
        y = x @ qw[name + ".weight"].T
        return y + b if b is not None else y

    def resid(x):
        if op != "resid":
            return x
        return arith.sat(np.rint(x / s_r), 32) * s_r

    nb = 32 if p.dynamic else 8          # dynamic: wide outputs, quantized per token later

    def norm(x, w, n, s_h):
        if op != "norm":
            return _rms_norm(x, w, c.rms_norm_eps)
        xi = arith.sat(np.rint(x / s_r), 32)
        return arith.rms_norm_int(xi, p.eps_q, *n, bits=nb).astype(np.float64) * s_h

    def q8(x, s):
        return np.clip(np.rint(x / s), -127, 127).astype(np.int8)

    def q16(x, s):
        return arith.sat(np.rint(x / s), 16)

    x = resid(qw["embed.weight"][ids].astype(np.float64))
    for i, L in enumerate(p.layers):
        pre, sc = f"layers.{i}.", L.scales
        h = norm(x, qw[pre + "attn_norm.weight"], L.n1, sc["s_h1"])
        q = lin(pre + "attn.q", h).reshape(t, nh, hd)
        k = lin(pre + "attn.k", h).reshape(t, nkv, hd)
        v = lin(pre + "attn.v", h).reshape(t, nkv, hd)
        if op == "rope":
            cq, sq = p.cos_q[:t], p.sin_q[:t]
            kc = np.repeat(sc["s_kc"], g, axis=0)
            qq = q16 if p.dynamic else q8         # dynamic: int16 q/k before RoPE
            q = arith.rope_int(qq(q, sc["s_q"]), cq, sq, *L.q_rope) * sc["sigma"][:, None] / kc
            k = arith.rope_int(qq(k, sc["s_k"]), cq, sq, *L.k_rope) * sc["s_kc"]
        else:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if op == "pv":
            v = q8(v, sc["s_v"].reshape(nkv, hd)) * sc["s_v"].reshape(nkv, hd)
        qg = q.transpose(1, 0, 2).reshape(nkv, g * t, hd)
        raw = (qg @ k.transpose(1, 2, 0)).reshape(nkv, g, t, t)
        if op == "softmax":
            sig = sc["sigma"].reshape(nkv, g, 1, 1)
            sint = arith.sat(np.rint(raw / sig), 32)
            pr = arith.softmax_int(sint, *L.sm, mask=mask) * 2.0 ** -arith.PROB_FRAC
        else:
            s = np.where(mask, -np.inf, raw / math.sqrt(hd))
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
        a = (pr.reshape(nkv, g * t, t) @ v.transpose(1, 0, 2)).reshape(nh, t, hd)
        a = a.transpose(1, 0, 2).reshape(t, nh * hd)
        if op == "pv" and not p.dynamic:
            a = q8(a, L.o.s_x) * L.o.s_x
        x = resid(x + lin(pre + "attn.o", a))
        h = norm(x, qw[pre + "mlp_norm.weight"], L.n2, sc["s_h2"])
        gate, up = lin(pre + "mlp.gate", h), lin(pre + "mlp.up", h)
        if op == "silu":
            if p.dynamic:
                mm = arith.gate_up_int16(q16(gate, sc["s_g"] / 256), q16(up, sc["s_u"] / 256),
                                         L.silu, *L.gu)
            else:
                mm = arith.gate_up_int(q8(gate, sc["s_g"]), q8(up, sc["s_u"]), L.silu, *L.gu)
            mm = mm * L.down.s_x
        else:
            mm = _silu(gate) * up
        x = resid(x + lin(pre + "mlp.down", mm))
    h = norm(x, qw["norm.weight"], p.norm, p.s_head_in)
    return h @ qw["head.weight"].T


def quality(model, texts, ablation: bool) -> dict:
    """Bits per byte and top-1 agreement with float, per mode (and per ablation)."""
    names = list(MODES) + ([f"ablate:{a}" for a in ABLATIONS] if ablation else [])
    bits = dict.fromkeys(names, 0.0)
    agree = dict.fromkeys(names, 0)
    secs = dict.fromkeys(names, 0.0)
    n_bytes = n_tok = 0
    for ids, tgt, nb in windows(model, texts):
        ref = None
        for name in names:
            t0 = time.perf_counter()
            if name.startswith("ablate:"):
                z = hybrid_logits(model, ids, name.split(":")[1])
            else:
                z = model.float_logits(model.logits(ids, mode=name))
            secs[name] += time.perf_counter() - t0
            if ref is None:
                ref = z.argmax(1)
            bits[name] -= _log_softmax_at(z, tgt).sum() / math.log(2)
            agree[name] += int((z.argmax(1) == ref).sum())
        n_bytes += nb
        n_tok += len(tgt)
    return {n: {"bits_per_byte": bits[n] / n_bytes, "top1_agreement": agree[n] / n_tok,
                "n_bytes": n_bytes, "n_tokens": n_tok, "eval_s": secs[n]} for n in names}


def decode_speed(model, tokens: int) -> dict:
    out = {}
    for mode in MODES:
        model.generate(PROMPT, 2, mode=mode)        # calibration and tables out of the timing
        g = model.generate(PROMPT, tokens, mode=mode, stop_at_eos=False)
        out[mode] = g.tokens_per_s
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=None,
                    help="folder of .py files (default: the held-out stdlib files)")
    ap.add_argument("--max-bytes", type=int, default=150_000)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--act-scales", default="auto",
                    choices=("auto", "static", "dynamic", "group"))
    args = ap.parse_args(argv)
    model = load_model(args.model)
    model.set_act_scales(args.act_scales)
    t0 = time.perf_counter()
    model.int_params()
    prep = time.perf_counter() - t0
    texts = heldout_texts(args.max_bytes, args.data)
    q = quality(model, texts, args.ablation)
    f = q["float"]["bits_per_byte"]
    print(f"{model.config.name}: {len(texts)} files, {q['float']['n_bytes']} bytes, "
          f"{q['float']['n_tokens']} tokens (calibration + int tables: {prep:.1f} s)")
    print(f"activation scales: {model.act_scales_used} (asked: {model.act_scales}; "
          f"calibration outlier ratio {model.outlier_ratio:.1f})")
    print(f"{'path':16s} {'bits/byte':>10s} {'vs float':>9s} {'top-1 = float':>14s}")
    for name, r in q.items():
        b = r["bits_per_byte"]
        print(f"{name:16s} {b:10.4f} {100 * (b - f) / f:+8.2f}% {r['top1_agreement']:14.4f}")
    sp = decode_speed(model, args.tokens)
    print(f"decode tokens/s ({args.tokens} tokens, greedy, prefill excluded): " +
          ", ".join(f"{k} {v:.1f}" for k, v in sp.items()))
    res = {"model": model.config.name, "act_scales": model.act_scales_used,
           "outlier_ratio": model.outlier_ratio, "quality": q, "decode_tokens_per_s": sp,
           "int_frac_bits": model.int_params().frac}
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
