#!/usr/bin/env bash
# End-to-end throughput: `align-batch --workers auto` over a real speech corpus against what a user
# would otherwise run, one after the other on the same corpus and machine; prints figures, no pass/fail.
#
#   bench/throughput.sh [BUILD_DIR]        (default: build)   env COPIES=5 (corpus copies)
#
# Corpus: examples/corpus (28 espeak-ng files, WAV 8/16/22.05 kHz, FLAC, Ogg, MP3, 3 s to 10 min,
# 25 min of audio, transcripts beside them) copied COPIES times into a temp dir (default 5: 140
# files, 2.1 h of audio; about 4 min for the whole script on 2 cores). Contestants, every one
# aligning every file with en_char_ctc.pt:
#   align-batch    align-batch --workers auto --task align --out FRESH CORPUS (persistent workers,
#                  built-in engine; on this machine one worker per core with 1 LibTorch thread each)
#   py per file    GNU parallel -j NPROC, one bench/throughput_ref.py process per file (Python/PyTorch:
#                  torch.jit.load each time, whole-file forward, numpy CTC Viterbi, JSON out)
#   py per core    NPROC throughput_ref.py processes, each over its share of the list (model loaded
#                  once per process; shares balanced by audio duration, longest first, so the split
#                  favours this peer)
#   worker/file    GNU parallel -j NPROC, one align-batch-worker per file (`echo JOB | worker`): the
#                  same C++ engine without align-batch's persistent workers and scheduling
# Every peer runs with one torch/LibTorch intra-op thread per process and NPROC processes, so each uses
# as many threads as cores. The Python peer decodes non-WAV and non-16 kHz files with a `sox` child
# process (Python has no soundfile/torchaudio here); that decoding is part of its cost, as libsndfile
# and libsamplerate are part of align-batch's.
#
# Per contestant: wall time, files/hour, wall time / align-batch's, CPU time (user + sys) of the whole
# process tree and its ratio, peak memory of the tree (each runs in its own cgroup v1 memory group:
# memory.max_usage_in_bytes, which includes the page cache of the outputs it writes; align-batch writes
# .TextGrid/.json/.ctm, the Python peer .json only),
# and the count of outputs (each must have aligned every file). Then agreement of word start times:
# align-batch vs the Python peer (same model, same Viterbi: differences should be ~0), and align-batch
# vs worker/file (should be identical).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build}
copies=${COPIES:-5}
ab=$build/orchestrator/align-batch
worker=$build/worker/align-batch-worker
model=$root/examples/models/en_char_ctc.pt
py=/usr/bin/python3
ref=$root/bench/throughput_ref.py
for b in "$ab" "$worker"; do
  [ -x "$b" ] || { echo "throughput.sh: $b not built; run cmake --build $build --target align-batch align-batch-worker" >&2; exit 2; }
done
for c in parallel sox soxi; do
  command -v "$c" >/dev/null || { echo "throughput.sh: needs $c (scripts/setup.sh bench)" >&2; exit 2; }
done
"$py" -c 'import torch, numpy' 2>/dev/null || { echo "throughput.sh: $py needs torch and numpy (apt-get install python3-torch)" >&2; exit 2; }
ab=$(realpath "$ab"); worker=$(realpath "$worker")
cores=$(nproc)

