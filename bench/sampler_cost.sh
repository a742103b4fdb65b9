#!/bin/sh
# Sampler CPU cost: ProcSampler ticked at its default interval watching 16 live processes, as a
# percentage of one core (target < 1%), beside smaps-every-tick and a `ps` polling peer.
# Usage: bench/sampler_cost.sh [PROCESSES=16] [SECONDS=10] [MIB_EACH=64]
# Needs a C++17 compiler and libfmt-dev (both in scripts/setup.sh). Exit status 1 if the target is missed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
work=$(mktemp -d "${TMPDIR:-/tmp}/ab-sampler-cost.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Built straight from memguard's sources with the Release flags CMake uses, so the benchmark does not
# depend on the rest of the tree building.
srcs=$(ls "$root"/memguard/*.cpp | grep -v '_test\.cpp$')
c++ -std=c++17 -O3 -DNDEBUG -I"$root" -o "$work/sampler_cost" "$here/sampler_cost.cpp" $srcs -lfmt -lpthread -ldl
c++ -std=c++17 -O3 -DNDEBUG -o "$work/memhog" "$root/tests/memhog.cpp"
"$work/sampler_cost" "$work/memhog" "${1:-16}" "${2:-10}" "${3:-64}"
