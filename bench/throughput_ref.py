"""The Python/PyTorch peer for bench/throughput.sh: forced alignment as a researcher would script it.

    /usr/bin/python3 bench/throughput_ref.py --model MODEL.pt --root CORPUS --out OUT [--threads 1]
                                             [--times TIMES.jsonl] [--window-s S --context-s S] FILE...

For each audio FILE (under CORPUS; the transcript is <stem>.txt or <stem>.lab beside it): read the
audio (16 kHz 16-bit mono WAV with the `wave` module; anything else, or another rate, decoded and
resampled to the model's rate by a `sox` subprocess, whose cost counts as this peer's), run the
TorchScript model over the whole file at once (torch.jit.load, loaded once per process; or, with
--window-s/--context-s, over the worker's own windows, stitched as it stitches them), CTC
Viterbi over the emissions in numpy with full back-pointers (bench/ctc_viterbi.py, shared with
bench/accuracy.py), and write OUT/<path under CORPUS without extension>.json with the word timings as
align-batch-worker writes them ({"words": [{"text", "start_s", "end_s"}]}; a word starts at the
first frame of its first character and ends after the last frame of its last one).

One process per file (GNU parallel, model loaded each time) and one process per core over a part
of the list are both just this script with one FILE or many. Exit status 1 if any file failed
(each named on stderr); the others are still written.
"""
import time

START_S = time.perf_counter()  # before `import torch`: the load time below includes the import

import argparse
import json
import os
import subprocess
import sys
import wave

import numpy as np
import torch

from ctc_viterbi import encode, viterbi


def read_audio(path, rate):
    """float32 samples in [-1, 1] at `rate`, mono."""
    if path.lower().endswith(".wav"):
        with wave.open(path, "rb") as w:
            if w.getframerate() == rate and w.getnchannels() == 1 and w.getsampwidth() == 2:
                return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    raw = subprocess.run(["sox", path, "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1",
                          "-r", str(rate), "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0


def transcript_for(path):
    stem = os.path.splitext(path)[0]
    for ext in (".txt", ".lab"):
        if os.path.exists(stem + ext):
            with open(stem + ext, encoding="utf-8") as f:
                return f.read()
    raise FileNotFoundError(f"no transcript {stem}.txt or {stem}.lab")


def log_probs(net, info, x):
    """[frames, labels] log-probabilities of one forward over `x` [1, N]."""
    with torch.inference_mode():
        e, n = net(x, torch.tensor([x.size(1)]))
        logp = e[0, :int(n[0])]
        if info["outputs"] == "logits":
            logp = torch.log_softmax(logp, -1)
    return logp.numpy()


def whole_file_emissions(net, info, x):
    return log_probs(net, info, x)


def emissions(net, info, x, window):
    """The worker's windows (worker/windowed_emissions.cpp): `window` = (window_s, context_s); each
    window's own frames plus context frames on both sides go to the model, context frames are
    dropped, the last window keeps everything it got."""
    spf, rate = info["samples_per_frame"], info["sample_rate"]
    window_frames = max(1, round(window[0] * rate / spf))
    context_frames = max(0, round(window[1] * rate / spf))
    n = x.size(1)
    parts, frame = [], 0
    while True:
        left = min(context_frames, frame)
        want_end = (frame + window_frames + context_frames) * spf
        end = min(want_end, n)
        last = want_end > n  # the worker sees the end only once a read comes back empty
        if end - frame * spf < spf:
            break
        logp = log_probs(net, info, x[:, (frame - left) * spf:end])
        take = logp.shape[0] if last else min(logp.shape[0], left + window_frames)
        if take <= left:
            break
        parts.append(logp[left:take])
        frame += take - left
        if last:
            break
    return np.concatenate(parts)


def align_file(net, info, path, clock, window=None):
    """The JSON result for one file; adds seconds spent per stage to `clock`."""
    rate = info["sample_rate"]
    t0 = time.perf_counter()
    x = torch.from_numpy(read_audio(path, rate)).unsqueeze(0)
    t1 = time.perf_counter()
    logp = emissions(net, info, x, window) if window else whole_file_emissions(net, info, x)
    t2 = time.perf_counter()
    tokens, words = encode(info["labels"], info["word_separator"], transcript_for(path))
    if not words:
        raise ValueError("no alignable words in the transcript")
    path_states = viterbi(logp, tokens, info["blank"])
    clock["read_s"] += t1 - t0
    clock["forward_s"] += t2 - t1
    clock["viterbi_s"] += time.perf_counter() - t2
    frame_s = info["samples_per_frame"] / rate
    out = []
    for text, first, last in words:
        frames = np.flatnonzero((path_states >= 2 * first + 1) & (path_states <= 2 * last + 1))
        out.append({"text": text, "start_s": float(frames[0]) * frame_s,
                    "end_s": float(frames[-1] + 1) * frame_s})
    return {"utterance": os.path.splitext(os.path.basename(path))[0], "task": "align",
            "duration_s": x.size(1) / rate, "words": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--root", required=True, help="corpus folder; outputs mirror the paths under it")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--times", help="append one JSON line of seconds per stage (whole process) to this file")
    ap.add_argument("--window-s", type=float, help="run the model over the worker's windows (default: whole file)")
    ap.add_argument("--context-s", type=float, default=2.0, help="with --window-s: context on each side")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    with open(os.path.splitext(a.model)[0] + ".json") as f:
        info = json.load(f)
    net = torch.jit.load(a.model).eval()
    failed = 0
    clock = {"load_s": time.perf_counter() - START_S, "read_s": 0.0, "forward_s": 0.0, "viterbi_s": 0.0}
    for path in a.files:
        try:
            result = align_file(net, info, path, clock, (a.window_s, a.context_s) if a.window_s else None)
            rel = os.path.splitext(os.path.relpath(path, a.root))[0]
            dest = os.path.join(a.out, rel + ".json")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest + ".tmp", "w") as f:
                json.dump(result, f)
            os.replace(dest + ".tmp", dest)
        except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as e:
            print(f"throughput_ref: {path}: {e}", file=sys.stderr)
            failed += 1
    if a.times:
        clock["wall_s"] = time.perf_counter() - START_S
        clock["cpu_s"] = time.process_time()  # this process only, not its sox children
        clock["files"] = len(a.files)
        with open(a.times, "a") as f:  # one short line per process: O_APPEND keeps lines whole
            f.write(json.dumps(clock) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
