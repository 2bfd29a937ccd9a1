#!/usr/bin/env bash
# slurm_up.sh - a real one-node Slurm cluster on this machine, for jobscript tests.
# Starts munged, slurmctld and slurmd with a configuration written under DIR
# (default /tmp/minifuse-slurm) and prints "export SLURM_CONF=DIR/slurm.conf".
# The node advertises CPUS (default 4) so 4-task jobscripts run on 2 cores
# (SlurmdParameters=config_overrides). Needs root and Debian's slurm-wlm + munge.
#   eval "$(bash tests/slurm/slurm_up.sh DIR)"; sbatch ...; bash tests/slurm/slurm_down.sh DIR
# Exits 2 without starting anything where a Slurm daemon already runs.
set -euo pipefail
DIR=${1:-/tmp/minifuse-slurm}
CPUS=${CPUS:-4}
GPUS=${GPUS:-0}
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
HOST=$(hostname -s)
mkdir -p "$DIR"/{spool,state,log}
# never touch a machine's own Slurm: exit 2 (the tests then skip)
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    echo "slurm_up: slurmctld/slurmd already run on this machine; not starting a test cluster beside them" >&2
    exit 2
fi

# munge: one key, daemon running as root is fine for a test cluster
if ! pgrep -x munged >/dev/null; then
    [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
    chown -R munge:munge /etc/munge 2>/dev/null || true; chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge; chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then runuser -u munge -- /usr/sbin/munged; else /usr/sbin/munged --force; fi
fi

GRES_TYPES="" NODE_GRES=""
if [ "$GPUS" -gt 0 ]; then GRES_TYPES="GresTypes=gpu" NODE_GRES="Gres=gpu:$GPUS"; fi
cat > "$DIR/slurm.conf" <<CONF
ClusterName=minifuse-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# credentials expire (and a requeued job may start again) after 10 s, not 120
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
KillWait=10
MinJobAge=600
$GRES_TYPES
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM $NODE_GRES State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
printf 'ConstrainCores=no\n' > "$DIR/cgroup.conf"
# the "GPUs" are placeholder device files (never opened: TaskPlugin=task/none constrains no devices)
if [ "$GPUS" -gt 0 ]; then printf 'NodeName=%s Name=gpu File=/dev/tty[0-%d]\n' "$HOST" $((GPUS - 1)) > "$DIR/gres.conf"; else rm -f "$DIR/gres.conf"; fi
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -c -f "$SLURM_CONF"     # -c: clear state of an earlier test cluster
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && { echo "export SLURM_CONF=$SLURM_CONF"; exit 0; }
    sleep 1
done
echo "slurm_up: the node did not come up; see $DIR/log/" >&2
exit 1
