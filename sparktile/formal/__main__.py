"""``python -m sparktile.formal [NAME ...] [--keep DIR]``: run the proofs, print the table,
exit 1 when a proof fails or a mutant passes (the run that ``make formal`` starts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import PROOFS, run_all
from .runner import FormalToolError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sparktile.formal")
    ap.add_argument("names", nargs="*", help=f"proofs to run (default all: "
                                             f"{', '.join(p.name for p in PROOFS)})")
    ap.add_argument("--keep", type=Path, default=None,
                    help="folder for the counterexample VCDs of the failing runs")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.names) - {p.name for p in PROOFS})
    if unknown:
        print(f"error: unknown proof(s) {', '.join(unknown)}; known: "
              f"{', '.join(p.name for p in PROOFS)}", file=sys.stderr)
        return 2
    try:
        results = run_all(args.names or None, keep=args.keep)
    except FormalToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wrong = [p.name for p, r in results if r.status != p.expect]
    if wrong:
        print(f"FAIL: {', '.join(wrong)} did not give the expected verdict", file=sys.stderr)
        return 1
    print(f"PASS: {sum(p.expect == 'pass' for p, _ in results)} proofs hold, "
          f"{sum(p.expect == 'fail' for p, _ in results)} mutants fail them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
