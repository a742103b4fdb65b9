#!/usr/bin/env python3
"""slurm_timeline: where an align-batch --executor slurm run's makespan went (bench/slurm.sh LOGS=DIR).

Reads DIR/sacct.txt (sacct -P: JobIDRaw|JobID|State|ReqMem|Submit|Start|End, whole seconds), the
task histories DIR/.align-batch/slurm/run-R/array-K/I.sqlite (each task's align-batch run start and
end and its jobs' start and end, in ms) and DIR/marks.txt (NAME MARK T0 T1: a contestant's first
job id and its wall-clock span), and prints for run R per task and in sum: Slurm's start (Start to
the task's align-batch start), align-batch's start-up (to its first job), the jobs, its end (last
job to its run's end) and Slurm's end (to End); then the node's memory requested by running tasks
over the run against its RealMemory, and the time it sat with room for a pending task.
Usage: bench/slurm_timeline.py DIR RUN NAME [REAL_MB]
"""
import glob
import os
import sqlite3
import sys
from datetime import datetime


def mib(s):
    s = s.strip()
    if not s:
        return 0.0
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    return float(s[:-1]) * units[s[-1]] if s[-1] in units else float(s) / 1048576


def epoch(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").timestamp() if s and s[0].isdigit() else None


def main():
    logs, run, name = sys.argv[1], sys.argv[2], sys.argv[3]
    real_mb = float(sys.argv[4]) if len(sys.argv) > 4 else 1500
    marks = [l.split() for l in open(os.path.join(logs, "marks.txt"))]
    sacct = [l.rstrip("\n").split("|") for l in open(os.path.join(logs, "sacct.txt"))]
    for k, (who, mark, t0, t1) in enumerate(marks):
        upper = int(marks[k + 1][1]) if k + 1 < len(marks) else 1 << 62
        tasks = {f[1]: {"state": f[2], "req": mib(f[3]), "submit": epoch(f[4]), "start": epoch(f[5]), "end": epoch(f[6])}
                 for f in sacct if len(f) >= 7 and f[0].isdigit() and int(mark) < int(f[0]) <= upper}
        memory(who, tasks, float(t0), float(t1), real_mb)
        if who == name:
            parts(logs, run, name, tasks)


def memory(name, tasks, t0, t1, real_mb):
    """The node's memory requested by running tasks (Slurm's Start..End), sampled every 0.1 s."""
    if not tasks:
        return
    steps, busy, room, running_sum = 0, 0.0, 0, 0
    x = t0
    while x < t1:
        running = [t for t in tasks.values() if t["start"] and t["start"] <= x < (t["end"] or t1)]
        pending = [t for t in tasks.values() if t["submit"] and t["submit"] <= x and (not t["start"] or t["start"] > x)]
        used = sum(t["req"] for t in running)
        busy += used / real_mb
        running_sum += len(running)
        if pending and used + min(p["req"] for p in pending) <= real_mb and len(running) < 8:
            room += 1
        steps += 1
        x += 0.1
    task_s = sum((t["end"] or t1) - t["start"] for t in tasks.values() if t["start"])
    print(f"{name}: {len(tasks)} tasks, makespan {t1 - t0:.1f} s, {task_s:.0f} task-s (Slurm's whole seconds), "
          f"{running_sum / steps:.1f} running on average, requesting {100 * busy / steps:.0f}% of RealMemory; "
          f"{room / 10:.1f} s with a pending task that would have fit")


def parts(logs, run, name, tasks):
    """Each task's time by part, from its own history (ms) and sacct's Start/End."""
    # The task histories: array-K/I.sqlite belongs to the K-th array submitted in this run.
    arrays = sorted({k.split("_")[0] for k in tasks}, key=int)
    rows = []
    for db in glob.glob(os.path.join(logs, ".align-batch", "slurm", "run-" + run, "array-*", "*.sqlite")):
        k = int(os.path.basename(os.path.dirname(db)).split("-")[1])
        i = os.path.basename(db).split(".")[0]
        if k >= len(arrays):
            continue
        t = tasks.get(arrays[k] + "_" + i)
        if not t:
            continue
        c = sqlite3.connect(db)
        r = c.execute("SELECT min(started_at_ms), max(ended_at_ms) FROM runs").fetchone()
        j = c.execute("SELECT min(started_at_ms), max(finished_at_ms), sum(wall_s), count(*) FROM jobs").fetchone()
        c.close()
        if r[0] is None or j[0] is None:
            continue
        t.update(ab_start=r[0] / 1000, ab_end=(r[1] or j[1]) / 1000, job_start=j[0] / 1000, job_end=j[1] / 1000,
                 job_s=j[2], jobs=j[3])
        rows.append(t)
    if not rows:
        print("slurm_timeline: no task histories for run", run)
        return
    spent = {"slurm start": 0.0, "align-batch start-up": 0.0, "jobs": 0.0, "align-batch end": 0.0, "slurm end": 0.0}
    req_s = {k: 0.0 for k in spent}
    for t in rows:
        spans = {"slurm start": t["ab_start"] - t["start"], "align-batch start-up": t["job_start"] - t["ab_start"],
                 "jobs": t["job_end"] - t["job_start"], "align-batch end": t["ab_end"] - t["job_end"],
                 "slurm end": t["end"] - t["ab_end"]}
        for k, v in spans.items():
            spent[k] += v
            req_s[k] += v * t["req"]
    total = sum(spent.values())
    print(f"  {name}: {len(rows)} tasks, {sum(t['jobs'] for t in rows)} jobs; task time by part "
          "(Slurm's Start/End are whole seconds, so the two Slurm parts are +-1 s each):")
    for k in spent:
        print(f"    {k:22s} {spent[k]:7.1f} task-s ({100 * spent[k] / total:4.1f}%)  {req_s[k]:8.0f} MiB*s requested")


if __name__ == "__main__":
    main()
