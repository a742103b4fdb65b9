#!/usr/bin/env bash
# Speed of one worker with a real-sized model, against a Python/PyTorch peer running the same
# TorchScript file over the same windows, under the reference BLAS and OpenBLAS (issue 14).
#
#   bench/model_speed.sh [BUILD_DIR]     (default: build)   needs sox, /usr/bin/python3 with python3-torchaudio
#   env MODEL=path.pt                    another model (default: wav2vec2-base, random weights, exported
#                                        by tools/export_wav2vec2.py into a temp dir)
#   env PAIRS=3                          worker/python pairs on the 76 s file (OpenBLAS), the order
#                                        alternating (worker first in odd pairs, python first in even)
#   env REFERENCE_BLAS=1                 0: skip the reference-BLAS contest (slow, and unchanged by
#                                        the worker's own code)
#
# Audio: the six 16 kHz WAV files of examples/corpus joined twice (espeak-ng speech, 76 s: windows
# of 32, 34 and 10 s at the worker's default 30 s + 2 s context), aligned to their transcripts;
# and, for the reference BLAS (about 30 times slower), wav_16k_00.wav alone (3.1 s, one window),
# with OpenBLAS on the same file beside it.
# Contestants, each one process with one LibTorch/torch thread, one after the other:
#   worker   align-batch-worker --threads 1, every job on its stdin (as align-batch runs it)
#   python   bench/throughput_ref.py --threads 1 --window-s 30 --context-s 2: torch.jit.load of the
#            same file, the worker's windows, numpy CTC Viterbi
# LibTorch (Debian's libtorch1.13, and python3-torch on top of it) calls BLAS through libblas.so.3,
# the Debian alternative; each run picks one with LD_LIBRARY_PATH: /usr/lib/x86_64-linux-gnu/blas
# and .../lapack (libblas3 and liblapack3, the reference) or /usr/lib/x86_64-linux-gnu/openblas-openmp
# (libopenblas0-openmp).
# The BLAS a run really mapped is read from its /proc/PID/maps and printed.
# Prints per run: wall and CPU seconds (user + sys) per audio second, sys seconds and minor page
# faults, and worker / python ratios; per pair and the median over pairs. Last, the worker with
# --tensor-cache off (each large tensor mapped afresh: what the worker did before) on the 76 s file.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build}
worker=$(realpath "$build/worker/align-batch-worker" 2>/dev/null || true)
py=/usr/bin/python3
[ -x "$worker" ] || { echo "model_speed.sh: $build/worker/align-batch-worker not built" >&2; exit 2; }
command -v sox >/dev/null || { echo "model_speed.sh: needs sox" >&2; exit 2; }
"$py" -c 'import torch, numpy' 2>/dev/null || { echo "model_speed.sh: $py needs python3-torch and numpy" >&2; exit 2; }
# Each BLAS with its own LAPACK: OpenBLAS's liblapack.so.3 maps libopenblas too.
ref_blas=/usr/lib/x86_64-linux-gnu/blas:/usr/lib/x86_64-linux-gnu/lapack
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp
for f in /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 /usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3 "$openblas/libblas.so.3"; do
  [ -e "$f" ] || { echo "model_speed.sh: $f missing (apt-get install libblas3 liblapack3 libopenblas0-openmp)" >&2; exit 2; }
done