tmp=$(mktemp -d /tmp/ab-bench-throughput.XXXXXX)
cgroups=()
cleanup() {
  local cg pid
  for cg in "${cgroups[@]}"; do
    [ -d "$cg" ] || continue
    # Anything still inside (an interrupted run) was started by this script.
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$cg/cgroup.procs" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$cg" 2>/dev/null && break; sleep 0.2; done
    [ -d "$cg" ] && echo "throughput.sh: could not remove cgroup $cg" >&2
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Our own cgroup v1 memory group; each contestant runs in a child of it.
cg_parent=/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
cg_ok=1
probe=$cg_parent/ab-throughput-probe-$$
if mkdir "$probe" 2>/dev/null; then rmdir "$probe"; else
  cg_ok=0
  echo "throughput.sh: cannot make cgroups under $cg_parent (cgroup v1 memory, needs root); peak memory not measured"
fi

# --- the corpus ---
corpus=$tmp/corpus
for ((i = 1; i <= copies; i++)); do
  mkdir -p "$corpus/c$i"
  cp -r examples/corpus/. "$corpus/c$i/"
done
find "$corpus" -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.ogg' -o -name '*.mp3' \) | sort > "$tmp/files"
nfiles=$(wc -l < "$tmp/files")
# Durations (for the per-core peer's balanced split and the audio total), then a warm page cache.
while read -r f; do printf '%s\t%s\n' "$(soxi -D "$f")" "$f"; done < "$tmp/files" > "$tmp/durations"
audio_s=$(awk -F'\t' '{ s += $1 } END { printf "%.0f", s }' "$tmp/durations")
sort -t$'\t' -k1,1gr "$tmp/durations" | awk -F'\t' -v n="$cores" -v dir="$tmp" '
  BEGIN { for (i = 0; i < n; i++) load[i] = 0 }
  { best = 0; for (i = 1; i < n; i++) if (load[i] < load[best]) best = i
    load[best] += $1; print $2 > (dir "/part" best) }'
xargs -d '\n' cat < "$tmp/files" > /dev/null
# Jobs for worker/file: one protocol line per file, outputs mirroring the corpus tree.
"$py" - "$corpus" "$tmp/out-worker" "$tmp/files" > "$tmp/jobs.jsonl" <<'EOF'
import json, os, sys
corpus, out, files = sys.argv[1:]
for i, line in enumerate(open(files)):
    audio = line.rstrip("\n")
    stem = os.path.splitext(audio)[0]
    txt = stem + ".txt" if os.path.exists(stem + ".txt") else stem + ".lab"
    dest = os.path.join(out, os.path.relpath(stem, corpus))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    print(json.dumps({"id": i, "audio": audio, "transcript": txt, "out": dest, "task": "align"}))
EOF

# Warm-up, untimed: each program once on one small file (shared libraries and the model in the page cache).
small=$(sort -t$'\t' -k1,1g "$tmp/durations" | head -1 | cut -f2)
"$ab" --workers auto --task align --progress plain --no-history --out "$tmp/warm-ab" "$small" > /dev/null 2>&1
"$py" "$ref" --model "$model" --root "$corpus" --out "$tmp/warm-py" "$small"
head -1 "$tmp/jobs.jsonl" | sed "s#$tmp/out-worker#$tmp/warm-worker#" > "$tmp/warm.jsonl"
mkdir -p "$(dirname "$(sed -n 's/.*"out": "\([^"]*\)".*/\1/p' "$tmp/warm.jsonl")")"
"$worker" --model "$model" --threads 1 < "$tmp/warm.jsonl" > /dev/null 2>&1
rm -rf "$tmp"/warm-*

echo "machine: $cores cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "corpus: examples/corpus x $copies = $nfiles files, $(awk -v s="$audio_s" 'BEGIN { printf "%.1f h", s / 3600 }') of audio, $(du -sh "$corpus" | cut -f1)"
echo "model: examples/models/en_char_ctc.pt; every peer: $cores processes x 1 thread"
echo

# run NAME CMD... : runs CMD in a fresh memory cgroup; sets WALL_S, CPU_S, PEAK_BYTES, RC
run() {
  local name=$1 cg="" t0 t1
  shift
  if [ "$cg_ok" = 1 ]; then
    cg=$cg_parent/ab-throughput-$$-$name
    mkdir "$cg"
    cgroups+=("$cg")
  fi
  t0=$(date +%s.%N)
  RC=0
  # /usr/bin/time's user + sys covers every descendant that was waited for (workers, sox children).
  local timed=(/usr/bin/time -f '%U %S' -o "$tmp/cpu-$name" "$@")
  if [ -n "$cg" ]; then
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "${timed[@]}" || RC=$?
  else
    "${timed[@]}" || RC=$?
  fi
  CPU_S=$(awk '{ printf "%.1f", $1 + $2 }' "$tmp/cpu-$name")
  t1=$(date +%s.%N)
  WALL_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  PEAK_BYTES=0
  if [ -n "$cg" ]; then
    PEAK_BYTES=$(cat "$cg/memory.max_usage_in_bytes")
    rmdir "$cg" 2>/dev/null || true
  fi
}

rows=()
# record NAME OUTDIR : counts outputs and keeps a row
record() {
  local n
  n=$(find "$2" -name '*.json' -not -path '*/.align-batch/*' 2>/dev/null | wc -l)
  rows+=("$1|$WALL_S|$CPU_S|$PEAK_BYTES|$n|$RC|$(cut -d' ' -f1 /proc/loadavg)")
}

run align-batch "$ab" --workers auto --task align --progress plain --out "$tmp/out-ab" "$corpus" > "$tmp/ab.log" 2>&1
record "align-batch --workers auto" "$tmp/out-ab"
[ "$RC" = 0 ] || { echo "throughput.sh: align-batch exited $RC:"; tail -20 "$tmp/ab.log"; }

run py-file parallel -j "$cores" "$py" "$ref" --model "$model" --root "$corpus" --out "$tmp/out-py-file" --threads 1 --times "$tmp/times-py-file" {} :::: "$tmp/files" 2> "$tmp/py-file.log"
record "python, parallel -j$cores per file" "$tmp/out-py-file"

run py-core parallel -j "$cores" "xargs -d '\n' -a {} $py $ref --model $model --root $corpus --out $tmp/out-py-core --threads 1 --times $tmp/times-py-core" ::: "$tmp"/part* 2> "$tmp/py-core.log"
record "python, $cores processes over the list" "$tmp/out-py-core"

run worker-file parallel -j "$cores" "echo {} | $worker --model $model --threads 1" :::: "$tmp/jobs.jsonl" > "$tmp/worker-file.log" 2> /dev/null
record "align-batch-worker, parallel -j$cores per file" "$tmp/out-worker"

ab_wall=$(echo "${rows[0]}" | cut -d'|' -f2)
ab_cpu=$(echo "${rows[0]}" | cut -d'|' -f3)
printf '%-44s %8s %10s %9s %7s %8s %10s %9s %5s %5s\n' contestant "wall s" files/hour "x ab wall" "CPU s" "x ab CPU" \
  "peak MiB" aligned exit load
for row in "${rows[@]}"; do
  IFS='|' read -r name wall cpu peak n rc load <<< "$row"
  awk -v name="$name" -v w="$wall" -v c="$cpu" -v p="$peak" -v n="$n" -v total="$nfiles" -v abw="$ab_wall" \
      -v abc="$ab_cpu" -v rc="$rc" -v load="$load" -v cg="$cg_ok" 'BEGIN {
    printf "%-44s %8.1f %10.0f %9.2f %7.1f %8.2f %10s %5d/%-3d %5d %5s\n", name, w, total / w * 3600, w / abw, c,
      c / abc, (cg ? sprintf("%.0f", p / 1048576) : "n/a"), n, total, rc, load }'
