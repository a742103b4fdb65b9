#!/usr/bin/env bash
# slurm: align-batch --executor slurm against hand-written sbatch arrays, on one private Slurm node.
#
# The pressure corpus of bench/memory_pressure.sh (FILES files of 1..5 units, memhog holding
# UNIT_MIB MiB per unit, durations growing with size), run on a single-node Slurm whose node has
# REAL_MB of schedulable memory (scripts/slurm-node.sh; CR_Core_Memory, memory enforced by cgroup), by:
#   1. what users write by hand: one array, a uniform --mem large enough for the largest file
#   2. the same with a uniform --mem too small for the larger files
#   3. align-batch --executor slurm, cold (no history), then warm (--force, its history)
# Prints for each: makespan, OUT_OF_MEMORY tasks, files lost (no output), and requested vs used
# memory (sum over tasks of ReqMem x Elapsed against sacct's MaxRSS x Elapsed); then the ratios
# the issue sets targets for (warm <= 0.7 x (1)'s makespan, 0 lost, requested <= 1.5 x used).
# Usage: bench/slurm.sh [BUILD_DIR]   (root; needs Slurm installed: scripts/setup.sh test)
# LOGS=DIR keeps the logs, sacct's rows and align-batch's history, and prints where the warm run's
# time went (bench/slurm_timeline.py).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
ab=$build/orchestrator/align-batch
memhog=$build/tests/memhog
FILES=${FILES:-36}
REAL_MB=${REAL_MB:-1500}
CPUS=${CPUS:-8}
UNIT_KIB=${UNIT_KIB:-60}   # a file of k units needs k x 60 MiB at peak, k = 1..5
RAMP_MS=${RAMP_MS:-400}
HOLD_S=${HOLD_S:-0.2}
HOLD_MS_PER_MIB=${HOLD_MS_PER_MIB:-5}
BIG_MEM=${BIG_MEM:-$((5 * UNIT_KIB + 20))M}   # the hand array's --mem: the largest file, plus memhog's own
SMALL_MEM=${SMALL_MEM:-$((3 * UNIT_KIB + 20))M}
for f in "$ab" "$memhog"; do [ -x "$f" ] || { echo "slurm: $f missing; build it first (cmake --build $build)" >&2; exit 2; }; done
work=$(mktemp -d /tmp/ab-bench-slurm-XXXXXX)
node_dir=$work/slurm
cleanup() {
  [ -n "${LOGS:-}" ] && sacct -n -P -a -S now-1days -o JobIDRaw,JobID,State,ReqMem,Submit,Start,End >"$work/sacct.txt" 2>/dev/null
  "$here/scripts/slurm-node.sh" stop "$node_dir" || true
  if [ -n "${LOGS:-}" ]; then
    mkdir -p "$LOGS"
    cp -r "$work"/*.log "$work"/*.txt "$work/ab/.align-batch" "$LOGS"/ 2>/dev/null || true
    if grep -q '^warm ' "$LOGS/marks.txt" 2>/dev/null; then python3 "$here/bench/slurm_timeline.py" "$LOGS" 2 warm "$REAL_MB" || true; fi
  fi
  rm -rf "$work"
}
trap cleanup EXIT
eval "$("$here/scripts/slurm-node.sh" start "$node_dir" "$REAL_MB" "$CPUS" | sed 's/^/export /')"

. "$here/bench/pressure_corpus.sh"
pressure_corpus "$work/corpus"
ls "$work"/corpus/*.wav > "$work/list.txt"
hog=("$memhog" --mib-per-mib 1024 --ramp-ms "$RAMP_MS" --hold-s "$HOLD_S" --hold-ms-per-mib "$HOLD_MS_PER_MIB")
echo "slurm: $FILES files, peaks $UNIT_KIB..$((5 * UNIT_KIB)) MiB, one node: RealMemory $REAL_MB MB, $CPUS CPUs"

# The highest job id so far, so each contestant's jobs are told apart in sacct.
last_id() { sacct -n -P -a -X -S now-1days -o JobIDRaw 2>/dev/null | sort -n | tail -1; }
# settle MARK TASKS: until sacct (slurmdbd, which lags the controller by seconds under load) shows
# TASKS tasks above job id MARK, none of them pending or running, and every .batch step's MaxRSS
# (at most 30 s).
settle() {
  local mark=$1 want=$2 rows
  for _ in $(seq 60); do
    rows=$(sacct -n -P -a -S now-1days -o JobIDRaw,State,MaxRSS | awk -F'|' -v mark="$mark" '{ split($1, r, "."); if (r[1] + 0 > mark) print }')
    if [ "$(grep -cv '\.' <<<"$rows")" -ge "$want" ] && ! grep -qE '\|(PENDING|RUNNING|COMPLETING)\||\.batch\|[A-Z_]+\|$' <<<"$rows"; then return; fi
    sleep 0.5
  done
  echo "slurm: sacct has not caught up after 30 s; the figures below may miss tasks" >&2
}
# report NAME OUT T0 T1 MARK KEY TASKS: one result line from sacct's rows of jobs above MARK.
report() {
  local name=$1 out=$2 t0=$3 t1=$4 mark=${5:-0}
  settle "$mark" "$7"
  local rows; rows=$(sacct -n -P -a -S now-1days -o JobIDRaw,JobID,State,ReqMem,MaxRSS,ElapsedRaw)
  local stats; stats=$(echo "$rows" | awk -F'|' -v mark="$mark" '
    function mib(s,  v, u) { v = s + 0; u = substr(s, length(s)); if (u == "K") v /= 1024; else if (u == "G") v *= 1024; else if (u == "T") v *= 1048576; else if (u != "M") v /= 1048576; return v }
    { split($1, raw, "."); if (raw[1] + 0 <= mark) next }
    $1 !~ /\./ { n++; if ($3 == "OUT_OF_MEMORY") oom++; req[$1] = mib($4); el[$1] = $6 }
    $1 ~ /\.batch$/ { split($1, b, "."); rss[b[1]] = mib($5) }
    END { for (j in req) { r += req[j] * el[j]; u += rss[j] * el[j] }
          printf "%d %d %.0f %.0f", n, oom, r, u }')
  read -r tasks oom req used <<<"$stats"
  local done_n; done_n=$(find "$out" -name '*.done' -not -path '*/.align-batch/*' | wc -l)
  local lost=$((FILES - done_n)) makespan; makespan=$(echo "$t1 - $t0" | bc -l)
  printf '%-36s makespan %6.1f s  tasks %3d  OUT_OF_MEMORY %3d  files lost %3d  requested %6.0f MiB*s  used %6.0f MiB*s  (%.2f x)\n' \
    "$name" "$makespan" "$tasks" "$oom" "$lost" "$req" "$used" "$(echo "$req / ($used + 0.001)" | bc -l)"
  last_makespan=$makespan; last_lost=$lost; last_ratio=$(echo "$req / ($used + 0.001)" | bc -l)
  echo "${6:-$name} $mark $t0 $t1" >>"$work/marks.txt"  # for bench/slurm_timeline.py
}
wait_for() {  # until none of the jobs above MARK is pending or running
  while squeue -h -o %i | grep -q .; do sleep 0.2; done
}

# (1) and (2): by hand. Each task reads its file from the list; memhog writes {out}.done.
hand() {
  local name=$1 mem=$2 out=$3
  mkdir -p "$out"
  cat >"$work/hand.sh" <<SCRIPT
#!/bin/sh
f=\$(sed -n "\$((SLURM_ARRAY_TASK_ID + 1))p" "$work/list.txt")
exec ${hog[*]} --in "\$f" --out "$out/\$(basename "\$f" .wav).done"
SCRIPT
  chmod +x "$work/hand.sh"
  local mark; mark=$(last_id); mark=${mark:-0}
  local t0; t0=$(date +%s.%N)
  sbatch --parsable --array=0-$((FILES - 1)) --mem="$mem" -o /dev/null "$work/hand.sh" >/dev/null
  sleep 0.5; wait_for
  local t1; t1=$(date +%s.%N)
  report "$name" "$out" "$t0" "$t1" "$mark" "$4" "$FILES"
}
hand "hand array --mem=$BIG_MEM" "$BIG_MEM" "$work/hand-big" hand-big
hand_makespan=$last_makespan; hand_ratio=$last_ratio
hand "hand array --mem=$SMALL_MEM" "$SMALL_MEM" "$work/hand-small" hand-small

# (3): align-batch, cold then warm (same --out, so the same history; --force redoes every file).
abo=$work/ab
ab_run() {
  local name=$1; shift
  local mark; mark=$(last_id); mark=${mark:-0}
  local t0; t0=$(date +%s.%N)
  "$ab" --executor slurm --progress plain --out "$abo" "$@" "$work/corpus" -- "${hog[@]}" --in "{in}" --out "{out}.done" \
    >"$work/$name.log" 2>&1 || true
  local t1; t1=$(date +%s.%N)
  local tasks; tasks=$(sed -n 's/^align-batch: slurm: [0-9]* arrays, \([0-9]*\) tasks.*/\1/p' "$work/$name.log")
  report "align-batch --executor slurm ($name)" "$abo" "$t0" "$t1" "$mark" "$name" "${tasks:-0}"
  grep -E '^align-batch: slurm: [0-9]+ arrays' "$work/$name.log" | sed 's/^/    /'
}
ab_run cold
ab_run warm --force
warm_makespan=$last_makespan; warm_lost=$last_lost; warm_ratio=$last_ratio
echo
printf 'warm align-batch / hand array (big --mem) makespan: %.2f   (target <= 0.7)\n' "$(echo "$warm_makespan / $hand_makespan" | bc -l)"
printf 'warm align-batch files lost: %d   (target 0)\n' "$warm_lost"
printf 'requested / used memory x time: warm align-batch %.2f, hand array %.2f   (target <= 1.5)\n' "$warm_ratio" "$hand_ratio"
