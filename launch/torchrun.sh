#!/usr/bin/env bash
# torchrun launcher for machines without SLURM, for one node, or inside a SLURM allocation.
# Options before the first Hydra override set the layout; everything else is a Hydra override.
#
#   launch/torchrun.sh stage=captioner_pretrain                        # this node, one rank per GPU
#   launch/torchrun.sh --nproc-per-node 2 stage=vae trainer.accelerator=cpu
#   # two machines, the same line on each (c10d rendezvous on host0:29500):
#   launch/torchrun.sh --nnodes 2 --master-addr host0 stage=ldm trainer=deepspeed_zero2
#   # inside an allocation: one torchrun per node; the master is the allocation's first node
#   srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/torchrun.sh stage=ldm
#
# Layout (option, or environment variable, or default):
#   --nnodes N          NNODES          SLURM_NNODES, else 1
#   --nproc-per-node N  NPROC_PER_NODE  SLURM_GPUS_ON_NODE, else GPUs from nvidia-smi, else 1
#   --master-addr HOST  MASTER_ADDR     first host of SLURM_JOB_NODELIST, else 127.0.0.1
#   --master-port PORT  MASTER_PORT     29500 + SLURM_JOB_ID % 1000 under SLURM, else 29500
#   --rdzv-id ID        RDZV_ID         SLURM_JOB_ID, else dalle3
# trainer.devices and trainer.num_nodes are set from the layout (passing them is refused).
# One node without --master-addr uses torchrun --standalone (a free port is picked).
# DALLE3_CMD replaces the entry point (default dalle3-train).
set -euo pipefail

die() { echo "torchrun.sh: $*" >&2; exit 2; }

NNODES=${NNODES:-${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}}
NPROC_PER_NODE=${NPROC_PER_NODE:-}
MASTER_ADDR=${MASTER_ADDR:-}
MASTER_PORT=${MASTER_PORT:-}
RDZV_ID=${RDZV_ID:-${SLURM_JOB_ID:-dalle3}}
while [[ $# -gt 0 && $1 == --* ]]; do
    [[ $# -ge 2 ]] || die "$1 needs a value"
    case "$1" in
        --nnodes) NNODES=$2 ;;
        --nproc-per-node | --nproc_per_node) NPROC_PER_NODE=$2 ;;
        --master-addr | --master_addr) MASTER_ADDR=$2 ;;
        --master-port | --master_port) MASTER_PORT=$2 ;;
        --rdzv-id | --rdzv_id) RDZV_ID=$2 ;;
        *) die "unknown option $1" ;;
    esac
    shift 2
done
for arg in "$@"; do
    case "$arg" in
        trainer.devices=* | trainer.num_nodes=* | +trainer.devices=* | +trainer.num_nodes=*)
            die "'$arg' is set from the layout; use --nproc-per-node / --nnodes instead" ;;
    esac
done

if [[ -z $NPROC_PER_NODE ]]; then
    if [[ ${SLURM_GPUS_ON_NODE:-0} -gt 0 ]]; then
        NPROC_PER_NODE=$SLURM_GPUS_ON_NODE
    elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        NPROC_PER_NODE=$(nvidia-smi -L | grep -c '^GPU')
    else
        NPROC_PER_NODE=1
    fi
fi
if [[ -z $MASTER_ADDR && -n ${SLURM_JOB_NODELIST:-} ]] && command -v scontrol >/dev/null; then
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
fi
if [[ -z $MASTER_PORT ]]; then
    # Jobs that share a node must not share a port: derive it from the job id.
    if [[ -n ${SLURM_JOB_ID:-} ]]; then MASTER_PORT=$((29500 + SLURM_JOB_ID % 1000)); else MASTER_PORT=29500; fi
fi

rdzv=()
if [[ $NNODES == 1 && -z $MASTER_ADDR ]]; then
    rdzv=(--standalone)
else
    rdzv=(--rdzv-backend=c10d --rdzv-endpoint="${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT}" --rdzv-id="$RDZV_ID")
fi

read -r -a cmd <<<"${DALLE3_CMD:-dalle3-train}"
# Lightning prefers its SLURM environment whenever SLURM_NTASKS is set, which would take
# ranks from srun (one task per node) instead of torchrun; hide it from the workers.
unset SLURM_NTASKS SLURM_NPROCS

echo "torchrun.sh: ${NNODES} node(s) x ${NPROC_PER_NODE} process(es), ${rdzv[*]}" >&2
exec torchrun --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE" "${rdzv[@]}" --no-python \
    "${cmd[@]}" "$@" trainer.num_nodes="$NNODES" trainer.devices="$NPROC_PER_NODE"
