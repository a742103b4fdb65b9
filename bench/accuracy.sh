#!/usr/bin/env bash
# Prints the example model's alignment and transcription accuracy on held-out espeak-ng speech.
#   bench/accuracy.sh [--quick] [--n N] [--model M.pt] [--worker PATH]   (see bench/accuracy.py)
# With --worker, alignment is done by align-batch-worker (e.g. build/worker/align-batch-worker).
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/accuracy.py "$@"
