#!/usr/bin/env bash
# slurm_down.sh DIR - stop the test cluster that slurm_up.sh DIR started (by its
# pid files; munged stays).
DIR=${1:-/tmp/minifuse-slurm}
for d in slurmd slurmctld; do
    [ -s "$DIR/$d.pid" ] && kill "$(cat "$DIR/$d.pid")" 2>/dev/null
done
for _ in $(seq 50); do
    pgrep -F "$DIR/slurmd.pid" >/dev/null 2>&1 || pgrep -F "$DIR/slurmctld.pid" >/dev/null 2>&1 || exit 0
    sleep 0.1
done
true
