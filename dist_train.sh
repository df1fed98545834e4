#!/usr/bin/env bash
# Distributed training, as in the model card:  bash dist_train.sh CONFIG NUM_GPUS [liif train options]
#
# Runs train.py under torchrun with NUM_GPUS processes on this node (one per GPU; on a machine
# without CUDA the processes train on the CPU with gloo). Multi-node: run the same command on every
# node with
#   NNODES        number of nodes (default 1)
#   NODE_RANK     this node's index, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR   address of node 0, reachable from all nodes (default 127.0.0.1)
#   MASTER_PORT   a free TCP port on node 0 (default 29500)
#   MAX_RESTARTS  torchrun --max-restarts: restart all workers this many times after a failure; the
#                 restarted workers resume from the newest complete checkpoint (default 0)
#   RDZV_BACKEND  torchrun rendezvous: static (default; NODE_RANK fixes the ranks) or c10d (needed
#                 for restarts across nodes: every node's agent restarts; ranks may move between nodes)
#   RDZV_ID       run id for c10d rendezvous (default liif)
#   LIIF_DIST_TIMEOUT  seconds a collective waits for the other ranks before the job stops (default 1800)
# e.g. on node 1 of 2:  NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash dist_train.sh cfg.yaml 8 --out runs/x
# train.batch_size is the global batch; it must be a multiple of NNODES x NUM_GPUS.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: bash dist_train.sh CONFIG NUM_GPUS [--out DIR] [--set key=value ...] [--resume]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
PYTHON=${PYTHON:-python3}
RDZV=(--master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}")
if [ "${RDZV_BACKEND:-static}" != static ]; then
  RDZV=(--rdzv-backend="$RDZV_BACKEND" --rdzv-endpoint="${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-29500}"
        --rdzv-id="${RDZV_ID:-liif}")
fi
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --nproc_per_node="$NPROC" \
  --max-restarts="${MAX_RESTARTS:-0}" \
  "${RDZV[@]}" \
  "$(dirname "$0")/train.py" "$CONFIG" "$@"
