"""Train the shipped code model, ``sparktile-code-tiny``, on CPython's standard library.

Reproduces ``golden_model/data/`` (``config.json`` + ``model.safetensors``)::

    pip install -e '.[train]'          # CPU torch
    nice -n 10 python scripts/train_code_model.py --out golden_model/data

The model is a Llama-family decoder (RMSNorm, rotary embeddings, grouped-query attention,
SwiGLU, tied head) over a byte vocabulary, sized so that its int8 matmul weights fit in the
default 8x8 mesh (64 PEs x 16 KiB): d_model 128, 4 layers, 4 query heads of 32, 2 KV heads,
FFN 352 -> 770,048 bytes of int8 weights (752 KiB <= 768 KiB, the rest of the SRAM being
left for activations and the KV cache). Every matmul dimension is a multiple of 32.

The corpus is the ``.py`` files of the running interpreter's standard library
(:mod:`sparktile.golden_model.corpus`: PSF License; test suites left out), split by whole
files; the held-out 5 % is never seen here. Byte 0 (NUL, absent from Python source) starts
every file and serves as BOS. Everything is seeded; on one CPU thread the default schedule
takes about 25 minutes.

The torch module below is written out in full (no transformers) and matches
:class:`sparktile.golden_model.model.Model`'s float path; the test suite checks that.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover
    raise SystemExit("train_code_model.py needs torch: pip install -e '.[train]'") from e

from sparktile.golden_model.corpus import SPLIT_SEED, split_files, stdlib_root
from sparktile.golden_model.safetensors_io import write_safetensors

CONFIG = {
    "format": "sparktile-llama",
    "format_version": 1,
    "name": "sparktile-code-tiny",
    "vocab_size": 256,
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "num_kv_heads": 2,
    "head_dim": 32,
    "intermediate_size": 352,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "max_position_embeddings": 512,
    "bos_token_id": 0,
    "eos_token_id": None,
    "tokenizer": "bytes",
}


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    # Non-interleaved ("rotate half") convention, as Hugging Face Llama.
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["hidden_size"], c["head_dim"]
        self.nh, self.nkv, self.hd = c["num_heads"], c["num_kv_heads"], hd
        self.attn_norm = RMSNorm(d, c["rms_norm_eps"])
        self.q = nn.Linear(d, self.nh * hd, bias=False)
        self.k = nn.Linear(d, self.nkv * hd, bias=False)
        self.v = nn.Linear(d, self.nkv * hd, bias=False)
        self.o = nn.Linear(self.nh * hd, d, bias=False)
        self.mlp_norm = RMSNorm(d, c["rms_norm_eps"])
        f = c["intermediate_size"]
        self.gate = nn.Linear(d, f, bias=False)
        self.up = nn.Linear(d, f, bias=False)
        self.down = nn.Linear(f, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class TinyLlama(nn.Module):
    """The shipped architecture in torch (tied head)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["num_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        hd = c["head_dim"]
        inv = 1.0 / c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        pos = torch.arange(c["max_position_embeddings"], dtype=torch.float64)
        ang = torch.outer(pos, inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        for blk in self.layers:
            for lin in (blk.q, blk.k, blk.v, blk.gate, blk.up):
                nn.init.normal_(lin.weight, std=0.02)
            for lin in (blk.o, blk.down):  # GPT-2 style scaled residual init
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * c["num_layers"]))

    def forward(self, idx):
        t = idx.shape[1]
        x = self.embed(idx)
        cos, sin = self.cos[:t], self.sin[:t]
        for blk in self.layers:
            x = blk(x, cos, sin)
        return self.norm(x) @ self.embed.weight.T

    def state_numpy(self) -> dict[str, np.ndarray]:
        """Weights under the project format's tensor names (see ``golden_model/checkpoint.py``)."""
        out = {"embed.weight": self.embed.weight, "norm.weight": self.norm.weight}
        for i, blk in enumerate(self.layers):
            p = f"layers.{i}."
            out[p + "attn_norm.weight"] = blk.attn_norm.weight
            out[p + "mlp_norm.weight"] = blk.mlp_norm.weight
            for n in ("q", "k", "v", "o"):
                out[p + f"attn.{n}.weight"] = getattr(blk, n).weight
            for n in ("gate", "up", "down"):
                out[p + f"mlp.{n}.weight"] = getattr(blk, n).weight
        return {k: v.detach().float().cpu().numpy().copy() for k, v in out.items()}


def load_corpus(files, root) -> np.ndarray:
    """Concatenate files as bytes, each preceded by the BOS byte 0."""
    parts = []
    for f in files:
        parts.append(b"\x00")
        parts.append((root / f).read_bytes())
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("golden_model/data"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--heldout-dir", type=Path, default=None,
                    help="also copy the held-out files here (for `sparktile eval --data`)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    root = stdlib_root()
    train_files, held = split_files(root)
    if args.heldout_dir is not None:
        for f in held:
            dst = args.heldout_dir / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / f, dst)
    data = load_corpus(train_files, root)
    val = load_corpus(held, root)
    print(f"corpus {root}: {len(train_files)} train files ({data.size} bytes), "
          f"{len(held)} held out ({val.size} bytes)", flush=True)

    model = TinyLlama(CONFIG)
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    other = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warm = max(1, args.steps // 30)

    def lr_at(s):
        if s < warm:
            return args.lr * (s + 1) / warm
        frac = (s - warm) / max(1, args.steps - warm)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def batch(src, n):
        starts = rng.integers(0, src.size - args.seq_len - 1, size=n)
        x = np.stack([src[s:s + args.seq_len + 1] for s in starts]).astype(np.int64)
        return torch.from_numpy(x[:, :-1]), torch.from_numpy(x[:, 1:])

    vrng_state = np.random.default_rng(args.seed + 1)
    vstarts = vrng_state.integers(0, val.size - args.seq_len - 1, size=32)
    vx = np.stack([val[s:s + args.seq_len + 1] for s in vstarts]).astype(np.int64)
    vx, vy = torch.from_numpy(vx[:, :-1]), torch.from_numpy(vx[:, 1:])

    t0 = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batch(data, args.batch)
        loss = F.cross_entropy(model(x).view(-1, CONFIG["vocab_size"]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            with torch.no_grad():
                vl = F.cross_entropy(model(vx).view(-1, CONFIG["vocab_size"]), vy.reshape(-1))
            print(f"step {step:5d}  loss {loss.item():.3f} ({loss.item() / math.log(2):.3f} "
                  f"bpb)  held-out {vl.item() / math.log(2):.3f} bpb  "
                  f"{time.time() - t0:.0f}s", flush=True)

    cfg = dict(CONFIG)
    cfg["training"] = {
        "corpus": f"CPython {'.'.join(map(str, __import__('sys').version_info[:3]))} "
                  "standard library .py files (PSF License), tests excluded",
        "split": f"whole files, sha256('{SPLIT_SEED}:<path>') < 5% held out "
                 f"({len(held)} files)",
        "train_files": len(train_files),
        "train_bytes": int(data.size),
        "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len,
        "lr": args.lr, "seed": args.seed, "seconds": round(time.time() - t0),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_safetensors(args.out / "model.safetensors", model.state_numpy(),
                      metadata={"format": "sparktile-llama", "name": cfg["name"]})
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"wrote {args.out / 'model.safetensors'} and config.json", flush=True)


if __name__ == "__main__":
    main()
