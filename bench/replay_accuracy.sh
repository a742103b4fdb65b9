#!/usr/bin/env bash
# bench/replay_accuracy.sh: does `align-batch replay` predict real runs? (issue 6's proof)
#
# A corpus of 24 files whose jobs' peaks differ five-fold and grow with file size (memhog
# allocating 80 MiB per MiB of input, ramping over 1.5 s, holding 2 s) runs for real three times
# under a 1.5 GiB budget: first without history, then twice with it. Each run is replayed under
# its own settings (the first with --cold, as a first run) and both sides are printed: makespan
# (target: within 15%) and peak memory (target: within 10%). Then `replay --sweep --apply` picks
# a setting, which is run for real beside the default to show it is at least as fast and makes
# no OOM kill.
#
# Then the built-in engine (persistent align-batch-worker processes, the shipped model) on
# examples/corpus with --workers auto, twice: replaying each run must reproduce its real
# concurrency cap exactly and its makespan within 5%; and `replay --sweep`'s recommendation is run
# for real beside the default, 5 pairs in alternating order. Two runs of these 3 s jobs differ by a
# few % on their own, so "not slower" is judged on the median pair against the default's spread.
#
# Usage: bench/replay_accuracy.sh [BUILD_DIR]   (default: build; builds align-batch and memhog)
# Replays with history use predictions fitted on all of the key's recorded jobs, while the real
# run had only the runs before it: a small difference on a corpus that repeats.
set -euo pipefail

. "$(dirname "$0")/replay_lib.sh"

work=$(mktemp -d /tmp/ab-replay-accuracy.XXXXXX)
trap 'rm -rf "$work"' EXIT
zero_corpus "$work/corpus" 24
budget=1500M

# real LABEL ARGS...: one real run; appends "LABEL wall_s peak_bytes guard_kills oom_deaths failed".
real() {
  local label=$1
  shift
  "$ab" "$work/corpus" --out "$work/out" --mem-budget "$budget" --force --progress json "$@" \
    -- "$memhog" --in {in} --mib-per-mib 80 --ramp-ms 1500 --hold-s 2 --out {out}.done \
    2>/dev/null | python3 -c '
import json, sys
label = sys.argv[1]
for line in sys.stdin:
    e = json.loads(line)
    if e.get("event") == "summary":
        print(label, e["wall_s"], e["peak_pss_bytes"], e["guard_killed"], e["oom_deaths"], len(e["failed"]))
' "$label" >>"$work/real.txt"
}

# replayed RUN_ID ARGS...: prints "makespan_s peak_bytes guard_kills".
replayed() {
  local run=$1
  shift
  "$ab" replay --out "$work/out" --run "$run" --json "$@" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r["makespan_s"], r["peak_total_bytes"], r["guard_kills"])'
}

echo "three real runs of 24 jobs under a $budget budget (about a minute)..."
real run1
real run2
real run3

printf "\n%-22s %10s %10s %7s %10s %10s %7s\n" "" "real s" "replay s" "ratio" "real MiB" "replay MiB" "ratio"
worst_time=0
worst_peak=0
for run in 1 2 3; do
  read -r _ wall peak _ _ _ < <(sed -n "${run}p" "$work/real.txt")
  args=()
  [ "$run" = 1 ] && args=(--cold)
  read -r r_wall r_peak _ < <(replayed "$run" "${args[@]}")
  python3 - "$run" "$wall" "$r_wall" "$peak" "$r_peak" <<'EOF' >>"$work/rows.txt"
import sys
run, wall, r_wall, peak, r_peak = sys.argv[1], *map(float, sys.argv[2:])
label = f"run {run}" + (" (no history)" if run == "1" else " (history)")
print(f"{label:<22} {wall:>10.2f} {r_wall:>10.2f} {r_wall / wall:>7.3f} {peak / 2**20:>10.1f} "
      f"{r_peak / 2**20:>10.1f} {r_peak / peak:>7.3f}")
EOF
  tail -1 "$work/rows.txt"
done
python3 - "$work/rows.txt" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1])]
t = max(abs(float(r[-4]) - 1) for r in rows)
p = max(abs(float(r[-1]) - 1) for r in rows)
print(f"largest makespan error {t:.1%} (target 15%), largest peak error {p:.1%} (target 10%)")
EOF

