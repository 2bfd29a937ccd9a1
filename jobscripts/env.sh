# env.sh - shared environment for minifuse Slurm jobs (sourced by the sbatch scripts).
# One MPI rank per pipeline stage; give each rank its cores through OpenMP/OpenBLAS.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS"
# No OMP_PROC_BIND here: where Slurm does not confine each task to its own cores
# (TaskPlugin=task/none), every rank would pin its thread to the same first core
# (measured: 50x slower with 4 ranks on 2 cores). Ask Slurm to bind instead
# (srun --cpu-bind=cores with task/affinity or task/cgroup).
export MINIFUSE_CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
MINIFUSE="${MINIFUSE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/minifuse}"
