"""Alignment and transcription accuracy of a CTC model on held-out espeak-ng speech.

    /usr/bin/python3 bench/accuracy.py --model examples/models/en_char_ctc.pt [--n 200] [--quick]
                                       [--worker build/worker/align-batch-worker]

Synthesises --n utterances whose sentences and voices (accent and variant) training never used
(examples/train/make_data.py's held-out lists), each after 0.1-0.6 s of silence, and compares
word start times from forced alignment with espeak-ng's own (its synthesis callback's word
events). Alignment is CTC Viterbi over the TorchScript model's emissions in this script, or, with
--worker, align-batch-worker's JSON output for the same audio and transcripts. Prints the median
and 95th percentile of |start error| and the greedy character error rate, then checks them
against the bounds (issue 7: median <= 40 ms, p95 <= 120 ms, CER <= 15%; --quick: 8 utterances,
looser bounds, for CI). Exit status 1 when a bound is missed.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "train"))
import espeak_synth  # noqa: E402
import make_data  # noqa: E402
import text_gen  # noqa: E402
from text_gen import edit_distance  # noqa: E402

from ctc_viterbi import encode, viterbi  # noqa: E402

FULL_BOUNDS = {"median_ms": 40.0, "p95_ms": 120.0, "cer": 0.15}
QUICK_BOUNDS = {"median_ms": 80.0, "p95_ms": 250.0, "cer": 0.35}


def heldout(n, seed):
    """[(text, voice description, int16 16 kHz audio, [word start s])], deterministic."""
    engine = espeak_synth.Espeak()
    texts = text_gen.sentences(seed + 1000, n)  # make_data.py's held-out sentences for --seed
    r = random.Random(seed + 7)
    audio, offsets, starts, voices, kept = make_data.synth_set(
        engine, texts, make_data.HELDOUT_ACCENTS, make_data.HELDOUT_VARIANTS, r, (0.1, 0.6))
    return [(kept[i], voices[i], audio[i], starts[i]) for i in range(len(kept))]


def greedy(logp, labels, blank, sep):
    out, prev = [], -1
    for b in logp.argmax(-1):
        if b != prev and b != blank:
            out.append(" " if labels[b] == sep else labels[b])
        prev = b
    return " ".join("".join(out).split())


def starts_in_python(net, info, utt):
    text, _, pcm, _ = utt
    x = torch.from_numpy(pcm.astype(np.float32) / 32768.0).unsqueeze(0)
    with torch.no_grad():
        e, l = net(x, torch.tensor([x.size(1)]))
    logp = e[0, :int(l[0])].numpy()
    if info["outputs"] == "logits":
        logp = torch.log_softmax(torch.from_numpy(logp), -1).numpy()
    tokens, words = encode(info["labels"], info["word_separator"], text)
    firsts = [first for _, first, _ in words]
    path = viterbi(logp, tokens, info["blank"])
    frame_s = info["samples_per_frame"] / info["sample_rate"]
    starts = [float(np.argmax(path == 2 * f + 1)) * frame_s for f in firsts]
    return starts, greedy(logp, info["labels"], info["blank"], info["word_separator"])


def starts_from_worker(worker, model, utts, tmp):
    """Runs align-batch-worker on the utterances (align, then transcribe); returns per utterance."""
    jobs = []
    for i, (text, _, pcm, _) in enumerate(utts):
        wav = os.path.join(tmp, f"u{i}.wav")
        with wave.open(wav, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm.astype("<i2").tobytes())
        with open(os.path.join(tmp, f"u{i}.txt"), "w") as f:
            f.write(text + "\n")
        jobs.append({"id": i, "audio": wav, "transcript": os.path.join(tmp, f"u{i}.txt"),
                     "out": os.path.join(tmp, f"u{i}"), "task": "align"})
        jobs.append({"id": len(utts) + i, "audio": wav, "out": os.path.join(tmp, f"t{i}"),
                     "task": "transcribe"})
    p = subprocess.run([worker, "--model", model, "--threads", "2"], capture_output=True, text=True,
                       input="".join(json.dumps(j) + "\n" for j in jobs))
    results = {}
    for line in p.stdout.splitlines():
        msg = json.loads(line)
        if "ok" in msg:
            if not msg["ok"]:
                raise RuntimeError(f"align-batch-worker job {msg.get('id')}: {msg.get('error')}")
            results[msg["id"]] = msg
    if p.returncode != 0 or len(results) != len(jobs):
        raise RuntimeError(f"{worker}: exit {p.returncode}, {len(results)} of {len(jobs)} results; "
                           f"stderr: {p.stderr[-2000:]}")
    out = []
    for i in range(len(utts)):
        with open(os.path.join(tmp, f"u{i}.json")) as f:
            starts = [w["start_s"] for w in json.load(f)["words"]]
        out.append((starts, results[len(utts) + i]["text"]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "en_char_ctc.pt"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="8 utterances, looser bounds (CI guard)")
    ap.add_argument("--worker", help="align with this align-batch-worker instead of in Python")
    a = ap.parse_args()
    torch.set_num_threads(2)
    n = 8 if a.quick else a.n
    bounds = QUICK_BOUNDS if a.quick else FULL_BOUNDS
    sidecar = os.path.splitext(a.model)[0] + ".json"
    try:
        with open(sidecar) as f:
            info = json.load(f)
        net = torch.jit.load(a.model)
    except (OSError, RuntimeError, ValueError) as e:
        sys.exit(f"accuracy: cannot load {a.model} with its sidecar {sidecar}: {e}; "
                 "export one with examples/train/export.py")
    t0 = time.time()
    utts = heldout(n, a.seed)
    synth_s = time.time() - t0
    t0 = time.time()
    if a.worker:
        with tempfile.TemporaryDirectory() as tmp:
            got = starts_from_worker(a.worker, a.model, utts, tmp)
    else:
        got = [starts_in_python(net, info, u) for u in utts]
    align_s = time.time() - t0
    errors, edits, chars = [], 0, 0
    for (text, _, _, truth), (starts, hyp) in zip(utts, got):
        if len(starts) != len(truth):
            sys.exit(f"accuracy: '{text}': {len(starts)} aligned words, {len(truth)} expected")
        errors.extend(abs(s - t) for s, t in zip(starts, truth))
        edits += edit_distance(hyp, text)
        chars += len(text)
    errors_ms = np.array(errors) * 1000.0
    fig = {"median_ms": float(np.median(errors_ms)), "p95_ms": float(np.percentile(errors_ms, 95)),
           "cer": edits / chars}
    audio_s = sum(len(u[2]) for u in utts) / 16000
    print(f"model {os.path.relpath(a.model, ROOT)}; aligner {'align-batch-worker' if a.worker else 'python viterbi'}")
    print(f"held-out: {len(utts)} utterances, {audio_s:.0f} s audio, {len(errors)} words; voices "
          f"{'/'.join(make_data.HELDOUT_ACCENTS)} x {'/'.join(make_data.HELDOUT_VARIANTS)}; "
          f"synthesis {synth_s:.1f} s, alignment+transcription {align_s:.1f} s")
    print(f"word start |error|: median {fig['median_ms']:.1f} ms (bound {bounds['median_ms']:.0f}), "
          f"p95 {fig['p95_ms']:.1f} ms (bound {bounds['p95_ms']:.0f}), mean {errors_ms.mean():.1f} ms, "
          f"within 20 ms {np.mean(errors_ms <= 20) * 100:.1f}%, within 50 ms {np.mean(errors_ms <= 50) * 100:.1f}%")
    print(f"greedy transcription CER: {fig['cer'] * 100:.2f}% (bound {bounds['cer'] * 100:.0f}%)")
    failed = [k for k in bounds if fig[k] > bounds[k]]
    if failed:
        print(f"accuracy: FAILED bounds: {', '.join(failed)}")
        sys.exit(1)
    print("accuracy: all bounds met")


if __name__ == "__main__":
    main()
