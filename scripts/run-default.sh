#!/usr/bin/env bash
# The README's first command: installs the Debian dependencies, builds dsv4, writes (once) a small
# synthetic DeepSeek-V4 checkpoint with deterministic RANDOM weights, and generates from it.
# Nothing is downloaded except Debian packages. The output text is meaningless by construction:
# this shows the whole pipeline (tokenizer, chat template, FP8/FP4 weights, KV cache, sampling)
# running, not a trained model. See README.md for running the real DeepSeek-V4-Flash / Pro.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
model=models/tiny-random
if [ ! -f "$model/config.json" ] || [ ! -f "$model/tokenizer.json" ]; then
  tokdir=()
  if [ -f ../shared/tokenizer/tokenizer.json ]; then
    tokdir=(--tokenizer-dir ../shared/tokenizer)   # the real V4 tokenizer, when it sits beside the repo
  else
    echo "note: ../shared/tokenizer not found: using a minimal byte-level tokenizer (one token per byte)" >&2
  fi
  ./build/dsv4 synth --preset tiny -o "$model" "${tokdir[@]}"
fi
echo
echo "=== dsv4 run on $model: RANDOM WEIGHTS (dsv4 synth --preset tiny), so the text below is gibberish ==="
echo
./build/dsv4 run -m "$model" -p "Explain in one paragraph why the sky is blue." -n 32 --seed 42 "$@"
echo
echo "=== done: the engine ran end to end on random weights. For a real model see README.md ==="