echo
echo "sweep over run 3, applied to the key:"
"$ab" replay --out "$work/out" --run 3 --sweep --apply | grep -E "^\*|^recommended|^stored"
read -r workers high_water margin < <("$ab" replay --out "$work/out" --run 3 --sweep --json | python3 -c '
import json, sys
for r in json.load(sys.stdin)["rows"]:
    if r["recommended"]:
        print(r["workers"], r["high_water"], r["margin"])')
if [ "$workers" = auto ] && [ "$high_water" = 0.9 ] && [ "$margin" = 1.0 ]; then
  echo "the recommended setting is the default: replay finds nothing faster without kills"
fi
echo "running the recommended setting for real (--workers $workers --high-water $high_water;" \
     "prediction margin x$margin is replay-only) beside the default..."
real default
real recommended --workers "$workers" --high-water "$high_water"
printf "\n%-14s %10s %10s %12s %11s %7s\n" "" "makespan s" "peak MiB" "guard kills" "OOM deaths" "failed"
tail -2 "$work/real.txt" | while read -r label wall peak kills ooms failed; do
  printf "%-14s %10.2f %10.1f %12s %11s %7s\n" "$label" "$wall" "$(python3 -c "print($peak / 2**20)")" \
    "$kills" "$ooms" "$failed"
done
python3 - "$work/real.txt" <<'EOF'
import sys
rows = {l.split()[0]: l.split() for l in open(sys.argv[1])}
d, r = float(rows["default"][1]), float(rows["recommended"][1])
print(f"recommended / default makespan: {r / d:.3f} (target: at most 1.0; real runs vary by a few % "
      f"on a loaded machine)")
EOF
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- The built-in engine ----
nice cmake --build "$build" -j2 --target align-batch-worker >/dev/null
bout=$work/builtin-out
# builtin LABEL ARGS...: one real run of examples/corpus; appends "LABEL wall_s peak_bytes max_running".
builtin() {
  local label=$1
  shift
  "$ab" "$here/examples/corpus" --out "$bout" --force --progress json "$@" 2>/dev/null | python3 -c '
import json, sys
label, running, most = sys.argv[1], 0, 0
for line in sys.stdin:
    e = json.loads(line)
    if e.get("event") == "start":
        running += 1
        most = max(most, running)
    elif e.get("event") == "end":
        running -= 1
    elif e.get("event") == "summary":
        print(label, e["wall_s"], e["peak_pss_bytes"], most)
' "$label" >>"$work/builtin.txt"
}
echo
echo "built-in engine: examples/corpus with --workers auto, two real runs (no history, then history)..."
builtin run1
builtin run2
printf "\n%-22s %10s %10s %7s %12s %14s\n" "" "real s" "replay s" "ratio" "real at most" "replay at most"
for run in 1 2; do
  read -r _ wall _ most < <(sed -n "${run}p" "$work/builtin.txt")
  args=()
  [ "$run" = 1 ] && args=(--cold)
  read -r r_wall r_most < <("$ab" replay --out "$bout" --run "$run" --json "${args[@]}" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r["makespan_s"], r["peak_running"])')
  python3 - "$run" "$wall" "$r_wall" "$most" "$r_most" <<'EOF'
import sys
run, wall, r_wall, most, r_most = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
label = f"run {run}" + (" (no history)" if run == "1" else " (history)")
print(f"{label:<22} {wall:>10.2f} {r_wall:>10.2f} {r_wall / wall:>7.3f} {most:>12} {r_most:>14}"
      + ("" if most == r_most else "   <- the cap differs"))
EOF
done
read -r bworkers bhigh < <("$ab" replay --out "$bout" --run 2 --sweep --json | python3 -c '
import json, sys
for r in json.load(sys.stdin)["rows"]:
    if r["recommended"]:
        print(r["workers"], r["high_water"])')
echo "sweep over run 2 recommends --workers $bworkers --high-water $bhigh; 5 real pairs beside the default, alternating:"
for pair in 1 2 3 4 5; do
  if [ $((pair % 2)) = 1 ]; then
    builtin default
    builtin recommended --workers "$bworkers" --high-water "$bhigh"
  else
    builtin recommended --workers "$bworkers" --high-water "$bhigh"
    builtin default
  fi
done
python3 - "$work/builtin.txt" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1])][2:]
d = [float(r[1]) for r in rows if r[0] == "default"]
r = [float(r[1]) for r in rows if r[0] == "recommended"]
print("default     s:", " ".join(f"{x:.2f}" for x in d))
print("recommended s:", " ".join(f"{x:.2f}" for x in r))
ratios = sorted(b / a for a, b in zip(d, r))
print(f"recommended / default makespan, pair by pair: {' '.join(f'{b / a:.3f}' for a, b in zip(d, r))}")
# The default against itself: how much two runs of the same settings differ here (the noise).
noise = max(d) / min(d) - 1
median = ratios[len(ratios) // 2]
print(f"median {median:.3f}, total {sum(r) / sum(d):.3f}; the default's own runs spread {noise * 100:.1f}% "
      f"(target: not slower: median <= 1 + that spread) -> {'met' if median <= 1 + noise else 'MISSED'}")
EOF
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
