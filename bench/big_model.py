"""Memory of N align-batch-worker processes of one big model, with and without shared weights.

Called by bench/big_model.sh (which builds the model); see there. Prints one row per case and
checks the targets of issue 14: Σ PSS of N idle workers ≤ one copy of the weights + N × 150 MiB;
with 4 workers running short files each worker's Shared_Clean + Shared_Dirty ≥ 1 GiB and the
highest Σ PSS ≤ 1.5 × one worker's highest PSS; outputs byte-identical to private copies.
"""
import json
import os
import subprocess
import sys
import threading
import time
import wave

import numpy as np

MIB = 1 << 20


def rollup(pid):
    """smaps_rollup of `pid` in bytes: Rss, Pss, Pss_Shmem, Shared_* and Private_*."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    out["Shared"] = out.get("Shared_Clean", 0) + out.get("Shared_Dirty", 0)
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


class Worker:
    def __init__(self, binary, model, shared, log):
        argv = [binary, "--model", model, "--threads", "1"]
        if shared:
            argv += ["--shared-weights", shared]
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "w"),
                                  text=True, bufsize=1)
        self.ready = None

    def wait_ready(self):
        self.ready = json.loads(self.p.stdout.readline())
        if not self.ready.get("ready"):
            sys.exit(f"big_model.py: worker not ready: {self.ready}")
        if self.ready.get("shared_weights_error"):
            sys.exit(f"big_model.py: weights not shared: {self.ready['shared_weights_error']}")

    def run(self, jobs):
        """Sends `jobs` one at a time and returns their results."""
        results = []
        for job in jobs:
            self.p.stdin.write(json.dumps(job) + "\n")
            self.p.stdin.flush()
            while True:
                r = json.loads(self.p.stdout.readline())
                if "ok" in r:
                    results.append(r)
                    break
        return results

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def start(n, binary, model, shared, tmp, tag):
    ws = [Worker(binary, model, shared, f"{tmp}/{tag}-{i}.log") for i in range(n)]
    for w in ws:
        w.wait_ready()
    time.sleep(1.0)  # let the last one settle (its private copy freed, heap trimmed)
    return ws


def idle_case(n, binary, model, shared, tmp):
    ws = start(n, binary, model, shared, tmp, f"idle{n}{'s' if shared else 'p'}")
    rs = [rollup(w.p.pid) for w in ws]
    weights = ws[0].ready.get("shared_weights_bytes", 0)
    for w in ws:
        w.close()
    if shared:
        os.unlink(shared)
    return rs, weights


def make_audio(tmp, count, seconds):
    """Short 16 kHz files of noise and tones, each with a transcript; the jobs for one worker."""
    rng = np.random.default_rng(14)
    paths = []
    for i in range(count):
        t = np.arange(int(16000 * seconds)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (300 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)
        path = f"{tmp}/short{i}.wav"
        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((x * 32767).astype("<i2").tobytes())
        with open(f"{tmp}/short{i}.txt", "w") as f:
            f.write("she had your dark suit in greasy wash water all year\n")
        paths.append(path)
    return paths


def running_case(n, binary, model, shared, tmp, audio, tag):
    """n workers each aligning every file of `audio`; samples smaps_rollup while they run."""
    ws = start(n, binary, model, shared, tmp, tag)
    before = [rollup(w.p.pid) for w in ws]
    peak_pss = [0] * n
    min_shared = [1 << 62] * n
    peak_sum = [0]
    at_peak = [before]  # every worker's rollup at the highest Σ PSS
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            total, now = 0, []
            for i, w in enumerate(ws):
                try:
                    r = rollup(w.p.pid)
                except OSError:
                    continue
                peak_pss[i] = max(peak_pss[i], r["Pss"])
                min_shared[i] = min(min_shared[i], r["Shared"])
                total += r["Pss"]
                now.append(r)
            if total > peak_sum[0]:
                peak_sum[0], at_peak[0] = total, now
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    outs = [None] * n

    def work(i):
        jobs = [{"id": k, "audio": a, "transcript": a[:-4] + ".txt", "out": f"{tmp}/{tag}-w{i}-{k}", "task": "align"}
                for k, a in enumerate(audio)]
        outs[i] = ws[i].run(jobs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    stop.set()
    sampler.join()
    for w in ws:
        w.close()
    if shared:
        os.unlink(shared)
    for i in range(n):
        for r in outs[i]:
            if not r.get("ok"):
                sys.exit(f"big_model.py: job failed: {r}")
    # Where the memory was: each worker's private pages before its jobs and at the highest Σ PSS,
    # and its own per-job peak RSS (VmHWM reset per job) above its RSS before the jobs.
    detail = {
        "private_before": [b["Private"] for b in before],
        "private_at_peak": [r["Private"] for r in at_peak[0]],
        "job_peak_above_idle": [max(r["peak_rss_bytes"] for r in outs[i]) - before[i]["Rss"] for i in range(n)],
        "idle_after_above_before": [outs[i][-1]["idle_rss_bytes"] - before[i]["Rss"] for i in range(n)],
    }
    return peak_pss, min_shared, peak_sum[0], wall, detail


def outputs(tmp, tag, n, jobs):
    blobs = []
    for i in range(n):
        for k in range(jobs):
            for ext in (".json", ".TextGrid", ".ctm"):
                with open(f"{tmp}/{tag}-w{i}-{k}{ext}", "rb") as f:
                    blobs.append(f.read())
    return blobs


def main():
    binary, model, tmp = sys.argv[1:4]
    idle_ns = [int(x) for x in os.environ.get("IDLE_N", "1 2 4 8").split()]
    private_ns = [int(x) for x in os.environ.get("PRIVATE_N", "1 2 4").split()]
    run_n = int(os.environ.get("RUN_N", "4"))
    files = int(os.environ.get("FILES", "3"))
    seconds = float(os.environ.get("SECONDS_PER_FILE", "4"))
    shm = f"/dev/shm/ab-bench-weights-{os.getpid()}"
    ok = True

    print(f"model {model}: {os.path.getsize(model) / MIB:.0f} MiB file")
    print("idle workers (MiB):  mode     N  ΣPSS  ΣPSS/N  per worker: Rss  Pss  Shared  Private  Pss_Shmem  | target")
    weights = 0
    for shared in (False, True):
        for n in (idle_ns if shared else private_ns):
            rs, w = idle_case(n, binary, model, shm if shared else None, tmp)
            weights = w or weights
            total = sum(r["Pss"] for r in rs)
            r0 = rs[-1]
            line = (f"  {'shared' if shared else 'private':8} {n:2d} {total / MIB:6.0f} {total / n / MIB:6.0f}   "
                    f"{r0['Rss'] / MIB:6.0f} {r0['Pss'] / MIB:5.0f} {r0['Shared'] / MIB:6.0f} "
                    f"{r0['Private'] / MIB:7.0f} {r0.get('Pss_Shmem', 0) / MIB:9.0f}")
            if shared:
                bound = w + n * 150 * MIB
                good = total <= bound
                ok = ok and good
                line += f"  | ≤ {bound / MIB:.0f} (weights {w / MIB:.0f} + {n} × 150): {'ok' if good else 'MISSED'}"
            print(line, flush=True)

    audio = make_audio(tmp, files, seconds)
    print(f"running: {run_n} workers × {files} files of {seconds:.0f} s (align), and 1 worker alone (MiB)")
    for shared in (False, True):
        mode = "shared" if shared else "private"
        alone, _, _, wall1, d1 = running_case(1, binary, model, shm if shared else None, tmp, audio, f"alone-{mode}")
        peaks, min_shared, peak_sum, wall, d = running_case(run_n, binary, model, shm if shared else None, tmp, audio,
                                                            f"run-{mode}")
        ratio = peak_sum / alone[0]
        line = (f"  {mode:8} one alone: highest PSS {alone[0] / MIB:.0f} ({wall1:.1f} s);  {run_n} at once: highest "
                f"ΣPSS {peak_sum / MIB:.0f} = {ratio:.2f} × one alone ({wall:.1f} s); per worker: highest PSS "
                f"{' '.join(f'{p / MIB:.0f}' for p in peaks)}, lowest Shared_Clean+Shared_Dirty "
                f"{' '.join(f'{s / MIB:.0f}' for s in min_shared)}")
        if shared:
            good = ratio <= 1.5 and min(min_shared) >= 1 << 30
            ok = ok and good
            line += f"  | ΣPSS ≤ 1.5 ×, Shared ≥ 1024 each: {'ok' if good else 'MISSED'}"
        print(line, flush=True)
        mib = lambda xs: " ".join(f"{x / MIB:.0f}" for x in xs)
        for label, dd in (("one alone", d1), (f"{run_n} at once", d)):
            print(f"    {mode} {label}: Private before the jobs {mib(dd['private_before'])}, at the highest ΣPSS "
                  f"{mib(dd['private_at_peak'])}; each job's peak RSS above the RSS before the jobs, highest "
                  f"{mib(dd['job_peak_above_idle'])}; idle RSS after the last job above it {mib(dd['idle_after_above_before'])}",
                  flush=True)
    same = (outputs(tmp, "run-private", run_n, files) == outputs(tmp, "run-shared", run_n, files) and
            outputs(tmp, "alone-private", 1, files) == outputs(tmp, "alone-shared", 1, files))
    print(f"outputs (TextGrid, JSON, CTM) shared vs private: {'byte-identical' if same else 'DIFFER'}")
    ok = ok and same
    print("targets:", "all met" if ok else "MISSED (above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
