#!/usr/bin/env bash
# Tokenizer throughput: dsv4 (C++) vs Hugging Face tokenizers (npm), same corpus, one thread each,
# and a check that both produce identical ids. Usage: bench/tokenizer_compare/run.sh [BUILD_DIR]
# (BUILD_DIR holds the tokenizer_bench binary; default: build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="${1:-$repo/build}"
tokdir="$repo/../shared/tokenizer"
out="$here/out"
mkdir -p "$out"
[ -x "$build/tokenizer_bench" ] || cmake --build "$build" --target tokenizer_bench
[ -d "$here/node_modules/tokenizers" ] || (cd "$here" && npm install --no-audit --no-fund)
[ -f "$out/corpus.json" ] || node "$here/make_corpus.js" "$out/corpus.json"
pin=""
command -v taskset >/dev/null && pin="taskset -c 0"
export RAYON_NUM_THREADS=1 UV_THREADPOOL_SIZE=1 TOKENIZERS_PARALLELISM=false
passes="${PASSES:-3}"
$pin "$build/tokenizer_bench" "$tokdir" "$out/corpus.json" "$out/ids_dsv4.jsonl" "$passes" | tee "$out/dsv4.txt"
$pin node "$here/bench.js" "$tokdir/tokenizer.json" "$out/corpus.json" "$out/ids_hf.jsonl" "$passes" | tee "$out/hf.txt"
if cmp -s "$out/ids_dsv4.jsonl" "$out/ids_hf.jsonl"; then
  echo "ids: identical ($(wc -l < "$out/ids_dsv4.jsonl") documents)"
else
  echo "ids: DIFFERENT" >&2
  exit 1
fi
ours=$(sed -E 's/.*cpu [0-9.]+ s = ([0-9.]+) MiB\/s.*/\1/' "$out/dsv4.txt")
ref=$(sed -E 's/.*cpu [0-9.]+ s = ([0-9.]+) MiB\/s.*/\1/' "$out/hf.txt")
echo "speedup (cpu time): $(awk -v a="$ours" -v b="$ref" 'BEGIN { printf "%.2fx", a / b }')"
