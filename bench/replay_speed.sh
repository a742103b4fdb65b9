#!/usr/bin/env bash
# bench/replay_speed.sh: how fast `align-batch replay` simulates 1,000,000 jobs (target: < 10 s),
# against the same replay of 100,000 jobs in the same script (the per-job cost ratio shows the
# scaling: 1.0 is linear).
#
# The recorded jobs come from a real run: 16 memhog jobs (80-400 MiB, peaks growing with input
# size, 1.5 s ramps) under a 1.5 GiB budget; `--scale` then draws 100,000 or 1,000,000 jobs from
# them. Two machines are replayed: the recorded one (2 cores, 1.5 GiB, about 6 jobs at once) and
# a 64-core 256 GiB node (about 1,000 jobs at once), plus a worst case where predictions are 20%
# too low, so that many jobs outgrow them and the scheduler sees every sample and kills often,
# and a first run (--cold), where history is refitted 25 times as jobs finish.
#
# Usage: bench/replay_speed.sh [BUILD_DIR]   (default: build; builds align-batch and memhog)
# CPU seconds (user + sys) are printed beside wall seconds: on a loaded machine wall time
# includes waiting for a core.
set -euo pipefail

. "$(dirname "$0")/replay_lib.sh"

work=$(mktemp -d /tmp/ab-replay-speed.XXXXXX)
trap 'rm -rf "$work"' EXIT
zero_corpus "$work/corpus" 16

echo "recording: 16 memhog jobs under a 1.5 GiB budget (about 20 s)..."
"$ab" "$work/corpus" --out "$work/out" --mem-budget 1500M --progress plain \
  -- "$memhog" --in {in} --mib-per-mib 80 --ramp-ms 1500 --hold-s 2 --out {out}.done >/dev/null 2>&1

# replay LABEL JOBS ARGS...: prints one row.
replay() {
  local label=$1 jobs=$2
  shift 2
  local scale
  scale=$(python3 -c "print($jobs / 16)")
  local timing="$work/time.txt" out="$work/replay.json"
  /usr/bin/time -f "%U %S %e %M" -o "$timing" \
    "$ab" replay --out "$work/out" --scale "$scale" --json "$@" >"$out"
  python3 - "$label" "$out" "$timing" <<'EOF'
import json, sys
label, out, timing = sys.argv[1:4]
d = json.load(open(out))
r = d["result"]
user, sys_s, wall, rss_kb = open(timing).read().split()
cpu = float(user) + float(sys_s)
print(f"{label:<34} {d['jobs']:>9} {r['makespan_s']:>14.0f} {r['average_concurrency']:>9.1f} "
      f"{r['guard_kills']:>8} {cpu:>8.2f} {float(wall):>8.2f} {cpu / d['jobs'] * 1e6:>8.2f} "
      f"{int(rss_kb) // 1024:>7}")
with open(out + ".rows", "a") as f:
    f.write(f"{label}\t{d['jobs']}\t{cpu}\t{wall}\n")
EOF
}

printf "%-34s %9s %14s %9s %8s %8s %8s %8s %7s\n" "replay" "jobs" "simulated s" "avg conc" \
  "kills" "cpu s" "wall s" "us/job" "max MiB"
replay "recorded machine (2 cores)" 100000
replay "recorded machine (2 cores)" 1000000
replay "64 cores, 256 GiB" 100000 --cores 64 --mem-budget 256G
replay "64 cores, 256 GiB" 1000000 --cores 64 --mem-budget 256G
replay "2 cores, predictions 20% low" 100000 --margin 0.8
replay "2 cores, predictions 20% low" 1000000 --margin 0.8
replay "2 cores, first run (--cold)" 100000 --cold
replay "2 cores, first run (--cold)" 1000000 --cold

python3 - "$work/replay.json.rows" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print()
worst = 0.0
for small, big in zip(rows[0::2], rows[1::2]):
    ratio = (float(big[2]) / int(big[1])) / (float(small[2]) / int(small[1]))
    worst = max(worst, float(big[2]))
    print(f"{big[0]:<34} per-job cost, 1,000,000 vs 100,000 jobs: {ratio:.2f}x")
print(f"slowest 1,000,000-job replay: {worst:.2f} CPU s (target: under 10 s)")
EOF
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
