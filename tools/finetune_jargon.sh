#!/usr/bin/env bash
# Domain adaptation of the default model to the Jargon File: the README's fine-tuning table.
#   bash tools/finetune_jargon.sh [WORKDIR]
# Needs what tools/build_default_model.sh left in WORKDIR (the corpus, vocab.txt and the
# training checkpoints) and the jargon corpus (python tools/prepare_jargon.py WORKDIR/jargon).
# Prints held-out perplexities on both domains, before and after, from the checkpoint and from
# the weight file only. About 20 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/bilm-default-model}
VOCAB="$WORK/vocab.txt"
JARGON="$WORK/jargon"
ORIGINAL_HELDOUT="$WORK/corpus/heldout/heldout.txt"
[ -f "$JARGON/train.txt" ] || python tools/prepare_jargon.py "$JARGON"
rm -rf "$WORK/tuned-checkpoint" "$WORK/tuned-weights" "$WORK/weights"
mkdir -p "$WORK/weights"
bilm dump-weights --save_dir "$WORK/checkpoints" --outfile "$WORK/weights/lm_weights.hdf5" \
  --options_outfile "$WORK/weights/options.json"

perplexity() {  # SAVE_DIR HELDOUT -> the perplexity `bilm test` prints
  bilm test --save_dir "$1" --test_prefix "$2" --vocab_file "$VOCAB" --batch_size 64 2>&1 \
    | sed -n 's/^perplexity: \([0-9.]*\) .*$/\1/p'
}

# Same settings both ways: batch 32 x 20, 1,024 negatives, dropout 0.1, learning rate 0.2;
# up to 5 epochs, evaluated every 100 batches, stopped after 3 evaluations without improvement.
COMMON=(--train_prefix "$JARGON/train.txt" --heldout_prefix "$JARGON/heldout.txt" --vocab_file "$VOCAB"
        --n_epochs 5 --eval_every 100 --patience 3 --batch_size 32 --n_negative_samples 1024
        --dropout 0.1 --learning_rate 0.2 --seed 1)
bilm finetune --from "$WORK/checkpoints" --save_dir "$WORK/tuned-checkpoint" "${COMMON[@]}"
bilm finetune --options "$WORK/weights/options.json" --weights "$WORK/weights/lm_weights.hdf5" \
  --softmax_only_batches 100 --save_dir "$WORK/tuned-weights" "${COMMON[@]}"

best() { python -c "import json,sys; h=json.load(open(sys.argv[1])); print(h['best']['step'], '(%d)' % len(h['evaluations']))" "$1/finetune.json"; }
echo "| model | jargon held-out | original held-out | best at batch (evaluations) |"
echo "|---|---|---|---|"
echo "| default model | $(perplexity "$WORK/checkpoints" "$JARGON/heldout.txt") | $(perplexity "$WORK/checkpoints" "$ORIGINAL_HELDOUT") | |"
for run in tuned-checkpoint tuned-weights; do
  echo "| $run | $(perplexity "$WORK/$run" "$JARGON/heldout.txt") | $(perplexity "$WORK/$run" "$ORIGINAL_HELDOUT") | $(best "$WORK/$run") |"
done
