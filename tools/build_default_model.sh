#!/usr/bin/env bash
# Rebuild the shipped default model (bilm/models/default) from scratch on a CPU machine.
#   bash tools/build_default_model.sh [WORKDIR]
# Needs root for apt-get (the corpus packages) and bilm installed (pip install ".[cpu]").
# About 1 hour on 2 CPU cores. Prints the held-out perplexity and the unigram baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/bilm-default-model}
OUT=bilm/models/default
mkdir -p "$WORK" "$OUT"

if ! [ -d /usr/share/sword/modules/comments/zcom/tdavid ]; then
  apt-get update -q && apt-get install -y -q --no-install-recommends \
    sword-comm-tdavid=2.1-1 sword-comm-mhcc=2.0-1 sword-text-web=426.0-1
fi
[ -d "$WORK/corpus" ] || python tools/prepare_corpus.py "$WORK/corpus"
bilm vocab "$WORK"/corpus/train/shard_*.txt --output "$WORK/vocab.txt" --min-count 3

bilm train --train_prefix "$WORK/corpus/train/shard_*.txt" --vocab_file "$WORK/vocab.txt" \
  --save_dir "$WORK/checkpoints" --seed 1 \
  --filters '[[1,32],[2,32],[3,64],[4,128]]' --char_embedding_dim 16 --n_highway 1 \
  --lstm_dim 512 --projection_dim 128 --n_layers 2 \
  --batch_size 32 --unroll_steps 20 --n_negative_samples 1024 --n_epochs 2 --checkpoint_every 500

bilm dump-weights --save_dir "$WORK/checkpoints" --outfile "$OUT/lm_weights.hdf5" --options_outfile "$OUT/options.json"
cp "$WORK/vocab.txt" "$OUT/vocab.txt"
bilm test --test_prefix "$WORK/corpus/heldout/heldout.txt" --vocab_file "$WORK/vocab.txt" \
  --save_dir "$WORK/checkpoints" --batch_size 64
python tools/unigram_baseline.py "$WORK"/corpus/train/shard_*.txt --heldout "$WORK/corpus/heldout/heldout.txt" \
  --vocab "$WORK/vocab.txt"
