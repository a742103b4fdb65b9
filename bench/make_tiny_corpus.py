#!/usr/bin/python3
"""Writes N tiny valid WAVs (16 kHz mono 16-bit, 10 ms of silence) for bench/many_jobs.sh.

    make_tiny_corpus.py DIR N [PER_DIR]

Files go into DIR/dNNNN/fNNNNNNN.wav, PER_DIR (default 1000) to a directory, so a size N of the
bench is the first N / PER_DIR directories. Existing files are kept (a bigger N adds to them).
"""
import os
import struct
import sys

root, n = sys.argv[1], int(sys.argv[2])
per_dir = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
rate, frames = 16000, 160
data = b"\0\0" * frames
wav = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " +
       struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(data)) + data)
for i in range(n):
    d = os.path.join(root, f"d{i // per_dir:04d}")
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"f{i:07d}.wav")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(wav)
