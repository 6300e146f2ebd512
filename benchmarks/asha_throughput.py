"""What early stopping buys: the same sweep (random search over a wide learning-rate range, every trial
running the same number of epochs) under the same time budget, without a scheduler and with ASHA
reading the per-epoch objective, side by side in one run. Prints trials ended (finished + stopped
early) per mode and their ratio, and the best objective each found.

    python benchmarks/asha_throughput.py --budget 240 --epochs 9
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.sweep_scale import job, measure


def run(scheduler: str, args: argparse.Namespace) -> dict:
    spec = job(args.trials, args.method, args.concurrency, scheduler, args.budget, args.epochs, args.num_train)
    spec["sweep"]["reduction_factor"] = args.reduction_factor
    with tempfile.TemporaryDirectory() as tmp:
        found = measure(spec, Path(tmp))
    rows = [r for r in found["rows"] if r["method"] == args.method and not r["trial_id"].startswith("preset")]
    ended = [r for r in rows if r["status"] in ("finished", "stopped")]
    objectives = [r["objective"] for r in rows if r["status"] == "finished" and r["objective"] is not None
                  and math.isfinite(r["objective"])]
    return {"trials_ended": len(ended), "finished": sum(r["status"] == "finished" for r in rows),
            "stopped_early": sum(r["status"] == "stopped" for r in rows),
            "best_objective": round(min(objectives), 3) if objectives else None, "job_wall_s": round(found["wall"], 1)}


def _in_fresh_process(mode: str) -> dict:
    """Each mode in its own process, as a user runs a job (a second job in one process inherits the first's
    Ray instance and its stopped trials' leftovers, which skewed the second measurement)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.asha_throughput", *sys.argv[1:], "--only", mode],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=240.0, help="sweep time budget (s), the same for both")
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--method", default="finetune")
    ap.add_argument("--trials", type=int, default=500, help="upper bound: the budget ends each sweep")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--num-train", type=int, default=3000)
    ap.add_argument("--reduction-factor", type=int, default=3)
    ap.add_argument("--only", choices=["none", "asha"], help=argparse.SUPPRESS)  # one mode, JSON on the last line
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.only:
        print(json.dumps(run(args.only, args)))
        return
    plain, asha = _in_fresh_process("none"), _in_fresh_process("asha")
    ratio = asha["trials_ended"] / plain["trials_ended"] if plain["trials_ended"] else float("nan")
    print(json.dumps({"budget_s": args.budget, "epochs": args.epochs, "no_scheduler": plain, "asha": asha,
                      "trials_ratio_asha_over_none": round(ratio, 2)}, indent=2))


if __name__ == "__main__":
    main()
