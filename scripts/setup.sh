#!/usr/bin/env bash
# Installs exactly the Debian packages align-batch needs, builds it, then does one thing:
#   scripts/setup.sh example   align the shipped example corpus (the README's first command)
#   scripts/setup.sh test      run the whole test suite (the README's second command; .ci/run),
#                              with headless chromium and python3-pil for the report's browser tests
#   scripts/setup.sh build     only install and build
#   scripts/setup.sh bench     also install the benchmarks' peers (GNU parallel, python3-torch, espeak-ng)
# Idempotent: apt-get skips what is installed, cmake and ccache rebuild only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-build}

# Build and test dependencies. Why each one is here is in the README's "Dependencies" table.
packages=(
  build-essential cmake ccache pkg-config
  libboost-dev                             # Boost.Interprocess: the workers' shared status blocks
  libtorch-dev                             # LibTorch: the worker's engine only
  libopenblas0-openmp                      # LibTorch's BLAS (libblas.so.3): 5-9x the reference BLAS on wav2vec2
  libsndfile1-dev libsamplerate0-dev       # audio decoding, streaming resampling
  libcli11-dev libsqlite3-dev libspdlog-dev libfmt-dev doctest-dev nlohmann-json3-dev
  libxxhash-dev                            # job keys: XXH3-128 of model files
  sox                                      # tests synthesise their audio, never download it
  python3                                  # tests: scripted stand-ins for a protocol worker
  python3-torchaudio                       # tests: tools/export_wav2vec2.py exports a real wav2vec2 architecture
  slurmctld slurmd slurm-client munge      # tests: a real single-node Slurm for --executor slurm
  slurmdbd mariadb-server                  # ... with accounting, so sacct reports MaxRSS
)
# The browser tests of run reports: headless chromium renders them, PIL reads the screenshots.
[ "$mode" = test ] && packages+=(chromium python3-pil)
# Benchmarks and the example generators: the peers we measure against, and espeak-ng speech.
[ "$mode" = bench ] && packages+=(parallel python3-torch espeak-ng libsox-fmt-all)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: missing Debian packages: ${missing[*]}; run as root (or with sudo) to install them" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${packages[@]}"
fi

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"

case "$mode" in
  build|bench) ;;
  example) ./build/orchestrator/align-batch examples/corpus ;;
  test)
    # Where the v1 memory controller is writable, the tests that need a real cgroup must run, not
    # skip (tests/testutil/cgroup_v1.h): CI fails instead of passing without them.
    if [ -w /sys/fs/cgroup/memory ]; then export AB_REQUIRE_CGROUP=1; fi
    cd build && ctest --output-on-failure -j "$jobs" ;;
  *) echo "setup.sh: unknown mode '$mode'; use example, test, build or bench" >&2; exit 2 ;;
esac
