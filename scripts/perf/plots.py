"""Plots of the wafer-scale extrapolation (matplotlib, the optional ``plot`` extra).

One PNG, three panels: decode tokens/s per user against model size on wse2 and wse3; tokens/s
against context length for the chosen model; where the time goes per token.
"""

from __future__ import annotations

from sparktile.errors import UserError

__all__ = ["PlotError", "plot_report", "check_plotting"]


class PlotError(UserError, RuntimeError):
    """matplotlib is missing, or the figure could not be written."""


def check_plotting() -> None:
    """Raise :class:`PlotError` now if plots cannot be drawn (before the work they follow)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError("--plot needs matplotlib, which is not installed: "
                        "pip install 'sparktile[plot]' (or run without --plot)") from None


def plot_report(path, cfg, hw, dtype, context, prompt_tokens, timing, reduce, *,
                hw_file=None, sets=None, decoder=None) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plots need matplotlib, which is not installed: "
                        "pip install 'sparktile[plot]' (or run without --plot)") from None
    from .estimate import estimate
    from .gemv_time import CATEGORIES
    from .hardware import load_hardware
    from .models import MODELS, load_model_config
    from .placement import PlacementError

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    # 1. tokens/s against model size, wse2 and wse3.
    ax = axes[0]
    for preset in ("wse2", "wse3"):
        h = load_hardware(preset, toml_path=hw_file if preset == hw.name else None,
                          sets=sets if preset == hw.name else None)
        if h.lanes(dtype) < 1:
            continue
        pts = []
        for name in MODELS:
            if name == "sparktile-code-tiny":
                continue
            c, _ = load_model_config(name)
            r = estimate(c, h, dtype, context=context, prompt_tokens=prompt_tokens,
                         timing=timing, reduce=reduce, decoder=decoder)
            pts.append((r["params"] / 1e9, r["decode"]["tokens_per_s_per_user"], name,
                        r["fit"]["wafers"]))
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=preset)
        for x, y, name, w in pts:
            ax.annotate(f"{name} ({w}w)", (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (billions)")
    ax.set_ylabel("decode tokens/s per user")
    ax.set_title(f"decode vs model size ({dtype}, context {context})")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    # 2. tokens/s against context length.
    ax = axes[1]
    ctxs, tps = [], []
    c = 512
    while c <= 1 << 20:
        try:
            r = estimate(cfg, hw, dtype, context=c, prompt_tokens=prompt_tokens, timing=timing,
                         reduce=reduce, decoder=decoder)
        except PlacementError:
            break
        ctxs.append(c)
        tps.append(r["decode"]["tokens_per_s_per_user"])
        c *= 2
    ax.plot(ctxs, tps, "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("decode tokens/s per user")
    ax.set_title(f"{cfg.name} {dtype} on {hw.name} (wafers as needed)")
    ax.grid(True, which="both", alpha=0.3)
    # 3. where the time goes.
    ax = axes[2]
    labels, stacks = [], []
    for name in MODELS:
        mc, _ = load_model_config(name)
        try:
            r = estimate(mc, hw, dtype, context=context, prompt_tokens=prompt_tokens,
                         timing=timing, reduce=reduce, decoder=decoder)
        except (PlacementError, ValueError):
            continue
        labels.append(name)
        stacks.append([r["decode"]["breakdown_s"][k] * 1e6 for k in CATEGORIES])
    bottom = [0.0] * len(labels)
    for i, k in enumerate(CATEGORIES):
        vals = [s[i] for s in stacks]
        ax.bar(labels, vals, bottom=bottom, label=k)
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    ax.set_ylabel("us per token")
    ax.set_title(f"where the time goes ({hw.name}, {dtype})")
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)
