#!/usr/bin/env bash
# gpu_rank.sh PROGRAM ARGS... - start one rank of a GPU job on its GPU and NIC.
# srun has bound the task to one GPU (CUDA_VISIBLE_DEVICES); where it still sees
# several (a site without GPU binding), it keeps the SLURM_LOCALID-th. NIC:
# MINIFUSE_NICS="mlx5_0:1,mlx5_1:1,..." (one per GPU of a node, in GPU order,
# from `nvidia-smi topo -m`) gives the rank the NIC of its GPU for NCCL
# (NCCL_IB_HCA) and Open MPI's UCX (UCX_NET_DEVICES); unset, NCCL picks the NIC
# nearest the GPU from the PCI topology itself.
set -euo pipefail
local_id=${SLURM_LOCALID:-0}
if [[ ${CUDA_VISIBLE_DEVICES:-} == *,* ]]; then
    IFS=, read -ra gpus <<<"$CUDA_VISIBLE_DEVICES"
    export CUDA_VISIBLE_DEVICES=${gpus[$((local_id % ${#gpus[@]}))]}
fi
if [ -n "${MINIFUSE_NICS:-}" ]; then
    IFS=, read -ra nics <<<"$MINIFUSE_NICS"
    nic=${nics[$((local_id % ${#nics[@]}))]}
    export NCCL_IB_HCA="=$nic" UCX_NET_DEVICES="$nic"
fi
exec "$@"
