#!/usr/bin/env bash
# Worker peak RSS for 1 minute and for 60 minutes of audio with the same model (issues 4 and 14).
#
# Each case runs a fresh align-batch-worker over one job and reads its VmHWM (peak RSS) from
# /proc/PID/status after the result line, before closing stdin. The audio is a 1.9 s pattern of
# tones, "bad cafe", repeated to the length asked. Prints one row per case and, per task, the long
# minus the 1-minute peak (issue 14's target for wav2vec2-base: <= +64 MiB).
#
#   bench/worker_memory.sh [BUILD_DIR]        (default: build)   needs sox
#   env MODEL=tone            the tone test model (make-tone-model: 10 labels, 20 ms frames); the
#                             default. Cases: default flags, --max-trellis-mib 256 and 8
#   env MODEL=wav2vec2-base   torchaudio's wav2vec2-base architecture with random weights, exported by
#                             tools/export_wav2vec2.py (needs /usr/bin/python3 with python3-torchaudio):
#                             95 M parameters, 30 s windows + 2 s context as the worker's defaults.
#                             Cases: default flags, and glibc's sliding mmap threshold
#                             (--malloc-mmap-threshold-kib 0: the worker before issue 14) on the
#                             1-minute file and on a SHORT_MIN-minute one (default 3)
#   env LONG_MIN=60           the long file's minutes (a wav2vec2-base pass over 60 minutes takes
#                             about 20 min of one idle core; much more on a loaded machine)
#   env TASKS="align transcribe"  the tasks to measure (e.g. one task per instance, two instances
#                             side by side on two cores: each case is one single-threaded worker, and
#                             its peak RSS does not depend on how fast it runs)
#   env SLIDING=1             wav2vec2-base only: also the --malloc-mmap-threshold-kib 0 cases (0: skip)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
worker=$build/worker/align-batch-worker
maker=$build/worker/make-tone-model
model_kind=${MODEL:-tone}
long=${LONG_MIN:-60}
tasks=${TASKS:-align transcribe}
sliding=${SLIDING:-1}
short=${SHORT_MIN:-3}
for b in "$worker" "$maker"; do
  [ -x "$b" ] || { echo "worker_memory.sh: $b not built; run cmake --build $build first" >&2; exit 2; }
done
command -v sox >/dev/null || { echo "worker_memory.sh: needs sox (apt-get install sox)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/ab-bench-worker-memory.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
case $model_kind in
  tone) model=$tmp/tone.pt; "$maker" "$model" >/dev/null ;;
  wav2vec2-base)
    model=$tmp/w2v2_base.pt
    /usr/bin/python3 tools/export_wav2vec2.py --bundle WAV2VEC2_ASR_BASE_960H --random-weights --out "$tmp/w2v2_base" \
      > "$tmp/export.log" 2>&1 || { echo "worker_memory.sh: export failed:" >&2; cat "$tmp/export.log" >&2; exit 2; } ;;
  *) echo "worker_memory.sh: MODEL must be tone or wav2vec2-base" >&2; exit 2 ;;
esac

# The pattern: tones of the model's labels (b=1000 Hz, a=700, d=1600, |=400, c=1300, f=2200,
# e=1900; see worker/tools/tone_spec.h) with silences, 2.0 s in all, transcript "bad cafe".
seg() { sox -n -r 16000 -c 1 -b 16 "$tmp/s$1.wav" synth "$2" sine "$3" vol "$4"; }
seg 00 0.20 1000 0; seg 01 0.15 1000 0.5; seg 02 0.12 700 0.5; seg 03 0.04 1000 0
seg 04 0.17 1600 0.5; seg 05 0.10 400 0.5; seg 06 0.13 1300 0.5; seg 07 0.11 700 0.5
seg 08 0.14 2200 0.5; seg 09 0.16 1900 0.5; seg 10 0.58 1000 0
sox "$tmp"/s??.wav "$tmp/pattern.wav"
make_case() {  # minutes: the pattern repeated to at least that long
  local n=$(( ($1 * 600 + 18) / 19 ))
  sox "$tmp/pattern.wav" "$tmp/m$1.wav" repeat $(( n - 1 ))
  awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) print "bad cafe" }' > "$tmp/m$1.txt"
}
make_case 1
make_case "$long"
[ "$model_kind" = wav2vec2-base ] && [ "$sliding" = 1 ] && make_case "$short"

