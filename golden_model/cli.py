"""``sparktile generate`` and ``sparktile eval``: the golden model from the command line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from sparktile.errors import UserError
from sparktile.report import check_output

__all__ = ["generate_command", "eval_command"]


@click.command("generate")
@click.option("--prompt", required=True, help="Text to complete.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--model", "model_path", default="default", show_default=True,
              help="'default' (the shipped model), a checkpoint folder or a .gguf file.")
@click.option("--mode", type=click.Choice(["float", "int8", "int"]), default="float",
              show_default=True, help="int8: weight matmuls in int8; int: every op in integers.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Sample with this seed (default: greedy unless --temperature is set).")
@click.option("--temperature", type=click.FloatRange(min=0.0), default=None,
              help="Sampling temperature; 0 is greedy. Default: 0.8 with --seed, else 0.")
@click.option("--top-k", type=click.IntRange(min=1), default=None)
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None)
@click.option("--act-scales", type=click.Choice(["auto", "static", "dynamic", "group"]),
              default="auto", show_default=True,
              help="Activation scales of int8/int: static per tensor, dynamic per token, "
                   "group (per token and 64 channels); auto: by calibration's outliers.")
def generate_command(prompt, max_tokens, model_path, mode, seed, temperature, top_k, top_p,
                     act_scales):
    """Complete PROMPT with the golden model; print the completion and tokens/s."""
    from .load import load_model
    from .tokenizer import TextStream

    if temperature is None:
        temperature = 0.8 if seed is not None else 0.0
    model = load_model(model_path)
    model.set_act_scales(act_scales)
    click.echo(prompt, nl=False)
    # Stream to a terminal (whole when piped).
    stream = TextStream(model.tokenizer) if sys.stdout.isatty() else None

    def on_token(tok):
        if stream:
            click.echo(stream.push(tok), nl=False)

    g = model.generate(prompt, max_tokens, mode=mode, temperature=temperature, top_k=top_k,
                       top_p=top_p, seed=seed, on_token=on_token)
    click.echo(stream.rest(g.text) if stream else g.text, nl=False)
    click.echo("")
    click.echo(f"[{model.config.name}, {mode}: {len(g.token_ids)} tokens, prefill "
               f"{len(g.prompt_ids)} tokens in {g.prefill_s:.2f} s, decode "
               f"{g.tokens_per_s:.1f} tokens/s, stopped at {g.stopped}]", err=True)


@click.command("eval")
@click.option("--model", "model_path", default="default", show_default=True,
              help="'default', a checkpoint folder or a .gguf file.")
@click.option("--data", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False),
              help="Folder of .py files (searched recursively).")
@click.option("--mode", "modes", type=click.Choice(["float", "int8", "int"]), multiple=True,
              default=("float", "int8"), show_default=True, help="Repeat for several.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None,
              help="Only the first N bytes of the files (sorted by path).")
@click.option("--window", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help='Also write {mode: {"bits_per_byte", "n_bytes", "n_tokens"}}.')
@click.option("--act-scales", type=click.Choice(["auto", "static", "dynamic", "group"]),
              default="auto", show_default=True,
              help="Activation scales of int8/int: static per tensor, dynamic per token, "
                   "group (per token and 64 channels); auto: by calibration's outliers.")
def eval_command(model_path, data_dir, modes, max_bytes, window, json_path, act_scales):
    """Bits per byte of a model on the Python files under --data (float and int8 by default)."""
    from .evaluate import bits_per_byte, python_files
    from .load import load_model

    if json_path is not None:
        json_path = check_output(json_path, "--json")  # before the evaluation, not after it
    model = load_model(model_path)
    model.set_act_scales(act_scales)
    files = python_files(data_dir, max_bytes)
    res, report = {}, {}
    for mode in dict.fromkeys(modes):
        r = bits_per_byte(model, files, mode=mode, window=window)
        res[mode] = r.bpb
        report[mode] = {"bits_per_byte": r.bpb, "n_bytes": r.n_bytes, "n_tokens": r.n_tokens}
        click.echo(f"{mode:5s}: {r.bpb:.4f} bits/byte  ({r.n_files} files, {r.n_bytes} bytes, "
                   f"{r.n_tokens} tokens)")
    for other in ("int8", "int"):
        if "float" in res and other in res:
            d = res[other] - res["float"]
            click.echo(f"{other} - float: {d:+.4f} bits/byte ({100 * d / res['float']:+.2f} %)")
    if json_path is not None:
        _write_report(json_path, json.dumps(report, indent=2) + "\n")


def _write_report(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file and a rename, so a failure never leaves a
    half-written report; if the final path fails, say where the report went instead."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent)
                               else ".")
    os.fchmod(fd, 0o644)  # mkstemp makes it private; a report is an ordinary file
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"--json {path}: cannot write ({e.strerror}); the report is in "
                        f"{tmp}") from None
