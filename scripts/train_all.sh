#!/usr/bin/env bash
# The bundled models' whole recipe, from the corpus in data/ and the tokenizer in runs/tokenizer (build those
# first: scripts.build_corpus, scripts.train_tokenizer, scripts.build_qa; models/README.md tells how).
#
# Stages (STAGES picks some, in this order):
#   pack      tokenize the corpus once into runs/cache, before runs start side by side
#   nowarmup  both architectures without learning-rate warm-up at several learning rates, all side by side
#   main      the pre-LN and post-LN twins, side by side, then packaged as models/preln-mini and postln-mini
#   finetune  sentiment and QA heads on the packaged models/preln-mini, then packaged with the curves
#   heads     token classification (POS), multiple choice and causal LM over models/preln-mini, shipped as deltas
#             (rpln_core/deltas.py), plus the full fine-tune that measures what the POS delta costs; CPU only.
#             Needs the Debian packages liblingua-en-tagger-perl and wordnet-base (scripts.build_pos, build_choice).
# One H100 runs it all in about nine minutes. On 2 CPU cores run the Python scripts themselves, in chunks
# with --stop-at / --resume (models/README.md).
set -euo pipefail
PY=${PYTHON:-python3}
STAGES=${STAGES:-"pack nowarmup main finetune heads"}
THREADS=${THREADS:-2}          # per process; up to eight run at once
BATCH=${BATCH:-256}
STEPS=${STEPS:-6500}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-500}
NO_WARMUP_LRS=${NO_WARMUP_LRS:-"5e-4 1e-3 2e-3 1e-2"}
NO_WARMUP_STEPS=${NO_WARMUP_STEPS:-2000}

pids=()
start() {  # start <log> <command...>: in the background, output to runs/<log>.log
  local log=$1; shift
  "$@" > "runs/$log.log" 2>&1 &
  pids+=($!)
}
finish() {  # wait for every started process; fail if any failed
  local pid
  for pid in "${pids[@]}"; do wait "$pid"; done
  pids=()
}
mlm() {  # mlm <arch> <out> <args...>
  local arch=$1 out=$2; shift 2
  start "$out" "$PY" -m scripts.train_mlm --arch "$arch" --out "runs/$out" --batch-size "$BATCH" --threads "$THREADS" "$@"
}
stage() { [[ " $STAGES " == *" $1 "* ]]; }
mkdir -p runs

if stage pack; then
  "$PY" -m scripts.train_mlm --pack-only --threads 16
fi

if stage nowarmup; then
  for lr in $NO_WARMUP_LRS; do
    for arch in pre post; do
      mlm "$arch-ln" "nowarmup-lr$lr-${arch}ln" --steps "$NO_WARMUP_STEPS" --warmup-steps 0 --lr "$lr" --save-every 100000
    done
  done
  finish
fi

if stage main; then
  mlm pre-ln preln --steps "$STEPS" --warmup-steps "$WARMUP" --lr "$LR"
  mlm post-ln postln --steps "$STEPS" --warmup-steps "$WARMUP" --lr "$LR"
  finish
  "$PY" -m scripts.package_models --model preln-mini=runs/preln/model --model postln-mini=runs/postln/model
fi

if stage finetune; then
  start ft-sentiment "$PY" -m scripts.finetune --task sentiment --base models/preln-mini --out runs/ft-sentiment \
    --epochs 3 --batch-size 32 --lr 1e-4 --threads "$THREADS"
  start ft-qa "$PY" -m scripts.finetune --task qa --base models/preln-mini --out runs/ft-qa \
    --epochs 5 --batch-size 32 --lr 3e-4 --threads "$THREADS"
  finish
  curves=(runs/nowarmup-*/)
  [[ -d "${curves[0]}" ]] || curves=()
  "$PY" -m scripts.package_models --model preln-mini-sentiment=runs/ft-sentiment/model \
    --model preln-mini-qa=runs/ft-qa/model --curves "${curves[@]}"
fi
if stage heads; then
  "$PY" -m scripts.build_pos && "$PY" -m scripts.build_choice
  # Step counts are what a 2-core CPU shared with other work allowed (models/README.md); one thread per process.
  # The shipped POS delta (1,200 steps), and the 300-step one that the full fine-tune is compared with.
  start head-pos "$PY" -m scripts.finetune_heads --task pos --out runs/head-pos --steps 1200 --batch-size 16 \
    --lr 1e-3 --rank 8 --alpha 16 --threads 1
  start head-pos-300 "$PY" -m scripts.finetune_heads --task pos --out runs/head-pos-300 --steps 300 --batch-size 16 \
    --lr 1e-3 --rank 8 --alpha 16 --threads 1
  start head-pos-full "$PY" -m scripts.finetune_heads --task pos --out runs/head-pos-full --delta full --steps 300 \
    --batch-size 16 --lr 3e-4 --threads 1
  finish
  start head-choice "$PY" -m scripts.finetune_heads --task choice --out runs/head-choice --steps 800 --batch-size 8 \
    --lr 1e-3 --rank 16 --alpha 32 --threads 1
  start head-causal "$PY" -m scripts.finetune_heads --task causal --out runs/head-causal --steps 500 --batch-size 8 \
    --lr 1e-3 --rank 32 --alpha 64 --max-test 400 --threads 1
  finish
  "$PY" -m scripts.package_deltas --model preln-mini-pos=runs/head-pos --model preln-mini-choice=runs/head-choice \
    --model preln-mini-causal=runs/head-causal --extra runs/head-pos-full runs/head-pos-300
fi
echo "done in ${SECONDS}s"
