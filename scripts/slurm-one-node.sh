#!/usr/bin/env bash
# A one-node Slurm cluster in a directory, without systemd: munged, slurmctld and slurmd, every
# path under DIR, on free ports. The tests and bench/cluster-embed.sh start one; `.ci/run` installs
# the Debian packages (slurmctld slurmd slurm-client munge).
#
#   scripts/slurm-one-node.sh start DIR   start it; prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-one-node.sh stop DIR    stop it (every daemon started from DIR)
#
# Run as root (the daemons and the jobs run as the invoking user, `SlurmUser=root`).
set -euo pipefail
cmd=${1:?usage: slurm-one-node.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm-one-node.sh start|stop DIR}")

stop() {
  for pid in "$dir"/run/*.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  # slurmd leaves job steps (slurmstepd) behind when stopped hard: they belong to this cluster.
  sleep 0.2
  for pid in "$dir"/run/*.pid; do
    [ -f "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null || true
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

case "$cmd" in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: slurm-one-node.sh start|stop DIR" >&2; exit 2 ;;
esac

for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || {
    echo "error: \`$tool\` is not installed; install Slurm and munge: apt-get install -y slurmctld slurmd slurm-client munge" >&2
    exit 2
  }
done
mkdir -p "$dir"/{run,log,spool/ctld,spool/d,munge}
chmod 700 "$dir/munge"
# munge wants its key readable by its user only.
if [ -f /etc/munge/munge.key ]; then
  cp /etc/munge/munge.key "$dir/munge/munge.key"
else
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
fi
chmod 400 "$dir/munge/munge.key"
munged --force --socket="$dir/munge/socket" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/seed" --log-file="$dir/log/munged.log"

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2/1024/2)}' /proc/meminfo)
ctld_port=$(free_port)
d_port=$(free_port)
cat >"$dir/slurm.conf" <<CONF
ClusterName=pipeline-test
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Ask the scheduler every second, not every minute: a 20-task array takes 10 s, not 42 s.
SchedulerParameters=sched_interval=1,sched_min_interval=0
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 100); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.1
done
echo "error: the one-node cluster did not come up; see $dir/log" >&2
stop
exit 1
