#!/usr/bin/env bash
# Makes examples/corpus/ (espeak-ng speech, WAV/FLAC/Ogg/MP3, transcripts beside it); deterministic.
# Needs espeak-ng, sox with libsox-fmt-all, and /usr/bin/python3 with numpy (scripts/setup.sh bench).
set -euo pipefail
cd "$(dirname "$0")"
nice -n 10 /usr/bin/python3 make_corpus.py
du -sh corpus
