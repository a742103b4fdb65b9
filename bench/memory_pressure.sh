#!/usr/bin/env bash
# memory_pressure: align-batch --workers auto against GNU parallel inside one real memory cgroup.
#
# A corpus whose jobs' peaks differ five-fold and grow with file size (memhog allocates 1 MiB per
# KiB of input: 60..300 MiB), run inside a v1 memory cgroup limited to LIMIT_MIB, by:
#   1. GNU parallel -j 4×cores                 (what people type)
#   2. GNU parallel -j 4×cores --memfree       (parallel's own memory guard; it reads MemAvailable)
#   3. GNU parallel -j N, the largest static N that finished with no OOM kill (searched downwards)
#   4. align-batch --workers auto, cold (no history), then again with the history of run 4 (--force)
# Prints makespan, kernel OOM kills (the cgroup's oom_kill counter) and files lost (no output) for
# each, the packing bound (sum of peak × duration over the budget, from align-batch's history),
# and the ratios the issue sets targets for.
# Usage: bench/memory_pressure.sh [BUILD_DIR]   (root; needs cgroup v1 memory and GNU parallel)
# LOGS=DIR keeps the logs and align-batch's history.sqlite; ONLY_AB=1 runs align-batch alone.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
ab=$build/orchestrator/align-batch
memhog=$build/tests/memhog
FILES=${FILES:-36}
LIMIT_MIB=${LIMIT_MIB:-1024}
UNIT_KIB=${UNIT_KIB:-60}      # a file of k units needs k × 60 MiB at peak, k = 1..5
RAMP_MS=${RAMP_MS:-400}
HOLD_S=${HOLD_S:-0.2}
# Work grows with the input, as a real aligner's does (its trellis is frames × tokens, and both
# time and memory grow with audio length): each job holds 5 ms per MiB, 0.3 s per unit, so a job
# lasts about 0.9 s (1 unit) to 2.1 s (5 units). HOLD_MS_PER_MIB=0 HOLD_S=1.0 gives the older
# scenario where every job lasts the same whatever its size.
HOLD_MS_PER_MIB=${HOLD_MS_PER_MIB:-5}
for f in "$ab" "$memhog"; do [ -x "$f" ] || { echo "memory_pressure: $f missing; build it first (cmake --build $build)" >&2; exit 2; }; done
command -v parallel >/dev/null || { echo "memory_pressure: GNU parallel missing: apt-get install parallel" >&2; exit 2; }
cores=$(nproc)

