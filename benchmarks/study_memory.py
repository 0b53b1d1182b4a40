"""Which job of a study sets its peak memory: runs `spillover run STUDY --out OUT` as a child process,
samples the child's resident set size (RSS, from /proc via psutil) every `--interval` seconds, and after
the run attributes the samples to jobs by the start and end times the study's store (`OUT/results.db`)
recorded for each job. Prints every job's peak RSS (highest first) and the whole run's peak — the
kernel's own maximum for the child (`getrusage(RUSAGE_CHILDREN).ru_maxrss`, what `/usr/bin/time -v`
prints), which a sample can miss between two looks. `--csv` also writes the samples.

    .venv/bin/python benchmarks/study_memory.py studies/multitask.yaml --out /tmp/runs/multitask-mem

The study runs in-process (the local executor), one job at a time, so a job's samples are the process's
memory while that job ran (plus what earlier jobs left allocated). Run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import csv
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil

GB = 1e9


def sample(proc: subprocess.Popen, interval: float) -> list[tuple[float, int]]:
    """(wall time, RSS bytes) of `proc` and its children until it exits."""
    ps, samples = psutil.Process(proc.pid), []
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
        except psutil.Error:  # exited (or a child did) between the two looks
            rss = None
        if rss is not None:
            samples.append((time.time(), rss))
        time.sleep(interval)
    return samples


def job_spans(out: Path) -> list[tuple[str, float, float]]:
    """(name, started, finished) of every finished job in the study's store, in start order."""
    with sqlite3.connect(out / "results.db") as db:
        rows = db.execute(
            "SELECT name, started, finished FROM jobs WHERE finished IS NOT NULL ORDER BY started"
        ).fetchall()
    return [(name, float(a), float(b)) for name, a, b in rows]


def per_job_peaks(
    spans: list[tuple[str, float, float]], samples: list[tuple[float, int]]
) -> list[tuple[str, float, int]]:
    """(job, seconds, peak RSS bytes of the samples taken while it ran; 0 if none), highest peak first."""
    peaks = []
    for name, a, b in spans:
        inside = [rss for t, rss in samples if a <= t <= b]
        peaks.append((name, b - a, max(inside, default=0)))
    return sorted(peaks, key=lambda p: -p[2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="the study YAML")
    ap.add_argument("--out", required=True, help="an empty (or new) output folder for the run")
    ap.add_argument("--interval", type=float, default=0.25, help="seconds between RSS samples (0.25)")
    ap.add_argument("--top", type=int, default=12, help="jobs to print, highest peak first (12)")
    ap.add_argument("--csv", help="also write the samples (seconds since start, RSS bytes) here")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        ap.error(f"--out {out}: the folder is not empty; give a new one (a resumed run skips done jobs)")
    spillover = Path(sys.executable).with_name("spillover")
    t0 = time.time()
    proc = subprocess.Popen([str(spillover), "run", args.study, "--out", str(out)])
    samples = sample(proc, args.interval)
    wall = time.time() - t0
    kernel_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    if proc.returncode:
        print(f"spillover run exited with {proc.returncode}", file=sys.stderr)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", "rss_bytes"])
            w.writerows((round(t - t0, 3), rss) for t, rss in samples)
    peaks = per_job_peaks(job_spans(out), samples)
    print(f"\n{args.study}: {wall:.0f} s wall, {len(peaks)} jobs, {len(samples)} samples")
    print(f"peak RSS (kernel, ru_maxrss): {kernel_peak / GB:.2f} GB = {kernel_peak / 2**30:.2f} GiB")
    print(f"peak RSS (sampled):           {max((r for _, r in samples), default=0) / GB:.2f} GB")
    print(f"\n{'job':<48} {'seconds':>8} {'peak RSS GB':>12}")
    for name, seconds, peak in peaks[: args.top]:
        print(f"{name[:48]:<48} {seconds:>8.1f} {peak / GB:>12.2f}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
