#!/usr/bin/env bash
# Many tiny jobs: align-batch's own cost per job beside xargs -P and GNU parallel, side by side in
# one run, at several corpus sizes; prints figures (ratios against the peers), no pass/fail.
#
#   bench/many_jobs.sh [BUILD_DIR]      (default: build)
#   env SIZES="10000 100000"            corpus sizes (multiples of 1000; 1000000 takes a while:
#                                       about 6 min to write the files, 20-30 min to run the peers)
#       WORKERS=2                       jobs at once, for every contestant
#       PARALLEL_MAX=10000              GNU parallel only up to this size (here it manages ~40-300
#                                       jobs/s: 100,000 jobs would take it 5-40 min)
#       NOHIST_MAX=all                  align-batch --no-history only up to this size (a number)
#       XARGS_MAX=all                   xargs -P only up to this size: 1,000,000 jobs of both
#                                       contestants do not fit in one bench-lock slot here (at
#                                       ~600 jobs/s each ~28 min); its jobs/s is flat in the size
#                                       (it holds nothing per job), so vs_xargs then uses its
#                                       jobs/s at the largest size it ran, marked with a '*'
#       CORPUS=DIR                      where the tiny WAVs live (default a temp dir, removed at
#                                       the end); given, it is kept and reused by later runs
#       REPORT=0                        1: align-batch also writes its end-of-run report (above
#                                       2,000 jobs drawn in aggregate: tens of kB)
#
# Each job is `/bin/true FILE OUT` over 10 ms WAVs (bench/make_tiny_corpus.py, 1000 a directory).
# Contestants: xargs -P WORKERS -n1, GNU parallel -j WORKERS, align-batch --workers WORKERS with the
# memory guard on and history written (its default), and align-batch --no-history. Per contestant:
# wall time, jobs/s, jobs/s as a share of xargs', and the parent's own CPU per job (its utime +
# stime apart from its children's: bench/own_cpu.py). Per size, the parent's memory per queued
# file: its VmHWM once every file is queued (a run stopped when its first job starts; above a
# one-file run's), the whole run's peak RSS, and --dry-run's; and the corpus scan time the run
# reports.
# Last, align-batch's parent CPU per job at the largest size over the smallest: flat is 1.0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build}
sizes=${SIZES:-10000 100000}
workers=${WORKERS:-2}
parallel_max=${PARALLEL_MAX:-10000}
nohist_max=${NOHIST_MAX:-all}
xargs_max=${XARGS_MAX:-all}
report=${REPORT:-0}
report_flag=--no-report
[ "$report" = 1 ] && report_flag=""
ab=$build/orchestrator/align-batch
py=/usr/bin/python3
[ -x "$ab" ] || { echo "many_jobs.sh: $ab not built; run cmake --build $build --target align-batch" >&2; exit 2; }
command -v parallel >/dev/null || { echo "many_jobs.sh: needs GNU parallel (scripts/setup.sh bench)" >&2; exit 2; }
ab=$(realpath "$ab")
own_cpu="$py $root/bench/own_cpu.py"

tmp=$(mktemp -d /tmp/ab-bench-many.XXXXXX)
corpus=${CORPUS:-$tmp/corpus}
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

largest=0
for n in $sizes; do
  [ $((n % 1000)) = 0 ] || { echo "many_jobs.sh: size $n is not a multiple of 1000" >&2; exit 2; }
  [ "$n" -gt "$largest" ] && largest=$n
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "writing up to $largest tiny WAVs under $corpus ..."
"$py" "$root/bench/make_tiny_corpus.py" "$corpus" "$largest"

# fields of an own_cpu.py line: wall_s own_user_s own_sys_s children_cpu_s maxrss_kib exit_code
field() { cut -d' ' -f"$2" "$1"; }
own_s() { awk '{ printf "%.2f", $2 + $3 }' "$1"; }

# A one-file dry run: the parent's RSS before any corpus.
"$ab" --dry-run --no-history --out "$tmp/out-dry" "$corpus/d0000/f0000000.wav" -- /bin/true {in} {out} > /dev/null
$own_cpu "$tmp/base" "$ab" --dry-run --no-history --out "$tmp/out-dry" "$corpus/d0000/f0000000.wav" -- /bin/true {in} {out} > /dev/null
base_kib=$(field "$tmp/base" 5)
$own_cpu "$tmp/base_run" "$ab" --workers "$workers" --no-report --out "$tmp/out-one" "$corpus/d0000/f0000000.wav" -- /bin/true {in} {out} > /dev/null 2>&1
base_run_kib=$(field "$tmp/base_run" 5)
rm -rf "$tmp/out-one"

# The parent's VmHWM (KiB) once it has queued every file of DIRS...: the run is stopped (SIGTERM)
# as its first job starts, after scan, plan and queue, the peak of a corpus's queue. Counted above
# a whole one-file run's peak.
queued_hwm_kib() {
  local out=$tmp/out-queued
  rm -rf "$out"
  "$ab" --workers "$workers" --progress plain --no-report --out "$out" "$@" -- /bin/true {in} {out} > /dev/null 2> "$tmp/queued.err" &
  local pid=$! hwm=""
  while kill -0 "$pid" 2>/dev/null; do
    if grep -qs '^start ' "$tmp/queued.err"; then
      hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
      kill -TERM "$pid"
      break
    fi
    sleep 0.2
  done
  wait "$pid" 2>/dev/null || true
  rm -rf "$out"
  echo "${hwm:-0}"
}
xargs_rate=""  # jobs/s of xargs at the largest size it ran (XARGS_MAX)

