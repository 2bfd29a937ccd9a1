# env_gpu.sh - the environment of the GPU jobscripts (*_gpu.sbatch): env.sh,
# plus the CUDA binary and what NCCL needs. One MPI rank per GPU: srun binds
# each task to one GPU (--gpus-per-task=1 --gpu-bind=single:1: the GPU nearest
# the task's cores) and to its cores (--cpu-bind=cores); gpu_rank.sh then
# picks the rank's NIC. See docs/slurm.md, "GPU jobs".
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# the CUDA build (make CUDA=1); MINIFUSE_BACKEND=cpu runs the same script on CPUs (the Slurm test does)
MINIFUSE="${MINIFUSE_GPU:-$MINIFUSE}"
BACKEND="${MINIFUSE_BACKEND:-cuda}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
# srun options of every GPU step: one task per GPU, bound to the GPU and cores nearest each other
GPU_SRUN=(srun --mpi=pmix --gpus-per-task=1 --gpu-bind=single:1 --cpu-bind=cores
          "$(dirname "${BASH_SOURCE[0]}")/gpu_rank.sh")
