#!/usr/bin/env bash
# How honest the live ETA is: align-batch over bench/throughput.sh's corpus (examples/corpus copied
# COPIES times: 140 files, 2.1 h of audio by default) with --progress json; at 25% and 50% of each
# run's wall time, the ETA the last event before that moment carried, against the time the run
# really still took. Side by side, the ETA the line used to print (files left × elapsed per file
# finished) at the same moments. Prints figures, no pass/fail (target: within 30%, ratio 0.7-1.3).
#
#   bench/eta.sh [BUILD_DIR]    (default: build)   env COPIES=5 RUNS=2
#
# The runs take about 9 s each on 2 idle cores: on a machine busy with other work the load, not
# the estimate, decides the ratios; run it as `bench/quiet.sh bench/eta.sh` there.
#
# Run 1 of each pair starts with no history (the ETA uses the run's own rate once it has 5% of the
# audio behind it); run 2 repeats it with --force on the same history (history's seconds per audio
# second blended with the run's own rate: docs/orchestrator.md, "ETA").
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
copies=${COPIES:-5}
runs=${RUNS:-2}
ab=$build/orchestrator/align-batch
py=/usr/bin/python3
[ -x "$ab" ] || { echo "eta.sh: $ab not built; run cmake --build $build" >&2; exit 2; }
ab=$(realpath "$ab")

tmp=$(mktemp -d /tmp/ab-bench-eta.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
for ((i = 1; i <= copies; i++)); do
  mkdir -p "$tmp/corpus/c$i"
  cp -r examples/corpus/. "$tmp/corpus/c$i/"
done
find "$tmp/corpus" -type f -exec cat {} + > /dev/null  # a warm page cache for every run

echo "eta.sh: $(find "$tmp/corpus" -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.ogg' -o -name '*.mp3' \) | wc -l) files," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-4s %-8s %6s | %9s %9s %8s | %9s %8s\n' pair history at real_left eta ratio old_eta ratio
for ((pair = 1; pair <= runs; pair++)); do
  rm -rf "$tmp/out"
  for kind in none warm; do
    extra=()
    [ "$kind" = warm ] && extra=(--force)
    start_ms=$(date +%s%3N)
    "$ab" --workers auto --task align --no-report --progress json --out "$tmp/out" "${extra[@]}" "$tmp/corpus" \
      > "$tmp/events.jsonl" 2> "$tmp/err" || { echo "eta.sh: run failed:" >&2; cat "$tmp/err" >&2; exit 1; }
    "$py" - "$tmp/events.jsonl" "$start_ms" "$pair" "$kind" <<'EOF'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
start = int(sys.argv[2]) / 1000.0
pair, kind = sys.argv[3], sys.argv[4]
end = next(e for e in events if e["event"] == "summary")["ts_ms"] / 1000.0
total = end - start
ends = [e for e in events if e["event"] in ("end", "progress")]
for share in (0.25, 0.50):
    at = start + share * total
    before = [e for e in ends if e["ts_ms"] / 1000.0 <= at]
    if not before:
        print(f"{pair:<4} {kind:<8} {share:6.0%} | no event yet")
        continue
    e = before[-1]
    left = end - e["ts_ms"] / 1000.0
    eta = e.get("eta_s")
    finished = e["done"] + e["failed"]
    old = e["elapsed_s"] / finished * (e["total"] - finished) if finished else None
    fmt = lambda v: "-" if v is None else f"{v:8.1f}s"
    ratio = lambda v: "-" if v is None or left <= 0 else f"{v / left:8.2f}"
    print(f"{pair:<4} {kind:<8} {share:6.0%} | {left:8.1f}s {fmt(eta)} {ratio(eta)} | {fmt(old)} {ratio(old)}")
print(f"{pair:<4} {kind:<8} total {total:.1f} s")
EOF
  done
done
