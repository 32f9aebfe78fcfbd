#!/usr/bin/env bash
# The README's test command: installs dependencies, builds the normal and the ASan+UBSan trees,
# and runs the whole ctest suite in both. Needs ../shared (goldens, tokenizer) beside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -d ../shared/golden ]; then
  echo "error: ../shared/golden not found beside the project root ($(pwd)/../shared)." >&2
  echo "       The tests read DeepSeek's reference goldens from there." >&2
  exit 1
fi
jobs=$(nproc 2>/dev/null || echo 2)
bash scripts/build.sh build
(cd build && ctest --output-on-failure -j"$jobs")
if [ "${DSV4_SKIP_ASAN:-0}" != "1" ]; then
  bash scripts/build.sh build-asan -DDSV4_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSV4_BUILD_BENCH=OFF
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j"$jobs" -LE slow)
fi