done
echo "(x ab: / align-batch's; CPU: user + sys of the whole tree; load: 1-min load average after the run)"
grep -E '^(finished|peak memory)' "$tmp/ab.log" | sed 's/^/align-batch: /'
for log in py-file py-core; do
  [ -s "$tmp/$log.log" ] && { echo "$log errors:"; head -5 "$tmp/$log.log"; }
done
failed_jobs=$(grep -c '"ok":false' "$tmp/worker-file.log" || true)
[ "$failed_jobs" = 0 ] || { echo "worker/file: $failed_jobs failed jobs:"; grep '"ok":false' "$tmp/worker-file.log" | head -3; }
# Where the Python peer's time goes (summed over its processes; read includes the sox children).
for t in py-file py-core; do
  [ -s "$tmp/times-$t" ] || continue
  "$py" - "$tmp/times-$t" "$t" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = {k: sum(r[k] for r in rows) for k in ("load_s", "read_s", "forward_s", "viterbi_s", "wall_s")}
print(f"{sys.argv[2]}: {len(rows)} processes, summed wall {s['wall_s']:.1f} s: import torch + load model "
      f"{s['load_s']:.1f} s, read/decode audio {s['read_s']:.1f} s, model forward {s['forward_s']:.1f} s, "
      f"CTC Viterbi (numpy) {s['viterbi_s']:.1f} s")
PY
done

echo
"$py" - "$tmp/out-ab" "$tmp/out-py-core" "$tmp/out-worker" <<'EOF'
import glob, json, os, sys
import numpy as np
ab, py, wk = sys.argv[1:]
def compare(name, other):
    diffs, mismatched, missing = [], [], 0
    for f in sorted(glob.glob(os.path.join(ab, "**", "*.json"), recursive=True)):
        rel = os.path.relpath(f, ab)
        if rel.startswith(".align-batch"):
            continue
        g = os.path.join(other, rel)
        if not os.path.exists(g):
            missing += 1
            continue
        wa, wb = json.load(open(f))["words"], json.load(open(g))["words"]
        if [w["text"] for w in wa] != [w["text"] for w in wb]:
            mismatched.append(rel)
            continue
        diffs.extend(abs(x["start_s"] - y["start_s"]) for x, y in zip(wa, wb))
    d = np.array(diffs) * 1000.0
    print(f"word starts, align-batch vs {name}: {len(d)} words; |difference| median {np.median(d):.2f} ms, "
          f"p95 {np.percentile(d, 95):.2f} ms, max {d.max():.0f} ms, within 1 ms {np.mean(d < 1) * 100:.1f}%; "
          f"files with other words {len(mismatched)}, missing {missing}")
compare("python (per core)", py)
compare("align-batch-worker per file", wk)
EOF