# run_case TASK MINUTES [worker flags...] -> prints a row and sets PEAK_KIB
run_case() {
  local task=$1 minutes=$2
  shift 2
  local transcript=null
  [ "$task" = align ] && transcript="\"$tmp/m$minutes.txt\""
  coproc W { exec "$worker" --model "$model" "$@" 2>"$tmp/worker.log"; }
  local pid=$W_PID ready line
  read -r ready <&"${W[0]}"
  local ready_kib
  ready_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  echo "{\"id\":1,\"audio\":\"$tmp/m$minutes.wav\",\"transcript\":$transcript,\"out\":\"$tmp/out$minutes\",\"task\":\"$task\"}" >&"${W[1]}"
  while read -r line <&"${W[0]}"; do
    case $line in *'"ok"'*) break ;; esac
  done
  PEAK_KIB=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  exec {W[1]}>&-
  wait "$pid" || true
  case $line in *'"ok":true'*) ;; *) echo "worker_memory.sh: $task $minutes min failed: $line" >&2; exit 1 ;; esac
  field() { echo "$line" | sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }
  local idle emis aligner wall logp
  idle=$(field idle_rss_bytes); emis=$(field emissions_bytes); aligner=$(field aligner_bytes); wall=$(field wall_s)
  logp=$(field log_prob)
  awk -v t="$task" -v m="$minutes" -v r="$ready_kib" -v p="$PEAK_KIB" -v i="$idle" -v e="$emis" -v a="${aligner:-0}" \
      -v w="$wall" -v f="$*" -v l="${logp:--}" 'BEGIN {
    printf "%-10s %3d min  ready %6.1f MiB  peak %6.1f MiB  idle after %6.1f MiB  emissions %6.1f MiB  aligner %6.1f MiB  wall %6.2f s  log_prob %s  %s\n",
      t, m, r / 1024, p / 1024, i / 1048576, e / 1048576, a / 1048576, w, l, f }'
}

# compare TASK A B FLAGS: the difference of two cases' peaks
compare() {
  awk -v t="$1" -v a="$2" -v b="$3" -v f="$4" -v s="$5" -v l="$6" \
    'BEGIN { printf "%-10s %d min - %d min peak: %+.1f MiB  %s\n\n", t, l, s, (b - a) / 1024, f }'
}

if [ "$model_kind" = tone ]; then
  echo "align-batch-worker peak RSS (VmHWM), tone model, fresh worker per case"
  for flags in "" "--max-trellis-mib 256" "--max-trellis-mib 8"; do
    for task in $tasks; do
      [ "$task" = transcribe ] && [ -n "$flags" ] && continue
      # shellcheck disable=SC2086
      run_case "$task" 1 $flags; one=$PEAK_KIB
      # shellcheck disable=SC2086
      run_case "$task" "$long" $flags; other=$PEAK_KIB
      compare "$task" "$one" "$other" "$flags" 1 "$long"
    done
  done
else
  echo "align-batch-worker peak RSS (VmHWM), wav2vec2-base (random weights), 1 thread, fresh worker per case"
  for task in $tasks; do
    run_case "$task" 1; one=$PEAK_KIB
    run_case "$task" "$long"; other=$PEAK_KIB
    compare "$task" "$one" "$other" "(mmap threshold held at 128 KiB, the default)" 1 "$long"
  done
  for task in $tasks; do
    [ "$sliding" = 1 ] || break
    run_case "$task" 1 --malloc-mmap-threshold-kib 0; one=$PEAK_KIB
    run_case "$task" "$short" --malloc-mmap-threshold-kib 0; other=$PEAK_KIB
    compare "$task" "$one" "$other" "--malloc-mmap-threshold-kib 0 (glibc's sliding threshold)" 1 "$short"
  done
fi
