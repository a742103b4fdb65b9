#!/usr/bin/python3
"""Runs a command and prints its own CPU apart from its children's, for bench/many_jobs.sh.

    own_cpu.py OUT_FILE CMD...

Writes one line to OUT_FILE: `wall_s own_user_s own_sys_s children_cpu_s maxrss_kib exit_code`.
"Own" is the process's own utime/stime (all its threads) from /proc/PID/stat, read while it is a
zombie (waitid WNOWAIT), so the CPU its children used is not mixed in (wait4's rusage and
/usr/bin/time add the two together). maxrss_kib is wait4's ru_maxrss: the largest of the process
and its descendants.
"""
import os
import sys
import time

out_file, argv = sys.argv[1], sys.argv[2:]
ticks = os.sysconf("SC_CLK_TCK")
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
wall_s = time.monotonic() - t0
with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
# Fields after "(comm)": state is fields[0], so utime (14) is fields[11], stime fields[12],
# cutime fields[13], cstime fields[14].
utime, stime, cutime, cstime = (int(fields[i]) / ticks for i in (11, 12, 13, 14))
_, status, ru = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(out_file, "w") as f:
    f.write(f"{wall_s:.3f} {utime:.2f} {stime:.2f} {cutime + cstime:.2f} {ru.ru_maxrss} {code}\n")
sys.exit(0 if code == 0 else 1)
