"""Makes tests/data/accuracy/: the held-out espeak-ng utterances the CI accuracy test aligns.

    /usr/bin/python3 tests/data/make_accuracy_fixture.py [--n 8] [--seed 1] [--out tests/data/accuracy]

Run once by hand (needs espeak-ng, sox and Debian's python3-torch, which CI does not install);
the output is committed. The utterances are bench/accuracy.py's held-out set, made by its own
heldout() (sentences and voices training never used, examples/train/make_data.py's held-out
lists, each after 0.1-0.6 s of silence): with the defaults, exactly the 8 that
`bench/accuracy.sh --quick` scores. Writes uNN.flac (16 kHz mono 16-bit), uNN.txt (the
sentence) and truth.json: per file its text, voice and espeak-ng's word start times (seconds
from the start of the file, from the synthesis callback's word events).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import accuracy  # noqa: E402  (bench/accuracy.py; it puts examples/train on sys.path)


def write_flac(path, pcm):
    """int16 mono 16 kHz samples -> FLAC, via sox (lossless: the samples are kept exactly)."""
    subprocess.run(["sox", "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1", "-",
                    "-t", "flac", "-C", "8", path],
                   input=pcm.astype("<i2").tobytes(), check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "accuracy"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    utts = accuracy.heldout(a.n, a.seed)
    truth = {}
    for i, (text, voice, pcm, starts) in enumerate(utts):
        name = f"u{i:02d}"
        write_flac(os.path.join(a.out, name + ".flac"), pcm)
        with open(os.path.join(a.out, name + ".txt"), "w") as f:
            f.write(text + "\n")
        words = text.split()
        if len(words) != len(starts):
            sys.exit(f"make_accuracy_fixture: '{text}': {len(starts)} word times for {len(words)} words")
        truth[name + ".flac"] = {
            "text": text, "voice": voice, "duration_s": round(len(pcm) / 16000.0, 6),
            "words": [{"text": w, "start_s": round(s, 6)} for w, s in zip(words, starts)]}
    with open(os.path.join(a.out, "truth.json"), "w") as f:
        json.dump({"source": f"bench/accuracy.py heldout(n={a.n}, seed={a.seed}); "
                             "made by tests/data/make_accuracy_fixture.py",
                   "files": truth}, f, indent=1)
        f.write("\n")
    print(f"{len(utts)} utterances, {sum(len(u[2]) for u in utts) / 16000:.1f} s of audio, "
          f"{sum(len(u[3]) for u in utts)} words -> {a.out}")


if __name__ == "__main__":
    main()