tmp=$(mktemp -d /tmp/ab-bench-model-speed.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=${MODEL:-}
if [ -z "$model" ]; then
  model=$tmp/w2v2_base.pt
  "$py" tools/export_wav2vec2.py --random-weights --out "$tmp/w2v2_base" > "$tmp/export.log" 2>&1 ||
    { cat "$tmp/export.log" >&2; exit 2; }
  model_name="wav2vec2-base (torchaudio WAV2VEC2_ASR_BASE_960H architecture, random weights)"
else
  model=$(realpath "$model"); model_name=$model
fi

mkdir -p "$tmp/c"
parts=(examples/corpus/*/wav_16k_*.wav)
sox "${parts[@]}" "${parts[@]}" "$tmp/c/long.wav"
for f in "${parts[@]}" "${parts[@]}"; do cat "${f%.wav}".txt 2>/dev/null || cat "${f%.wav}".lab; echo; done > "$tmp/c/long.txt"
cp examples/corpus/speaker1/wav_16k_00.wav examples/corpus/speaker1/wav_16k_00.txt "$tmp/c/"

echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "model: $model_name"
echo

# run_worker BLAS_DIR FILE...: sets WALL_S, CPU_S, BLAS_SEEN
run_worker() {
  local blas=$1 i=0 f
  shift
  : > "$tmp/jobs"
  for f in "$@"; do
    echo "{\"id\":$i,\"audio\":\"$f\",\"transcript\":\"${f%.wav}.txt\",\"out\":\"$tmp/out-w-$i\",\"task\":\"align\"}" >> "$tmp/jobs"
    i=$((i + 1))
  done
  # shellcheck disable=SC2086
  STDIN_FILE=$tmp/jobs timed "$blas" "$worker" --model "$model" --threads 1 ${WORKER_FLAGS:-} > "$tmp/worker.out" 2> "$tmp/worker.log"
  [ "$(grep -c '"ok":true' "$tmp/worker.out")" = "$#" ] || { echo "worker failed:"; cat "$tmp/worker.out" "$tmp/worker.log"; exit 1; }
}
run_python() {
  local blas=$1
  shift
  rm -f "$tmp/times"
  timed "$blas" "$py" bench/throughput_ref.py --model "$model" --root "$tmp/c" --out "$tmp/out-py" --threads 1 \
    --window-s 30 --context-s 2 --times "$tmp/times" "$@" 2> "$tmp/python.log" || { cat "$tmp/python.log"; exit 1; }
  FORWARD_S=$("$py" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["forward_s"])' "$tmp/times")
}
# timed BLAS_DIR CMD...: runs CMD (stdin: $STDIN_FILE, else /dev/null) with that libblas.so.3, notes which BLAS it mapped
timed() {
  local blas=$1 t0 t1 pid
  shift
  t0=$(date +%s.%N)
  # (A background command's stdin would be /dev/null: give it the file explicitly.)
  LD_LIBRARY_PATH=$blas /usr/bin/time -f '%U %S %R' -o "$tmp/cpu" "$@" < "${STDIN_FILE:-/dev/null}" &
  pid=$!
  BLAS_SEEN=unknown
  for _ in $(seq 1 100); do
    local child
    child=$(pgrep -P "$pid" | head -1 || true)
    if [ -n "$child" ] && grep -q 'libblas\|openblas' "/proc/$child/maps" 2>/dev/null; then
      BLAS_SEEN=$(grep -o '/[^ ]*\(libblas\|libopenblas\)[^ ]*' "/proc/$child/maps" | sort -u | xargs -n1 basename | tr '\n' ' ')
      break
    fi
    sleep 0.1
  done
  wait "$pid"
  t1=$(date +%s.%N)
  WALL_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  CPU_S=$(awk '{ printf "%.2f", $1 + $2 }' "$tmp/cpu")
  SYS_S=$(awk '{ print $2 }' "$tmp/cpu")
  FAULTS=$(awk '{ print $3 }' "$tmp/cpu")
}

rows=()
# contest LABEL BLAS_DIR FILE...: worker then python on the same files (python first if FIRST=python)
contest() {
  local label=$1 blas=$2 audio_s ww wc ws wf pw pc ps pf wb pb
  shift 2
  audio_s=$(for f in "$@"; do soxi -D "$f"; done | awk '{ s += $1 } END { printf "%.2f", s }')
  if [ "${FIRST:-worker}" = python ]; then
    run_python "$blas" "$@"; pw=$WALL_S; pc=$CPU_S; ps=$SYS_S; pf=$FAULTS; pb=$BLAS_SEEN
    run_worker "$blas" "$@"; ww=$WALL_S; wc=$CPU_S; ws=$SYS_S; wf=$FAULTS; wb=$BLAS_SEEN
  else
    run_worker "$blas" "$@"; ww=$WALL_S; wc=$CPU_S; ws=$SYS_S; wf=$FAULTS; wb=$BLAS_SEEN
    run_python "$blas" "$@"; pw=$WALL_S; pc=$CPU_S; ps=$SYS_S; pf=$FAULTS; pb=$BLAS_SEEN
  fi
  rows+=("$label|$audio_s|$ww|$wc|$pw|$pc|$FORWARD_S")
  awk -v l="$label" -v a="$audio_s" -v ww="$ww" -v wc="$wc" -v pw="$pw" -v pc="$pc" -v f="$FORWARD_S" -v b="$wb" -v c="$pb" \
      -v ws="$ws" -v wf="$wf" -v ps="$ps" -v pf="$pf" -v o="${FIRST:-worker}" 'BEGIN {
    printf "%-34s %5.1f s audio (%s first)  worker %7.2f s wall %7.2f s CPU (%.3f / %.3f per audio s; sys %.2f s, %d faults)  python %7.2f s wall %7.2f s CPU (%.3f / %.3f; sys %.2f s, %d faults; forward alone %.2f s wall)  worker/python wall %.2f CPU %.2f\n    BLAS mapped: worker %s, python %s\n",
      l, a, o, ww, wc, ww / a, wc / a, ws, wf, pw, pc, pw / a, pc / a, ps, pf, f, ww / pw, wc / pc, b, c }'
}

if [ "${REFERENCE_BLAS:-1}" = 1 ]; then
  contest "reference BLAS, 3.1 s file" "$ref_blas" "$tmp/c/wav_16k_00.wav"
  contest "OpenBLAS (openmp), 3.1 s file" "$openblas" "$tmp/c/wav_16k_00.wav"
fi
pairs=${PAIRS:-3}
for k in $(seq 1 "$pairs"); do
  first=worker; [ $((k % 2)) = 0 ] && first=python
  FIRST=$first contest "OpenBLAS (openmp), 76 s file, pair $k" "$openblas" "$tmp/c/long.wav"
  [ "$k" = 1 ] && cp "$tmp/out-w-0.json" "$tmp/long-worker.json"
done
# The median over pairs of worker CPU / python CPU.
printf '%s\n' "${rows[@]}" | grep '76 s file' | awk -F'|' '{ print $4 / $6 }' | sort -g |
  awk '{ r[NR] = $1 } END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2;
    printf "76 s file, %d pairs: worker CPU / python CPU per pair", NR; for (i = 1; i <= NR; i++) printf " %.2f", r[i];
    printf " (sorted), median %.2f\n", m }'
# What the tensor cache saves: the same worker with each large tensor mapped afresh.
WORKER_FLAGS="--tensor-cache off" run_worker "$openblas" "$tmp/c/long.wav"; ow=$WALL_S; oc=$CPU_S; os=$SYS_S; of=$FAULTS
run_worker "$openblas" "$tmp/c/long.wav"; nw=$WALL_S; nc=$CPU_S; ns=$SYS_S; nf=$FAULTS
awk -v ow="$ow" -v oc="$oc" -v os="$os" -v of="$of" -v nw="$nw" -v nc="$nc" -v ns="$ns" -v nf="$nf" 'BEGIN {
  printf "worker, 76 s file, OpenBLAS: --tensor-cache on (default) %.2f s wall %.2f s CPU (sys %.2f s, %d faults), off %.2f s wall %.2f s CPU (sys %.2f s, %d faults): on / off CPU %.2f\n",
    nw, nc, ns, nf, ow, oc, os, of, nc / oc }'
echo
if [ "${REFERENCE_BLAS:-1}" = 1 ]; then
  IFS='|' read -r _ _ rw rc _ _ rf <<< "${rows[0]}"
  IFS='|' read -r _ _ ow oc _ _ of <<< "${rows[1]}"
  awk -v rw="$rw" -v ow="$ow" -v rc="$rc" -v oc="$oc" -v rf="$rf" -v of="$of" 'BEGIN {
    printf "3.1 s file, reference BLAS / OpenBLAS: worker wall %.1f x, CPU %.1f x (each including model load); python forward alone %.1f x\n",
      rw / ow, rc / oc, rf / of }'
fi
# Same windows, same TorchScript file: the alignments should agree (random weights: any path, but the same one).
"$py" - "$tmp/long-worker.json" "$tmp/out-py/long.json" <<'EOF'
import json, sys
a, b = (json.load(open(p))["words"] for p in sys.argv[1:])
d = [abs(x["start_s"] - y["start_s"]) * 1000 for x, y in zip(a, b)]
same = sum(x < 1e-6 for x in d)
print(f"76 s file, worker vs python word starts: {len(a)} / {len(b)} words, {same} identical, max |difference| {max(d):.1f} ms")
EOF
