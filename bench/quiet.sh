#!/usr/bin/env bash
# Runs a benchmark with almost all of the CPU on a machine that is busy with other work: in a cpu
# cgroup (v1) of its own with the largest cpu.shares. Other work sits in the kernel's autogroups
# (one per session, weight 1024 each), so `nice` cannot do this: a nice -10 benchmark still got
# about a third of the CPU beside four compiles. The group is removed at the end, whatever happens.
#
#   bench/quiet.sh COMMAND ARGS...      (as root; e.g. bench/quiet.sh bench/eta.sh)
#
# Without a writable /sys/fs/cgroup/cpu it says so and runs the command as it is.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: bench/quiet.sh COMMAND ARGS..." >&2; exit 2; }
root=/sys/fs/cgroup/cpu
if [ ! -w "$root" ] || [ ! -e "$root/cpu.shares" ]; then
  echo "quiet.sh: no writable cpu cgroup (v1) at $root; running without it, beside whatever else runs" >&2
  exec "$@"
fi
group=$root/ab-quiet-$$
mkdir "$group"
cleanup() {
  # Anything still in the group goes back to the root group before the group is removed.
  while read -r pid; do echo "$pid" > "$root/cgroup.procs" 2>/dev/null || true; done < "$group/cgroup.procs"
  rmdir "$group" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo 262144 > "$group/cpu.shares"
rc=0
( echo "$BASHPID" > "$group/cgroup.procs" && exec "$@" ) || rc=$?
exit "$rc"
