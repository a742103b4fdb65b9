#!/usr/bin/env bash
# A private single-node Slurm (Debian 12 slurm-wlm 22.05) for tests and benchmarks: munged,
# mariadbd + slurmdbd (accounting, so sacct reports MaxRSS), slurmctld and slurmd started by hand,
# every database, state, spool, log, pid and socket file under DIR.
#   scripts/slurm-node.sh start DIR [REAL_MEMORY_MB] [CPUS]   prints NAME=VALUE lines (env for sbatch etc.)
#   scripts/slurm-node.sh stop DIR                            stops the daemons, removes their cgroups
# Use: eval "$(scripts/slurm-node.sh start /tmp/x 2000 8)"; sbatch ...; scripts/slurm-node.sh stop /tmp/x
# SLURM_CONF in the printed environment points the client tools (sbatch, squeue, sacct, scancel) at
# this cluster. The node is called ab<pid>, so its cgroups (slurm_ab<pid> under the v1 hierarchies)
# are told apart from anything else on the machine; stop removes exactly those. Needs root.
set -euo pipefail
cmd=${1:?usage: slurm-node.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm-node.sh start|stop DIR}")

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stop() {
  [ -d "$dir" ] || return 0
  for d in slurmd slurmctld slurmdbd mysqld munged; do
    [ -f "$dir/$d.pid" ] || continue
    pid=$(cat "$dir/$d.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$d.pid"
  done
  # Slurm's cgroups for this node only (slurmstepd may outlive slurmd briefly: kill what is left).
  if [ -f "$dir/nodename" ]; then
    node=$(cat "$dir/nodename")
    for h in /sys/fs/cgroup/*/slurm_"$node"; do
      [ -d "$h" ] || continue
      find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      for _ in $(seq 50); do
        find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$h" ] || break
        sleep 0.1
      done
    done
  fi
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi
[ "$cmd" = start ] || { echo "slurm-node.sh: unknown command '$cmd'; use start or stop" >&2; exit 2; }
mem_mb=${3:-2000}
cpus=${4:-8}
for p in munged mungekey slurmctld slurmd slurmdbd mariadbd mariadb-install-db sbatch; do
  command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || { echo "slurm-node.sh: $p not installed (apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server)" >&2; exit 3; }
done
[ -d /sys/fs/cgroup/memory ] || { echo "slurm-node.sh: no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory" >&2; exit 3; }
mkdir -p "$dir"/{state,spool,log}
chmod 700 "$dir"
node="ab$$"
echo "$node" >"$dir/nodename"
host=$(hostname -s)
ctl_port=$(free_port)
d_port=$(free_port)
db_port=$(free_port)
dbd_port=$(free_port)

/usr/sbin/mungekey -c -k "$dir/munge.key" -f 2>/dev/null
chmod 600 "$dir/munge.key"
/usr/sbin/munged -f --socket="$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed"

# Accounting: a private MariaDB on 127.0.0.1 for slurmdbd. 5-6 s, most of it mariadb-install-db.
# A DIR used before holds a stopped node's database: start afresh (its create database would fail).
rm -rf "$dir/db"
mariadb-install-db --datadir="$dir/db" --user=root --auth-root-authentication-method=normal --skip-test-db \
  >"$dir/log/mariadb-install.log" 2>&1
mariadbd --no-defaults --datadir="$dir/db" --user=root --port="$db_port" --bind-address=127.0.0.1 \
  --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --log-error="$dir/log/mariadb.log" \
  --innodb-buffer-pool-size=16M >/dev/null 2>&1 &
for _ in $(seq 100); do [ -S "$dir/mysqld.sock" ] && break; sleep 0.1; done
mariadb --no-defaults -S "$dir/mysqld.sock" -u root -e "create database slurm_acct_db;
  create user 'slurm'@'127.0.0.1' identified by 'slurm'; grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1';"
cat >"$dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$dir/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
CONF
chmod 600 "$dir/slurmdbd.conf"

cat >"$dir/cgroup.conf" <<CONF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
CONF
cat >"$dir/slurm.conf" <<CONF
ClusterName=ab$$
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/cgroup
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
# The slurmdbd client ignores AuthInfo: without this it looks for munge's default socket.
AccountingStoragePass=$dir/munge.socket
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
# The main scheduler stops at the first pending job that does not fit; jobs behind it (a smaller
# array submitted later) start only by backfill, every bf_interval (30 s by default): measured,
# align-batch's warm run left the node idle up to 2 s at a time waiting for it.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1,bf_continue
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MaxArraySize=100001
MinJobAge=300
KillWait=5
NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
/usr/sbin/slurmdbd
for _ in $(seq 100); do grep -q "slurmdbd version .* started" "$dir/log/slurmdbd.log" 2>/dev/null && break; sleep 0.1; done
/usr/sbin/slurmctld -i
/usr/sbin/slurmd -N "$node"
for _ in $(seq 100); do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.1
done
if [ "${state:-}" != idle ]; then
  echo "slurm-node.sh: node $node not idle after 10 s (state '${state:-none}'); logs in $dir/log" >&2
  stop
  exit 1
fi
echo "SLURM_CONF=$dir/slurm.conf"
echo "AB_SLURM_NODE=$node"
