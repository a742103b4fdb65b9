"""Synthesises the training and held-out sets with espeak-ng (no downloads).

    /usr/bin/python3 examples/train/make_data.py --out DIR [--train 8000] [--heldout 300] [--seed 1]

Writes DIR/train.npz and DIR/heldout.npz: 16 kHz int16 audio concatenated, per-utterance offsets,
texts, voices, and espeak-ng's word start times (seconds). Held-out utterances use sentences and
voices (accent and variant) that training never uses, and start after 0.1-0.6 s of silence.
"""
import argparse
import json
import random
import sys
import time

import numpy as np

import espeak_synth
import text_gen

TRAIN_ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbcwmd"]
TRAIN_VARIANTS = ["", "m1", "m2", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f5", "klatt",
                  "klatt2", "klatt3", "Alex", "Andy", "Annie", "adam", "anika", "benjamin",
                  "caleb", "david", "edward", "linda", "paul", "rob", "steph", "john"]
HELDOUT_ACCENTS = ["en-029", "en-gb-x-gbclan"]
HELDOUT_VARIANTS = ["m3", "f4", "klatt4"]


def voice_name(accent, variant):
    return accent + ("+" + variant if variant else "")


def synth_set(engine, texts, accents, variants, r, lead_silence):
    audio, offsets, starts, voices, kept = [], [0], [], [], []
    for text in texts:
        voice = voice_name(r.choice(accents), r.choice(variants))
        rate, pitch, rng = r.randint(130, 240), r.randint(20, 80), r.randint(20, 90)
        raw, events = engine.synth(text, voice, rate=rate, pitch=pitch, pitch_range=rng)
        words = text.split()
        if len(events) != len(words):  # espeak split or merged a word: no trustworthy truth
            continue
        pcm = espeak_synth.resample_to_16k(raw, engine.native_rate)
        lead = r.uniform(*lead_silence)
        pcm = np.concatenate([np.zeros(int(lead * 16000), np.int16), pcm,
                              np.zeros(int(r.uniform(0.05, 0.4) * 16000), np.int16)])
        audio.append(pcm)
        offsets.append(offsets[-1] + len(pcm))
        starts.append([lead + ms / 1000.0 for _, _, ms in events])
        voices.append(f"{voice} rate={rate} pitch={pitch} range={rng}")
        kept.append(text)
    return audio, offsets, starts, voices, kept


def save(path, audio, offsets, starts, voices, texts):
    np.savez(path, audio=np.concatenate(audio), offsets=np.array(offsets, np.int64),
             texts=np.array(texts), voices=np.array(voices),
             starts=np.array([json.dumps(s) for s in starts]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--heldout", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    t0 = time.time()
    engine = espeak_synth.Espeak()
    heldout_texts = text_gen.sentences(a.seed + 1000, a.heldout)
    train_texts = text_gen.sentences(a.seed, a.train, exclude=heldout_texts)
    r = random.Random(a.seed)
    ho = synth_set(engine, heldout_texts, HELDOUT_ACCENTS, HELDOUT_VARIANTS, r, (0.1, 0.6))
    save(f"{a.out}/heldout.npz", *ho)
    tr = synth_set(engine, train_texts, TRAIN_ACCENTS, TRAIN_VARIANTS, r, (0.0, 0.3))
    save(f"{a.out}/train.npz", *tr)
    hours = tr[1][-1] / 16000 / 3600
    print(f"train {len(tr[4])} utterances {hours:.2f} h, heldout {len(ho[4])} utterances, "
          f"{time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
