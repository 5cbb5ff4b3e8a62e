#!/bin/bash
# The question encoder's effect on the demo's adapters (docs/retrieval.md, session 9):
# 1. the adapters of the last `make demo` run, asked all held-out questions through
#    `lorag serve` with float (`onnx`) and then 8-bit (`onnx-int8`) questions;
# 2. the same recipe trained again with float questions and asked the same way.
# Needs a finished `make demo` (lorag-data/demo). Writes under lorag-data/ab/.
set -u
cd "$(dirname "$0")/.."
mkdir -p lorag-data/ab
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_CPU_OMP_THREADS_BIND=0,1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
KEY=$(grep "key: demo-chat" lorag-data/demo/lorag.yaml | awk '{print $3}')
PORT=59988

ask() {  # config, label: serve with it and ask every held-out question
  .venv/bin/python -m lorag --config "$1" serve --port $PORT > "lorag-data/ab/serve-$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 120); do curl -sf http://127.0.0.1:$PORT/ready > /dev/null 2>&1 && break; sleep 3; done
  for d in acme-router northwind-policies; do
    .venv/bin/python -m lorag --config "$1" eval answers $d examples/$d/qa/heldout.jsonl \
      --server http://127.0.0.1:$PORT --api-key "$KEY" --configs adapter+rag --max-tokens 32 \
      --concurrency 8 > "lorag-data/ab/eval-$2-$d.log" 2>&1
    echo "$2 $d"; grep -A1 "│ adapt" "lorag-data/ab/eval-$2-$d.log" | head -1
  done
  kill $pid; sleep 10; pkill -f "port $PORT"; sleep 3
}

for b in onnx onnx-int8; do
  sed "s#^  k: 3#  k: 3\n  embedding:\n    query_backend: $b#" lorag-data/demo/lorag.yaml > lorag-data/ab/$b.yaml
  ask lorag-data/ab/$b.yaml "demo-adapters-$b"
done

sed -e 's#lorag-data/demo/adapters#lorag-data/ab/adapters#' \
  -e 's#data_dir: lorag-data/demo/serving#data_dir: lorag-data/ab/serving#' \
  lorag-data/ab/onnx.yaml > lorag-data/ab/onnx-train.yaml
for d in acme-router northwind-policies; do
  .venv/bin/python -m lorag --config lorag-data/ab/onnx-train.yaml train --name $d \
    --qa examples/$d/qa/train.jsonl --domain $d -o lorag-data/ab/adapters/$d/v1 \
    > lorag-data/ab/train-$d.log 2>&1
done
ask lorag-data/ab/onnx-train.yaml float-trained
