#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for running and testing `colm submit --slurm`:
# munge for authentication, slurmctld and slurmd from Debian's slurm-wlm, with
# proctrack/linuxproc and task/none (no cgroups needed). Run as root. Idempotent.
#
#   scripts/slurm-local.sh start    # configure (once) and start munged, slurmctld, slurmd; wait until idle
#   scripts/slurm-local.sh stop     # stop the daemons this script started
#   scripts/slurm-local.sh status   # exit 0 when the cluster answers and its node is usable
#
# Packages: scripts/setup.sh --with-slurm (slurm-wlm, munge). The configuration is written to
# /etc/slurm/slurm.conf only when that file is absent or was written by this script; its state, logs
# and pid files live under /var/lib/colm-slurm, /var/log/colm-slurm and /run/colm-slurm.
# Exit status: 0 ok; 2 usage; 3 cannot start here (not root, packages missing, a foreign slurm.conf).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by colm scripts/slurm-local.sh"
STATE=/var/lib/colm-slurm
LOGS=/var/log/colm-slurm
RUN=/run/colm-slurm
MUNGE_RUN=/run/munge

say() { echo "[slurm-local] $*"; }
cannot() { echo "[slurm-local] cannot start a local cluster: $*" >&2; exit 3; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_name() { hostname -s; }

write_config() {
  if [[ -f "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    cannot "$CONF exists and was not written by this script (an existing cluster?); not touching it"
  fi
  local node cpus mem
  node=$(node_name)
  cpus=$(nproc)
  # What slurmd sees, less a little, so that the node is never drained for having less memory.
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$(( ${mem:-1024} * 9 / 10 ))
  mkdir -p /etc/slurm "$STATE/state" "$STATE/spool" "$LOGS" "$RUN"
  local tmp="$CONF.tmp.$$"
  cat > "$tmp" <<EOF
$MARK
ClusterName=colm-local
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=3600
KillWait=10
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ -f "$CONF" ]] && cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; else mv "$tmp" "$CONF"; say "wrote $CONF"; fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
  chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
  chmod 0755 "$MUNGE_RUN"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && { say "munged started"; return; }
    sleep 0.2
  done
  cannot "munged did not start (see /var/log/munge/munged.log)"
}

cluster_ready() {
  # The controller answers and the node takes jobs (idle, mixed or allocated).
  scontrol ping 2>/dev/null | grep -q "is UP" || return 1
  local state
  state=$(sinfo -h -N -n "$(node_name)" -o '%t' 2>/dev/null | head -1)
  [[ "$state" =~ ^(idle|mix|alloc|comp)$ ]]
}

start() {
  [[ $(id -u) -eq 0 ]] || cannot "needs root (it writes $CONF and starts daemons)"
  for b in munged munge unmunge slurmctld slurmd sbatch scontrol sinfo; do
    command -v "$b" >/dev/null 2>&1 || cannot "'$b' is not installed (scripts/setup.sh --with-slurm installs slurm-wlm and munge)"
  done
  write_config
  start_munge
  mkdir -p "$RUN" "$STATE/state" "$STATE/spool" "$LOGS"
  if ! pid_alive "$RUN/slurmctld.pid"; then
    slurmctld
    say "slurmctld started"
  fi
  if ! pid_alive "$RUN/slurmd.pid"; then
    slurmd
    say "slurmd started"
  fi
  for i in $(seq 60); do
    if cluster_ready; then
      say "cluster up: $(sinfo -h -o '%P %a %D %t %C' | head -1) (partition avail nodes state cpus A/I/O/T)"
      return 0
    fi
    # A node left down or drained by an earlier run of the daemons: return it to service.
    if (( i % 10 == 5 )); then scontrol update nodename="$(node_name)" state=resume >/dev/null 2>&1 || true; fi
    sleep 1
  done
  cannot "the node did not become usable in 60 s: $(sinfo -h -N -o '%N %t %E' 2>&1 | head -1); see $LOGS/"
}

stop_pidfile() {
  local file=$1 name=$2
  if pid_alive "$file"; then
    local pid
    pid=$(cat "$file")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    say "$name stopped"
  fi
}

stop() {
  [[ $(id -u) -eq 0 ]] || cannot "needs root"
  stop_pidfile "$RUN/slurmd.pid" slurmd
  stop_pidfile "$RUN/slurmctld.pid" slurmctld
  stop_pidfile "$MUNGE_RUN/munged.pid" munged
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) cluster_ready && { say "up"; exit 0; } || { say "not running"; exit 1; } ;;
  *) echo "usage: scripts/slurm-local.sh start|stop|status" >&2; exit 2 ;;
esac
