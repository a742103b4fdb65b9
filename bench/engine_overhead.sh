#!/usr/bin/env bash
# The built-in engine's own cost per job: align-batch over many short files beside the same
# persistent worker fed the same jobs on its stdin, side by side in one run; prints figures (ratios),
# no pass/fail.
#
#   bench/engine_overhead.sh [BUILD_DIR]      (default: build)
#   env FILES=200          files of DURATION_S seconds of audio each (cut from
#       DURATION_S=0.1     examples/corpus/speaker1/wav_16k_00.wav, each with a one-word transcript),
#                          aligned with examples/models/en_char_ctc.pt
#       WORKERS="1 2"      worker counts to compare
#       REPEATS=3          each contestant runs this many times, alternating; medians are printed
#
# For W workers, contestants:
#   worker alone   W align-batch-worker processes started as align-batch starts them (--threads
#                  cores/W, --max-trellis-mib 32, OMP_WAIT_POLICY=PASSIVE), each fed its share of the job
#                  lines (round robin) at once on stdin, all at the same time: wall time until the last
#                  exits, model loading included. Its "compute" is the sum over jobs of the wall_s each
#                  result reports (the job alone, without loading or reading the next line).
#   align-batch    align-batch --workers W --no-history --task align over the same files (a fresh --out),
#                  and again with history written (its default; a fresh --history file).
#   worker, spin   W = 1 only: the worker alone without OMP_WAIT_POLICY (libgomp's default, which spins
#                  between parallel regions): what align-batch's workers ran as before it set the policy.
# Per contestant: median wall time and CPU (user + sys of the whole tree). Then align-batch's own cost
# per job, (align-batch wall - worker alone wall) / FILES, as a share of the worker's compute per job
# (target < 5%), and align-batch's wall over the worker's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build}
files=${FILES:-200}
seconds=${DURATION_S:-0.1}
worker_counts=${WORKERS:-1 2}
repeats=${REPEATS:-3}
ab=$build/orchestrator/align-batch
worker=$build/worker/align-batch-worker
model=$root/examples/models/en_char_ctc.pt
py=/usr/bin/python3
for b in "$ab" "$worker"; do
  [ -x "$b" ] || { echo "engine_overhead.sh: $b not built; run cmake --build $build --target align-batch align-batch-worker" >&2; exit 2; }
done
ab=$(realpath "$ab"); worker=$(realpath "$worker")
cores=$(nproc)

