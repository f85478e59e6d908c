#!/usr/bin/env bash
# Reproduce the bundled paper-family model (src/talkinghead/weights/default-small-128.safetensors,
# the default before warp-128) from scratch on a CPU: build the warped-photo stand-in corpus,
# preprocess it, meta-learn small-128, export the EMA weights.
#   bash scripts/train_small_128.sh          # STEPS, WORK and OUT can be set in the environment
# The bundled bundle came from this script stopped at the step recorded in
# src/talkinghead/weights/MODEL_CARD.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-out/default-model}
STEPS=${STEPS:-100000}
OUT=${OUT:-src/talkinghead/weights/default-small-128.safetensors}
PY=${PY:-.venv/bin/python}
TH=${TH:-.venv/bin/talkinghead}
mkdir -p "$WORK/photos"

# Real identities beyond scikit-image's astronaut: the portraits in face-recognition's source
# package on PyPI (US government portraits, public domain). Only its test photos are used.
if [ ! -f "$WORK/photos/biden.jpg" ]; then
  "$PY" -m pip download -q --no-deps --no-binary :all: face-recognition==1.3.0 -d "$WORK/sdist"
  tar xzf "$WORK"/sdist/face_recognition-1.3.0.tar.gz -C "$WORK/sdist"
  for name in obama obama2 obama3 biden; do
    cp "$WORK/sdist/face_recognition-1.3.0/tests/test_images/$name.jpg" "$WORK/photos/"
  done
fi
ASTRONAUT=$("$PY" -c "from talkinghead import assets; print(assets.astronaut_path())")

# Pseudo-videos (photos moved by the real clip's landmark motion) + the first half of the clip.
[ -f "$WORK/corpus/corpus.json" ] || "$TH" corpus --stand-in "$ASTRONAUT" "$WORK"/photos/*.jpg --out "$WORK/corpus"
"$TH" prep "$WORK/corpus" --out "$WORK/data" --size 128 --workers 2
RESUME=""
[ -f "$WORK/run/checkpoint.pt" ] && RESUME="--resume"
"$TH" train --data "$WORK/data" --run "$WORK/run" --preset small-128-cpu --steps "$STEPS" $RESUME
"$TH" export "$WORK/run" --out "$OUT"
