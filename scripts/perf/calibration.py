"""Calibration: the free parameters of the GEMV cycle model fitted to RTL measurements.

The PE's cycle model (:class:`~sparktile.compiler.cycle_model.GemvTiming`: per-task overheads
and per-hop latencies) is linear in them; :func:`fit_timing` solves it by least squares from
GEMV cycle counts that the RTL's counters measured (``sparktile calibrate`` runs the
:mod:`~sparktile.cosim.benches.calibration` bench). ``fill`` and ``drain`` always appear as a
sum, so their sum is fitted and split in the ratio of the RTL reading (3:3). The result is
saved in the user's cache folder; the package ships one (``scripts/perf/data``).

Version 2 of the file adds ``decoder``: the on-fabric decoder's per-op terms (attention
scores, softmax, weighted sum, norm; :mod:`.decoder_terms`), which the wafer estimate uses for
attention and norms. A version-1 file still loads: its GEMV timing is used, and the decoder
terms come from the shipped file, which :func:`load_decoder_terms` says.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from sparktile.errors import UserError

from ...compiler.cycle_model import GemvTiming, gemv_cycles
from ...toolchain import cache_dir
from .gemv_time import accumulator_passes

__all__ = ["CalibrationError", "FIT_PARAMS", "FITTED_TIMING", "fit_timing", "predict_cycles",
           "default_calibration_path", "save_calibration", "load_calibration",
           "shipped_calibration", "CALIBRATION_FORMAT", "FIT_CASES", "HELDOUT_CASES",
           "measure", "run_calibration", "CALIBRATION_VERSION", "load_decoder_terms"]


class CalibrationError(UserError, ValueError):
    """Calibration data that cannot determine the parameters, or an unreadable file."""


FIT_PARAMS = ("fill_drain", "x_hop", "p_hop", "desc", "vec")
#: The GemvTiming fields a calibration sets (``fill_drain`` is split evenly into two).
FITTED_TIMING = ("fill", "desc", "x_hop", "vec", "p_hop", "drain")


def _features(run: dict, acc_depth: int) -> tuple[list[float], float]:
    """The cycle model as ``features . params + fixed`` for one run."""
    rows, cols = (int(v) for v in str(run["mesh"]).split("x"))
    m, n, b = run["m"], run["n"], run["batch"]
    m_pe = math.ceil(m / rows)
    nw = math.ceil(math.ceil(n / 4) / cols)
    ps = accumulator_passes(m_pe, acc_depth)
    fixed = sum(b * (r * nw + r) for r in ps)
    if not run.get("out_int32", False):
        fixed += GemvTiming().requant   # a pipeline depth read off the RTL, not fitted
    return [1.0, rows - 1.0, cols - 1.0, float(len(ps)), float(b * len(ps))], float(fixed)


def fit_timing(runs: list[dict], *, acc_depth: int = 256) -> tuple[GemvTiming, dict]:
    """Least-squares fit of the GemvTiming fields to measured ``runs``.

    Each run needs ``mesh`` ("RxC"), ``m``, ``n``, ``batch`` and ``cycles``. Returns the timing
    and a report (parameters, residual per run, rank).

    Raises
    ------
    CalibrationError
        If the runs cannot separate the parameters (too few meshes, batches or passes).
    """
    if len(runs) < len(FIT_PARAMS):
        raise CalibrationError(f"calibration needs at least {len(FIT_PARAMS)} runs, not "
                               f"{len(runs)}")
    rows = [_features(r, acc_depth) for r in runs]
    a = np.array([f for f, _ in rows])
    y = np.array([r["cycles"] - fixed for r, (_, fixed) in zip(runs, rows, strict=True)])
    rank = int(np.linalg.matrix_rank(a))
    if rank < len(FIT_PARAMS):
        raise CalibrationError(
            f"the runs determine only {rank} of the {len(FIT_PARAMS)} parameters "
            f"({', '.join(FIT_PARAMS)}): use meshes with at least three different (rows, cols) "
            "spans, more than one batch size and a case with two accumulator passes")
    sol, *_ = np.linalg.lstsq(a, y, rcond=None)
    p = dict(zip(FIT_PARAMS, (float(v) for v in sol), strict=True))
    timing = GemvTiming(fill=p["fill_drain"] / 2, desc=p["desc"], x_hop=p["x_hop"],
                        vec=p["vec"], p_hop=p["p_hop"], drain=p["fill_drain"] / 2)
    residuals = []
    for r in runs:
        pred = predict_cycles(r, timing, acc_depth)
        residuals.append({"mesh": r["mesh"], "m": r["m"], "n": r["n"], "batch": r["batch"],
                          "cycles": r["cycles"], "predicted": pred,
                          "error_pct": 100.0 * (pred - r["cycles"]) / r["cycles"]})
    return timing, {"params": p, "rank": rank, "runs": residuals,
                    "max_abs_error_pct": max(abs(x["error_pct"]) for x in residuals)}


def predict_cycles(run: dict, timing: GemvTiming, acc_depth: int = 256) -> float:
    rows, cols = (int(v) for v in str(run["mesh"]).split("x"))
    return gemv_cycles(run["m"], run["n"], run["batch"], rows, cols, acc_depth=acc_depth,
                       out_int32=run.get("out_int32", False), timing=timing)


CALIBRATION_FORMAT = "sparktile-calibration"
#: 2: with the decoder's terms (``decoder``); 1: GEMV timing only.
CALIBRATION_VERSION = 2


def shipped_calibration():
    """The calibration the package ships (``scripts/perf/data/calibration.json``), as an
    importlib resource."""
    from importlib.resources import files
    return files("sparktile.scripts.perf").joinpath("data/calibration.json")


def default_calibration_path() -> Path:
    """Where ``sparktile calibrate`` writes, and the estimate looks first."""
    return cache_dir() / "calibration.json"


def save_calibration(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in data.items() if k not in ("format", "version")}
    version = CALIBRATION_VERSION if data.get("decoder") else 1
    path.write_text(json.dumps({"format": CALIBRATION_FORMAT, "version": version, **data},
                               indent=1))


def _read(path=None) -> tuple[dict, str]:
    """The calibration record and where it came from: ``path``, else the user's
    ``calibrate`` output, else the shipped file."""
    if path is None:
        user = default_calibration_path()
        if user.is_file():
            path = user
    try:
        if path is None:
            text = shipped_calibration().read_text()
            origin = "shipped scripts/perf/data/calibration.json"
        else:
            text = Path(path).read_text()
            origin = str(path)
        d = json.loads(text)
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CalibrationError(f"cannot read calibration {str(path)!r}: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
        raise CalibrationError(f"calibration file {origin!r}: format must be "
                               f"{CALIBRATION_FORMAT!r}")
    return d, origin


def load_calibration(path=None) -> tuple[GemvTiming, str]:
    """The calibrated timing: ``path``, else the user's ``calibrate`` output, else the shipped
    file (``scripts/perf/data/calibration.json``)."""
    d, origin = _read(path)
    try:
        t = d["timing"]
        # Only the fitted costs come from the file: ``requant``, ``link`` and ``ramp`` are
        # pipeline depths of the RTL configuration (and files older than them lack them).
        return GemvTiming(**{k: float(t[k]) for k in FITTED_TIMING}), origin
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"cannot read calibration {origin!r}: {exc}") from None


def _decoder_terms(d: dict, origin: str) -> dict | None:
    from .decoder_terms import DECODER_OPS, TERMS
    dec = d.get("decoder")
    if not dec:
        return None
    try:
        return {op: {t: float(dec["terms"][op][t]) for t in TERMS[op]} for op in DECODER_OPS}
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"calibration {origin!r}: its decoder terms are unreadable "
                               f"({exc}); rerun sparktile calibrate") from None


def load_decoder_terms(path=None) -> tuple[dict | None, str]:
    """The on-fabric decoder's per-op terms (:mod:`.decoder_terms`) and where they came from.

    From the same file as :func:`load_calibration`; a file without them (version 1, written
    before the decoder terms existed) gives the shipped file's, and the origin says so.
    ``(None, why)`` only when the shipped file has none either."""
    d, origin = _read(path)
    terms = _decoder_terms(d, origin)
    if terms is not None:
        return terms, origin
    shipped = json.loads(shipped_calibration().read_text())
    terms = _decoder_terms(shipped, "shipped scripts/perf/data/calibration.json")
    note = (f"{origin} has no decoder terms (version {d.get('version', 1)}, older than them; "
            f"rerun sparktile calibrate)")
    if terms is None:
        return None, note + "; the shipped file has none either: analytic attention and norms"
    return terms, note + "; shipped scripts/perf/data/calibration.json's used"


# ---------------------------------------------------------------------- measuring

#: (rows, cols) -> GEMV cases used for the fit: three (rows-1, cols-1) spans, batches 1-4,
#: and two-pass cases (m_pe > 256) so every parameter is determined.
FIT_CASES = {
    (1, 1): [{"m": 300, "n": 40, "batch": 2}, {"m": 20, "n": 24, "batch": 3}],
    (2, 2): [{"m": 24, "n": 40, "batch": 1}, {"m": 600, "n": 16, "batch": 2}],
    (2, 3): [{"m": 33, "n": 70, "batch": 2}, {"m": 10, "n": 100, "batch": 4}],
}
#: Meshes and shapes the fit never sees.
HELDOUT_CASES = {
    (3, 2): [{"m": 45, "n": 64, "batch": 2}, {"m": 30, "n": 60, "batch": 1}],
    (4, 4): [{"m": 64, "n": 200, "batch": 3}, {"m": 100, "n": 96, "batch": 1}],
}


#: The fields of each measured GEMV that a calibration keeps (and :func:`fit_timing` reads).
RUN_FIELDS = ("mesh", "m", "n", "batch", "seed", "match", "status", "cycles", "model_cycles",
              "m_pe", "nw_pe", "mac_utilization", "task_errors")


def measure(cases: dict, *, seed: int = 1, echo=None) -> list[dict]:
    """Run every case on the RTL (one simulator start per mesh); bit-exact checked."""
    from ...cosim.benches.calibration import gemv_sweep
    from ...cosim.sim.session import run_job
    from ...hdl.mesh import MeshShape

    runs = []
    for (rows, cols), items in cases.items():
        t0 = time.perf_counter()
        args = {"cases": [{**c, "seed": seed + i} for i, c in enumerate(items)]}
        res = run_job(MeshShape(rows, cols), gemv_sweep, args, seed=seed)
        for r in res.runs:
            if not r.match or r.status != "complete":
                raise CalibrationError(f"GEMV {r.m}x{r.n} batch {r.batch} on "
                                       f"{rows}x{cols} did not complete bit-exactly: "
                                       f"status {r.status}, first difference {r.first_diff}")
            runs.append({k: getattr(r, k) for k in RUN_FIELDS})
        if echo:
            echo(f"  {rows}x{cols}: {len(items)} GEMVs in {time.perf_counter() - t0:.1f} s")
    return runs


def run_calibration(fit_cases=None, heldout_cases=None, *, seed: int = 1, echo=None,
                    part: str = "all", base=None) -> dict:
    """Measure, fit, and check the fit on held-out runs. Returns the calibration record.

    ``part``: ``"all"``, ``"gemv"`` (the GEMV timing only) or ``"decoder"`` (the decoder's
    terms only; the GEMV part is kept from the calibration ``base``, a path or None for the
    usual lookup of :func:`load_calibration`)."""
    if part not in ("all", "gemv", "decoder"):
        raise CalibrationError(f"part must be 'all', 'gemv' or 'decoder', not {part!r}")
    if part == "decoder":
        rec, _ = _read(base)
        rec = {k: v for k, v in rec.items() if k not in ("format", "version", "decoder")}
    else:
        rec = _gemv_calibration(fit_cases, heldout_cases, seed=seed, echo=echo)
    if part != "gemv":
        from .decoder_terms import DecoderTermsError, run_decoder_calibration
        try:
            rec["decoder"] = run_decoder_calibration(seed=seed, echo=echo)
        except DecoderTermsError as exc:
            raise CalibrationError(str(exc)) from None
    rec["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return rec


def _gemv_calibration(fit_cases=None, heldout_cases=None, *, seed: int = 1, echo=None) -> dict:
    fit_runs = measure(fit_cases or FIT_CASES, seed=seed, echo=echo)
    timing, fit = fit_timing(fit_runs)
    held = []
    for r in measure(heldout_cases or HELDOUT_CASES, seed=seed + 100, echo=echo):
        pred = predict_cycles(r, timing)
        held.append({"mesh": r["mesh"], "m": r["m"], "n": r["n"], "batch": r["batch"],
                     "cycles": r["cycles"], "predicted": pred,
                     "error_pct": 100.0 * (pred - r["cycles"]) / r["cycles"]})
    return {"timing": timing.as_dict(), "fit": fit, "heldout": held,
            "heldout_max_abs_error_pct": max(abs(h["error_pct"]) for h in held),
            "rtl": {"sram_kb": 16, "acc_depth": 256},
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