tmp=$(mktemp -d /tmp/ab-bench-overhead.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

echo "machine: $cores cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
"$py" - "$root/examples/corpus/speaker1/wav_16k_00.wav" "$tmp/corpus" "$files" "$seconds" <<'EOF'
import os, sys, wave
src, out, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
os.makedirs(out)
with wave.open(src) as w:
    params = w.getparams()
    w.setpos(min(w.getnframes() // 4, w.getnframes() - 1))
    frames = w.readframes(int(seconds * params.framerate))
for i in range(n):
    with wave.open(os.path.join(out, f"f{i:05d}.wav"), "wb") as o:
        o.setparams(params)
        o.writeframes(frames)
    with open(os.path.join(out, f"f{i:05d}.txt"), "w") as t:
        t.write("the\n")
EOF
echo "$files files of $seconds s (with transcripts) under $tmp/corpus; $repeats runs of each, alternating"

# Job lines for W workers alone: worker k gets every W-th file, outputs under OUT_DIR.
job_lines() {  # W K OUT_DIR
  local i=0 f base
  for f in "$tmp"/corpus/*.wav; do
    if [ $((i % $1)) = "$2" ]; then
      base=${f%.wav}
      printf '{"id": %d, "audio": "%s", "transcript": "%s.txt", "out": "%s/%s", "task": "align"}\n' \
        "$i" "$f" "$base" "$3" "$(basename "$base")"
    fi
    i=$((i + 1))
  done
}

# Runs "$@" and appends `wall_s cpu_s` (the whole tree's user + sys) to the file $RESULT.
timed() {
  /usr/bin/time -f '%e %U %S' -o "$tmp/time" "$@"
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$tmp/time" >> "$RESULT"
}

# W workers alone, in parallel; the sum of their jobs' wall_s goes to $RESULT.compute.
workers_alone() {  # W ENV_PREFIX...
  local w=$1; shift
  local out="$tmp/out-alone" k
  rm -rf "$out"; mkdir -p "$out"
  for ((k = 0; k < w; k++)); do job_lines "$w" "$k" "$out" > "$tmp/jobs-$k"; done
  cat > "$tmp/alone.sh" <<EOF
for k in \$(seq 0 $((w - 1))); do
  $* "$worker" --model "$model" --threads $((cores / w > 0 ? cores / w : 1)) --max-trellis-mib 32 \
    < "$tmp/jobs-\$k" > "$tmp/res-\$k" 2> "$tmp/log-\$k" &
done
wait
EOF
  timed bash "$tmp/alone.sh"
  cat "$tmp"/res-* | "$py" -c '
import json, sys
lines = [json.loads(l) for l in sys.stdin if l.strip()]
done = [l for l in lines if l.get("ok")]
if len(done) != int(sys.argv[1]):
    sys.exit(f"worker alone: {len(done)} of {sys.argv[1]} jobs ok")
print("%.3f" % sum(l["wall_s"] for l in done))' "$files" >> "$RESULT.compute"
}

align_batch() {  # W [--no-history]
  local w=$1; shift
  rm -rf "$tmp/out-ab" "$tmp/hist.db"*
  timed "$ab" --workers "$w" --task align --progress plain --history "$tmp/hist.db" "$@" --out "$tmp/out-ab" \
    "$tmp/corpus" > "$tmp/ab.out" 2> "$tmp/ab.err"
  grep -q "finished: $files done" "$tmp/ab.out" || { echo "align-batch did not align all $files files:"; tail -3 "$tmp/ab.out"; exit 1; }
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '\n%-8s %-34s %9s %9s %12s\n' workers contestant wall_s cpu_s wall/alone
for w in $worker_counts; do
  rm -f "$tmp"/r-*
  for ((r = 0; r < repeats; r++)); do
    RESULT="$tmp/r-alone" workers_alone "$w" env OMP_WAIT_POLICY=PASSIVE
    RESULT="$tmp/r-ab" align_batch "$w" --no-history
    RESULT="$tmp/r-abh" align_batch "$w"
    [ "$w" = 1 ] && RESULT="$tmp/r-spin" workers_alone "$w" env
  done
  alone_wall=$(cut -d' ' -f1 "$tmp/r-alone" | median)
  compute=$(median < "$tmp/r-alone.compute")
  contestants="alone ab abh"
  [ "$w" = 1 ] && contestants="$contestants spin"
  for c in $contestants; do
    case $c in
      alone) name="worker alone (OMP passive)" ;;
      ab) name="align-batch --no-history" ;;
      abh) name="align-batch (history written)" ;;
      spin) name="worker alone (libgomp's spin)" ;;
    esac
    wall=$(cut -d' ' -f1 "$tmp/r-$c" | median)
    cpu=$(cut -d' ' -f2 "$tmp/r-$c" | median)
    awk -v w="$w" -v name="$name" -v wall="$wall" -v cpu="$cpu" -v alone="$alone_wall" \
      'BEGIN { printf "%-8d %-34s %9.2f %9.2f %11.2fx\n", w, name, wall, cpu, wall / alone }'
  done
  for c in ab abh; do
    wall=$(cut -d' ' -f1 "$tmp/r-$c" | median)
    # Worker-seconds: W workers each lose the wall time align-batch adds.
    awk -v w="$w" -v c="$c" -v wall="$wall" -v alone="$alone_wall" -v compute="$compute" -v n="$files" \
      'BEGIN { over = (wall - alone) * w * 1000 / n; per = compute * 1000 / n;
               printf "%-8d %s: own cost %.2f ms a job = %.1f%% of the worker'"'"'s compute (%.2f ms a job: its results'"'"' wall_s; target < 5%%)\n",
                      w, c == "ab" ? "align-batch --no-history" : "align-batch, history written", over, over * 100 / per, per }'
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
