"""Makes examples/corpus/: espeak-ng speech in WAV, FLAC, Ogg and MP3 with transcripts beside it.

Run through examples/make_corpus.sh. Deterministic (seed 7): the same sentences, voices, rates,
lengths and encoder settings every time. Files sit in three speaker folders; most transcripts are
`.txt` in sentence case with punctuation, some are `.lab` (upper case words, one line).
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "train"))
import espeak_synth  # noqa: E402
import text_gen  # noqa: E402

SEED = 7
VOICES = ["en-us+f2", "en+m1", "en-gb-x-rp+f4", "en-us-nyc+m3", "en-gb-scotland+f1",
          "en-029+m2", "en-gb-x-gbclan+klatt2", "en-us+Annie"]
# (format, sox output options, sample rate, [least seconds of speech per file])
PLAN = [
    ("wav", [], 16000, [3, 4, 5, 6, 7, 3.5]),
    ("wav", [], 8000, [3, 6]),
    ("wav", [], 22050, [2, 5]),
    ("flac", ["-C", "8"], 16000, [4, 6, 8, 10, 12, 15]),
    ("ogg", ["-C", "0"], 16000, [15, 20, 30, 45, 60, 90, 120]),
    ("mp3", ["-C", "16"], 16000, [30, 60, 120, 200, 600]),
]


def speech_for(engine, r, seconds, voice):
    """Sentences (sentence case, punctuated) synthesised one by one until `seconds` of speech."""
    texts, chunks, n = [], [], 0
    rate, pitch = r.randint(150, 200), r.randint(35, 65)
    while n < seconds * engine.native_rate:
        s = text_gen.sentence(r, max_words=16)
        s = s[0].upper() + s[1:] + r.choice([".", ".", ".", "?", "!"])
        pcm, _ = engine.synth(s, voice, rate=rate, pitch=pitch)
        texts.append(s)
        chunks.append(pcm)
        n += len(pcm)
    return " ".join(texts), np.concatenate(chunks)


def main():
    out_dir = os.path.join(ROOT, "corpus")
    r = random.Random(SEED)
    engine = espeak_synth.Espeak()
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    total, k = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, opts, rate, lengths in PLAN:
            for seconds in lengths:
                voice = VOICES[k % len(VOICES)]
                speaker = f"speaker{k % 3 + 1}"
                name = f"{speaker}/{fmt}_{rate // 1000}k_{k:02d}"
                k += 1
                text, pcm = speech_for(engine, r, seconds, voice)
                raw = os.path.join(tmp, "a.raw")
                pcm.astype("<i2").tofile(raw)
                dest = os.path.join(out_dir, name + "." + fmt)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                subprocess.run(["sox", "-R", "-D", "-t", "raw", "-r", str(engine.native_rate), "-e", "signed",
                                "-b", "16", "-c", "1", raw, *opts, dest, "vol", "0.8", "rate", str(rate)],
                               check=True)
                if k % 4 == 0:  # a .lab transcript: upper case words, no punctuation
                    words = "".join(c if c.isalpha() or c in " '" else " " for c in text)
                    with open(os.path.join(out_dir, name + ".lab"), "w") as f:
                        f.write(" ".join(words.upper().split()) + "\n")
                else:
                    with open(os.path.join(out_dir, name + ".txt"), "w") as f:
                        f.write(text + "\n")
                dur = len(pcm) / engine.native_rate
                total += dur
                print(f"{name}.{fmt}  {dur:6.1f} s  {voice}")
    print(f"{k} files, {total / 60:.1f} min of speech")


if __name__ == "__main__":
    main()
