"""Several search workers on one study: the speed-up of 2 workers against 1 on this machine.

    python benchmarks/workers.py [--model digits-cnn] [--data digits-cnn] [--limit 256]
                                 [--trials 40] [--repeats 2] [--out out/workers]

Each configuration runs the same `imcc search` command in N worker processes on a fresh study
of a throwaway PostgreSQL server (tests/postgres.py: Debian's postgresql package, as `.ci/run`
installs it) and is timed from the first worker's start to the last one's end: process
start-up, each worker's clean-up and calibration, and the database round trips included.

- `sensitivity` on targets/hybrid.hw: the designs are fixed by the menu (every layer alone
  under every mechanism, then the composed ones), so the workers divide a known amount of work
  (search/evaluations.py: claims in the database).
- `pareto` on targets/hybrid.hw: optuna's TPE, each worker asking the study for the next trial
  until `--trials` are finished (search/storage.py).

Configurations: 1 worker with one thread (`OMP_NUM_THREADS=1`), 1 worker with the machine's
threads (torch and BLAS default: what one user runs), and 2 workers with one thread each. The
speed-up is the one-worker time over the two-worker time; the evaluations each run performed
are counted from the workers' pareto.json (`trials.this_run`) so that equal work is visible.
The best of `--repeats` runs counts for each (the machine's load varies). Writes
`workers.md` and `workers.json` in `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.postgres import postgres_server  # noqa: E402

CONFIGURATIONS = (
    ("1 worker, 1 thread", 1, "1"),
    ("1 worker, all threads", 1, None),
    ("2 workers, 1 thread each", 2, "1"),
)
"""(label, workers, OMP_NUM_THREADS per worker or None for the default)."""


def command(args: argparse.Namespace, strategy: str, url: str, study: str, out: Path) -> list[str]:
    """Return one worker's `imcc search` command line."""
    return [
        sys.executable, "-m", "imcc", "search", args.model, "--target", "hybrid",
        "--data", args.data, "--strategy", strategy, "--limit", str(args.limit),
        "--probe", str(min(args.probe, args.limit)), "--check", str(args.limit),
        "--max-accuracy-drop", str(args.max_accuracy_drop), "--trials", str(args.trials),
        "--random-trials", "0", "--storage", url, "--study", study, "--out", str(out),
    ]  # fmt: skip


def run(args: argparse.Namespace, strategy: str, url: str, study: str, workers: int,
        threads: str | None, out: Path) -> tuple[float, list[int]]:  # fmt: skip
    """Run `workers` processes on a fresh study; return the wall time and each one's
    evaluations."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(name, None)
        if threads is not None:
            env[name] = threads
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            command(args, strategy, url, study, out / f"w{i}"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err}")
    seconds = time.perf_counter() - start
    ran = [
        json.loads((out / f"w{i}" / "pareto.json").read_text())["trials"]["this_run"]
        for i in range(workers)
    ]
    return seconds, ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--data", default="digits-cnn")
    parser.add_argument("--limit", type=int, default=256, help="accuracy samples per evaluation")
    parser.add_argument("--probe", type=int, default=64)
    parser.add_argument("--trials", type=int, default=40, help="pareto: trials per study")
    parser.add_argument("--max-accuracy-drop", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration")
    parser.add_argument("--strategies", default="sensitivity,pareto")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "workers")
    args = parser.parse_args()
    from tqdm import tqdm

    strategies = args.strategies.split(",")
    rows = []
    runs = len(strategies) * len(CONFIGURATIONS) * args.repeats
    with postgres_server() as url, tqdm(total=runs, desc="runs") as bar:
        for strategy in strategies:
            for label, workers, threads in CONFIGURATIONS:
                best: tuple[float, list[int]] | None = None
                for repeat in range(args.repeats):
                    study = f"{strategy}-{workers}-{threads}-{repeat}"
                    out = args.out / "runs" / study
                    timed = run(args, strategy, url, study, workers, threads, out)
                    if best is None or timed[0] < best[0]:
                        best = timed
                    bar.update()
                assert best is not None
                rows.append(
                    {
                        "strategy": strategy,
                        "configuration": label,
                        "workers": workers,
                        "threads": threads or "default",
                        "seconds": best[0],
                        "evaluations": best[1],
                    }
                )
    for row in rows:
        one = next(
            r
            for r in rows
            if r["strategy"] == row["strategy"] and r["configuration"] == CONFIGURATIONS[0][0]
        )
        row["speedup"] = one["seconds"] / row["seconds"]
    lines = [
        f"# {len(rows) // len(CONFIGURATIONS)} strategies, 1 and 2 workers "
        f"({args.model} on hybrid, {args.limit} samples per evaluation, {os.cpu_count()} CPUs, "
        f"best of {args.repeats})",
        "",
        "| strategy | configuration | wall time | evaluations per worker "
        "| speed-up vs 1 worker, 1 thread |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['strategy']} | {row['configuration']} | {row['seconds']:.1f} s | "
            f"{' + '.join(map(str, row['evaluations']))} | {row['speedup']:.2f}x |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workers.md").write_text("\n".join(lines) + "\n")
    (args.out / "workers.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
