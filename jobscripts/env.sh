# env.sh - shared environment for minifuse Slurm jobs (sourced by the sbatch scripts).
# One MPI rank per pipeline stage; give each rank its cores through OpenMP/OpenBLAS.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS"
export OMP_PROC_BIND=close OMP_PLACES=cores
export MINIFUSE_CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
MINIFUSE="${MINIFUSE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/minifuse}"
