#!/usr/bin/env bash
# slurm_down.sh DIR - stop the test cluster that slurm_up.sh DIR started (by its
# pid files; munged stays). Returns only when both daemons are gone (SIGKILL
# after 30 s), so that a next slurm_up does not find them still exiting and
# skip its tests.
DIR=${1:-/tmp/minifuse-slurm}
pids=()
for d in slurmd slurmctld; do
    [ -s "$DIR/$d.pid" ] && pids+=("$(cat "$DIR/$d.pid")")
done
[ ${#pids[@]} -eq 0 ] && exit 0
kill "${pids[@]}" 2>/dev/null
alive() { local p; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
for _ in $(seq 300); do alive || exit 0; sleep 0.1; done
kill -9 "${pids[@]}" 2>/dev/null
for _ in $(seq 50); do alive || exit 0; sleep 0.1; done
echo "slurm_down: slurmd/slurmctld (${pids[*]}) still running" >&2
exit 1
