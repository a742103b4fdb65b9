#!/usr/bin/env bash
# The built-in engine's own cost per job: align-batch over many short files beside the same
# persistent worker fed the same jobs on its stdin, side by side in one run; prints figures (ratios),
# no pass/fail.
#
#   bench/engine_overhead.sh [BUILD_DIR]      (default: build)
#   env FILES=200          files of DURATION_S seconds of audio each, and twice as many (cut from
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
# Every contestant runs over FILES files and over 2 x FILES, so that what align-batch adds splits into
# a cost per job and a cost per run. Per contestant and size: median wall time and CPU (user + sys of
# the whole tree), and its wall over the worker's. Then align-batch's own cost per job, the marginal
# one: ((ab wall at 2N - at N) - (alone wall at 2N - at N)) x W / N, in worker-milliseconds, as a
# share of the worker's compute per job (target < 5%); and its cost per run, the rest of its wall
# over the workers' at N (start-up: scan, plan, spawning and a first reading; the end: the workers'
# exit, history, the report). Over 200 files of 11 ms a fixed 0.1 s reads as 5 ms a job, so the two
# are apart.
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
"$py" - "$root/examples/corpus/speaker1/wav_16k_00.wav" "$tmp/corpus-2" "$((2 * files))" "$seconds" <<'EOF'
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
mkdir "$tmp/corpus-1"
for f in "$tmp"/corpus-2/f*.wav; do
  i=$(basename "$f" .wav); i=$((10#${i#f}))
  [ "$i" -lt "$files" ] && ln "$f" "${f%.wav}.txt" "$tmp/corpus-1/"
done
echo "$files and $((2 * files)) files of $seconds s (with transcripts) under $tmp/corpus-1, -2; $repeats runs of each, alternating"

# Job lines for W workers alone: worker k gets every W-th file of CORPUS, outputs under OUT_DIR.
job_lines() {  # W K OUT_DIR CORPUS
  local i=0 f base
  for f in "$4"/*.wav; do
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
workers_alone() {  # N W ENV_PREFIX...  (N: FILES or 2 x FILES)
  local n=$1 w=$2; shift 2
  local out="$tmp/out-alone" k
  rm -rf "$out"; mkdir -p "$out"
  for ((k = 0; k < w; k++)); do job_lines "$w" "$k" "$out" "$tmp/corpus-$((n / files))" > "$tmp/jobs-$k"; done
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
print("%.3f" % sum(l["wall_s"] for l in done))' "$n" >> "$RESULT.compute"
}

align_batch() {  # N W [--no-history]
  local n=$1 w=$2; shift 2
  rm -rf "$tmp/out-ab" "$tmp/hist.db"*
  timed "$ab" --workers "$w" --task align --progress plain --history "$tmp/hist.db" "$@" --out "$tmp/out-ab" \
    "$tmp/corpus-$((n / files))" > "$tmp/ab.out" 2> "$tmp/ab.err"
  grep -q "finished: $n done" "$tmp/ab.out" || { echo "align-batch did not align all $n files:"; tail -3 "$tmp/ab.out"; exit 1; }
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '\n%-8s %-6s %-34s %9s %9s %12s\n' workers files contestant wall_s cpu_s wall/alone
for w in $worker_counts; do
  rm -f "$tmp"/r-*
  for ((r = 0; r < repeats; r++)); do
    for n in "$files" "$((2 * files))"; do
      RESULT="$tmp/r-alone-$n" workers_alone "$n" "$w" env OMP_WAIT_POLICY=PASSIVE
      RESULT="$tmp/r-ab-$n" align_batch "$n" "$w" --no-history
      RESULT="$tmp/r-abh-$n" align_batch "$n" "$w"
      [ "$w" = 1 ] && RESULT="$tmp/r-spin-$n" workers_alone "$n" "$w" env
    done
  done
  contestants="alone ab abh"
  [ "$w" = 1 ] && contestants="$contestants spin"
  declare -A med
  for n in "$files" "$((2 * files))"; do
    med[alone-$n]=$(cut -d' ' -f1 "$tmp/r-alone-$n" | median)
    for c in $contestants; do
      case $c in
        alone) name="worker alone (OMP passive)" ;;
        ab) name="align-batch --no-history" ;;
        abh) name="align-batch (history written)" ;;
        spin) name="worker alone (libgomp's spin)" ;;
      esac
      med[$c-$n]=$(cut -d' ' -f1 "$tmp/r-$c-$n" | median)
      cpu=$(cut -d' ' -f2 "$tmp/r-$c-$n" | median)
      awk -v w="$w" -v n="$n" -v name="$name" -v wall="${med[$c-$n]}" -v cpu="$cpu" -v alone="${med[alone-$n]}" \
        'BEGIN { printf "%-8d %-6d %-34s %9.2f %9.2f %11.2fx\n", w, n, name, wall, cpu, wall / alone }'
    done
  done
  compute=$(median < "$tmp/r-alone-$files.compute")
  for c in ab abh; do
    # Worker-seconds: W workers each lose the wall time align-batch adds.
    awk -v w="$w" -v c="$c" -v n="$files" -v compute="$compute" \
      -v a1="${med[alone-$files]}" -v a2="${med[alone-$((2 * files))]}" -v b1="${med[$c-$files]}" -v b2="${med[$c-$((2 * files))]}" \
      'BEGIN { per = compute * 1000 / n; job = ((b2 - b1) - (a2 - a1)) * w * 1000 / n; run = (b1 - a1) - job * n / w / 1000;
               printf "%-8d %s: own cost %.2f ms a job = %.1f%% of the worker'"'"'s compute (%.2f ms a job: its results'"'"' wall_s; target < 5%%); %.2f s a run\n",
                      w, c == "ab" ? "align-batch --no-history" : "align-batch, history written", job, job * 100 / per, per, run }'
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