own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
mnt=/sys/fs/cgroup/memory
cg=$mnt$own/ab-bench-$$
if ! mkdir "$cg" 2>/dev/null; then echo "memory_pressure: cannot create a memory cgroup at $cg; run as root on cgroup v1" >&2; exit 77; fi
work=$(mktemp -d /tmp/ab-bench-XXXXXX)
cleanup() {
  if [ -d "$cg" ]; then
    for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    sleep 0.2; rmdir "$cg" 2>/dev/null || true
  fi
  if [ -n "${LOGS:-}" ]; then  # logs, and align-batch's history for `align-batch replay --history`
    mkdir -p "$LOGS" && cp "$work"/*.log "$LOGS"/ 2>/dev/null
    cp "$work/ab/.align-batch/history.sqlite" "$LOGS"/ 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
echo $((LIMIT_MIB << 20)) > "$cg/memory.limit_in_bytes"
oom_kills() { awk '/oom_kill /{print $2}' "$cg/memory.oom_control"; }

# The corpus (bench/pressure_corpus.sh): sizes of 1..5 units from a seeded generator.
. "$here/bench/pressure_corpus.sh"
pressure_corpus "$work/corpus"
echo "unit sizes in corpus order: $(for f in "$work"/corpus/*.wav; do echo -n "$(( $(stat -c %s "$f") / (UNIT_KIB * 1024) ))"; done)"
hog=("$memhog" --mib-per-mib 1024 --ramp-ms "$RAMP_MS" --hold-s "$HOLD_S" --hold-ms-per-mib "$HOLD_MS_PER_MIB")

# run NAME OUT CMD...: runs CMD inside the cgroup (outputs in OUT), prints one result line.
run() {
  local name=$1 out=$2; shift 2
  rm -rf "$out"; mkdir -p "$out"
  local before; before=$(oom_kills)
  local t0; t0=$(date +%s.%N)
  sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" "$@" >"$work/$name.log" 2>&1 || true
  local t1; t1=$(date +%s.%N)
  local kills=$(( $(oom_kills) - before ))
  local done_n; done_n=$(find "$out" -name '*.done' -not -path '*/.align-batch/*' | wc -l)
  local lost=$((FILES - done_n))
  local makespan; makespan=$(echo "$t1 - $t0" | bc -l)
  printf '%-34s makespan %7.1f s   OOM kills %3d   files lost %3d\n' "$name" "$makespan" "$kills" "$lost"
  last_makespan=$makespan; last_kills=$kills; last_lost=$lost
}

echo "memory_pressure: $FILES files, peaks $((UNIT_KIB))..$((5 * UNIT_KIB)) MiB, cgroup limit $LIMIT_MIB MiB, $cores cores"

j4=$((4 * cores))
safe_j=0; safe_makespan=0
if [ -z "${ONLY_AB:-}" ]; then
run "parallel -j $j4" "$work/p$j4" parallel --halt never -j "$j4" "${hog[@]}" --in {} --out "$work/p$j4/{/.}.done" ::: "$work"/corpus/*.wav
p4_makespan=$last_makespan
run "parallel -j $j4 --memfree 320M" "$work/pm" parallel --halt never -j "$j4" --memfree 320M "${hog[@]}" --in {} --out "$work/pm/{/.}.done" ::: "$work"/corpus/*.wav

for j in $(seq $((j4 - 1)) -1 1); do
  run "parallel -j $j" "$work/p$j" parallel --halt never -j "$j" "${hog[@]}" --in {} --out "$work/p$j/{/.}.done" ::: "$work"/corpus/*.wav
  if [ "$last_kills" -eq 0 ] && [ "$last_lost" -eq 0 ]; then safe_j=$j; safe_makespan=$last_makespan; break; fi
done
fi

abo="$work/ab"
run "align-batch --workers auto (cold)" "$abo" "$ab" --progress plain --reserve 64M --out "$abo" "$work/corpus" -- "${hog[@]}" --in {in} --out {out}.done
ab_cold_makespan=$last_makespan; ab_cold_kills=$last_kills; ab_cold_lost=$last_lost
# Second run: same output dir (so the same history), --force to redo every file.
t0=$(date +%s.%N); before=$(oom_kills)
sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" "$ab" --progress plain --reserve 64M --force --out "$abo" "$work/corpus" -- "${hog[@]}" --in {in} --out {out}.done >"$work/ab-warm.log" 2>&1 || true
t1=$(date +%s.%N)
ab_warm_makespan=$(echo "$t1 - $t0" | bc -l); ab_warm_kills=$(( $(oom_kills) - before ))
ab_warm_lost=$(( FILES - $(find "$abo" -name '*.done' | wc -l) ))
printf '%-34s makespan %7.1f s   OOM kills %3d   files lost %3d\n' "align-batch --workers auto (history)" "$ab_warm_makespan" "$ab_warm_kills" "$ab_warm_lost"
grep -E '^(finished|interrupted|peak memory)' "$work/ab-warm.log" | sed 's/^/    /'

# Packing bound: sum over files of peak PSS × wall seconds, over the budget align-batch used.
last_run=$("$ab" history --out "$abo" runs --csv | awk -F, 'NR==2{print $1}')
budget=$("$ab" history --out "$abo" runs --csv | awk -F, 'NR==2{print $8}')
bound=$("$ab" history --out "$abo" run "$last_run" --csv |
  awk -F, -v b="$budget" 'NR>1 && $5=="ok" {s += $7 * $11} END {printf "%.2f", s / b}')
echo
printf 'packing bound (sum peak x duration / budget %d MiB): %s s\n' $((budget >> 20)) "$bound"
if [ "$safe_j" -gt 0 ]; then
  printf 'largest safe static -j: %d (makespan %.1f s)\n' "$safe_j" "$safe_makespan"
  printf 'ratio align-batch (history) / best safe static -j: %.2f   (target <= 0.85)\n' "$(echo "$ab_warm_makespan / $safe_makespan" | bc -l)"
else
  echo "no static -j finished without an OOM kill"
fi
printf 'ratio align-batch (history) / packing bound:        %.2f   (target <= 1.25)\n' "$(echo "$ab_warm_makespan / $bound" | bc -l)"
[ "$safe_j" -gt 0 ] && printf 'ratio align-batch (cold) / best safe static -j:      %.2f\n' "$(echo "$ab_cold_makespan / $safe_makespan" | bc -l)"
exit 0
