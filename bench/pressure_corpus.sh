# Sourced by bench/memory_pressure.sh and bench/slurm.sh: the pressure corpus they both measure.
# pressure_corpus DIR: FILES zero-filled files DIR/f001.wav... of 1..5 units of UNIT_KIB KiB, the
# sizes drawn from a generator seeded by SEED (default 1), so every contestant (and every run with
# the same SEED) sees the same files in the same order. (A cyclic pattern such as 3,5,2,4,1,...
# would make every window of 5 files sum to the same memory, which no real corpus does and which
# flatters a static -j.)
pressure_corpus() {
  mkdir -p "$1"
  local i=0 k
  for k in $(awk -v n="$FILES" -v seed="${SEED:-1}" 'BEGIN {srand(seed); for (i = 0; i < n; i++) print 1 + int(rand() * 5)}'); do
    i=$((i + 1))
    head -c $((k * UNIT_KIB * 1024)) /dev/zero > "$1/$(printf 'f%03d' "$i").wav"
  done
}
