#!/usr/bin/env bash
# One copy of the weights for every worker (issue 14): N = 1, 2, 4, 8 idle workers of a
# wav2vec2-large-sized model (tools/export_wav2vec2.py: torchaudio's WAV2VEC2_ASR_LARGE_960H
# architecture, 315M parameters, random weights: nothing can be downloaded), with private copies (as before) and with --shared-weights, side by
# side in one run; then 4 workers aligning short files against one worker alone, both ways.
# Prints, per case, Σ PSS and one worker's Rss / Pss / Shared / Private, and checks the targets:
#   shared, idle:    Σ PSS ≤ one copy of the weights + N × 150 MiB
#   shared, running: each worker's Shared_Clean + Shared_Dirty ≥ 1 GiB, highest Σ PSS ≤ 1.5 × one
#                    worker's highest PSS alone
#   outputs of shared and private workers byte-identical.
#
#   bench/big_model.sh [BUILD_DIR]      (default: build)   needs python3-torchaudio (setup.sh bench)
# Environment: IDLE_N="1 2 4 8" (shared), PRIVATE_N="1 2 4" (private copies need ~1.3 GiB each),
# RUN_N=4, FILES=3, SECONDS_PER_FILE=4, MODEL=path (reuse a model made before; else one is made
# in a temporary directory, ~25 s). Exit 1 if a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
worker=$build/worker/align-batch-worker
[ -x "$worker" ] || { echo "big_model.sh: $worker not built; run cmake --build $build first" >&2; exit 2; }
py=/usr/bin/python3
$py -c 'import torchaudio, numpy' 2>/dev/null ||
  { echo "big_model.sh: needs Debian's python3-torchaudio (scripts/setup.sh bench)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/ab-bench-big-model.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=${MODEL:-}
if [ -z "$model" ]; then
  model=$tmp/w2v2_large.pt
  $py tools/export_wav2vec2.py --bundle WAV2VEC2_ASR_LARGE_960H --random-weights --out "$tmp/w2v2_large"
fi
echo "$(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
$py bench/big_model.py "$worker" "$model" "$tmp"