declare -A per_job_ms
printf '\n%-9s %-26s %9s %9s %9s %12s\n' jobs contestant wall_s jobs/s vs_xargs parent_ms/job
for n in $sizes; do
  dirs=()
  for ((d = 0; d < n / 1000; d++)); do dirs+=("$corpus/$(printf 'd%04d' "$d")"); done
  find "${dirs[@]}" -name '*.wav' | sort > "$tmp/list"
  xargs -d '\n' cat < "$tmp/list" > /dev/null  # a warm page cache for everyone

  contestants=""
  if [ "$xargs_max" = all ] || [ "$n" -le "$xargs_max" ]; then
    $own_cpu "$tmp/xargs" xargs -d '\n' -P "$workers" -n1 /bin/true < "$tmp/list"
    contestants="xargs"
    xargs_rate=$(awk -v n="$n" -v w="$(field "$tmp/xargs" 1)" 'BEGIN { printf "%.3f", n / w }')
    xargs_mark=""
  else
    xargs_mark="*"
  fi
  if [ "$n" -le "$parallel_max" ]; then
    $own_cpu "$tmp/parallel" parallel -j "$workers" /bin/true {} "$tmp/out-par/{/.}" < "$tmp/list"
    contestants="$contestants parallel"
  fi
  contestants="$contestants ab"
  rm -rf "$tmp/out-ab" "$tmp/out-nohist"
  $own_cpu "$tmp/ab" "$ab" --workers "$workers" --progress plain $report_flag --out "$tmp/out-ab" "${dirs[@]}" \
    -- /bin/true {in} {out} > "$tmp/ab.out" 2> "$tmp/ab.err" || { echo "align-batch failed:"; tail -5 "$tmp/ab.err"; exit 1; }
  if [ "$nohist_max" = all ] || [ "$n" -le "$nohist_max" ]; then
    $own_cpu "$tmp/nohist" "$ab" --workers "$workers" --progress plain --no-history $report_flag --out "$tmp/out-nohist" "${dirs[@]}" \
      -- /bin/true {in} {out} > /dev/null 2>&1
    contestants="$contestants nohist"
  fi
  grep -q "finished: $n done" "$tmp/ab.out" || { echo "align-batch did not finish all $n jobs:"; tail -3 "$tmp/ab.out"; exit 1; }

  for c in $contestants; do
    wall=$(field "$tmp/$c" 1)
    case $c in
      xargs) name="xargs -P$workers" ;;
      parallel) name="GNU parallel -j$workers" ;;
      ab) name="align-batch" ;;
      nohist) name="align-batch --no-history" ;;
    esac
    own=$(own_s "$tmp/$c")
    awk -v n="$n" -v name="$name" -v w="$wall" -v xr="$xargs_rate" -v mark="$xargs_mark" -v own="$own" \
      'BEGIN { vs = xr > 0 ? sprintf("%7.2fx%1s", n / w / xr, mark) : sprintf("%9s", "-");
               printf "%-9d %-26s %9.1f %9.0f %9s %12.3f\n", n, name, w, n / w, vs, own * 1000 / n }'
  done
  per_job_ms[$n]=$(awk -v own="$(own_s "$tmp/ab")" -v n="$n" 'BEGIN { printf "%.4f", own * 1000 / n }')

  # The queue's memory: --dry-run's peak RSS over a one-file dry run, per file.
  $own_cpu "$tmp/dry" "$ab" --dry-run --no-history --out "$tmp/out-dry" "${dirs[@]}" -- /bin/true {in} {out} > /dev/null 2> "$tmp/dry.err"
  scan=$(sed -n 's/.*scanned the corpus in \([0-9.]*\) s.*/\1/p' "$tmp/ab.err" | head -1)
  queued=$(queued_hwm_kib "${dirs[@]}")
  awk -v n="$n" -v rss="$(field "$tmp/dry" 5)" -v base="$base_kib" -v run_rss="$(field "$tmp/ab" 5)" \
    -v run_base="$base_run_kib" -v q="$queued" -v qbase="$base_run_kib" -v scan="${scan:-<1}" \
    'BEGIN { printf "%-9d memory per queued file: %.0f bytes queued (VmHWM %.0f MiB); the whole run %.0f bytes (peak RSS %.0f MiB), --dry-run %.0f bytes (%.0f MiB); scan %s s\n",
             n, (q - qbase) * 1024 / n, q / 1024, (run_rss - run_base) * 1024 / n, run_rss / 1024, (rss - base) * 1024 / n, rss / 1024, scan }'
  rm -rf "$tmp/out-ab" "$tmp/out-nohist" "$tmp/out-par" "$tmp/out-dry"
done

smallest=$(printf '%s\n' $sizes | sort -n | head -1)
if [ "$smallest" != "$largest" ]; then
  awk -v a="${per_job_ms[$largest]}" -v b="${per_job_ms[$smallest]}" -v l="$largest" -v s="$smallest" \
    'BEGIN { printf "\nalign-batch parent CPU per job, %d jobs over %d jobs: %.2f (flat: 1.0)\n", l, s, a / b }'
fi
