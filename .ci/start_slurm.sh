#!/usr/bin/env bash
# Installs (Debian's slurm-wlm and munge) and starts a single-node SLURM cluster on this host for the
# executor test: munged, slurmctld and slurmd with a minimal slurm.conf for this machine's CPUs and
# memory, no accounting database. Idempotent; needs root.
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
fi
host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
# tests/slurm_profile asks 2000 MB per job and runs 2 jobs at once.
if [ "$memory_mb" -lt 4096 ]; then
  echo "this host has ${memory_mb} MB for SLURM jobs; the test profile needs 2 x 2000 MB" >&2
  exit 1
fi
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  # Created readable by munge alone from the start, never world-readable for an instant.
  install -m 0400 -o munge -g munge <(head -c 1024 /dev/urandom) /etc/munge/munge.key
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
marker="# Single-node test cluster written by .ci/start_slurm.sh."
if [ -s /etc/slurm/slurm.conf ] && ! head -n 1 /etc/slurm/slurm.conf | grep -qxF "$marker"; then
  echo "/etc/slurm/slurm.conf exists and was not written by this script; not touching it" >&2
  exit 1
fi
cat > /etc/slurm/slurm.conf <<CONF
$marker
ClusterName=finetune-hpo-ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
  case "$state" in
    idle*|mix*|alloc*) echo "SLURM ready: node $host ($state), partition debug" >&2; exit 0 ;;
    down*|drain*) scontrol update nodename="$host" state=resume >&2 || true ;;
  esac
  sleep 1
done
echo "SLURM did not come up; see /var/log/slurm/" >&2
exit 1
