# Sourced by the replay benchmarks: builds align-batch and memhog in BUILD_DIR (default build/) and
# makes corpora of zero-filled files whose sizes cycle through 1..5 MiB (memhog turns size into memory).
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
nice cmake --build "$build" -j2 --target align-batch memhog >/dev/null
ab=$build/orchestrator/align-batch
memhog=$build/tests/memhog

# zero_corpus DIR N: files f1..fN.wav of ((i % 5) + 1) MiB.
zero_corpus() {
  mkdir -p "$1"
  for i in $(seq 1 "$2"); do
    head -c $(( ((i % 5) + 1) * 1024 * 1024 )) /dev/zero >"$1/f$i.wav"
  done
}
