#!/usr/bin/env bash
# Installs the dependencies, builds specd and generates text on the CPU backend with the trained
# target/draft pair in ../shared/models, speculative decoding on.
set -euo pipefail
cd "$(dirname "$0")/.."

models=${SPECD_MODELS:-../shared/models}
if [ ! -f "$models/target-q8_0.gguf" ] || [ ! -f "$models/draft-q8_0.gguf" ]; then
    echo "demo: $models/target-q8_0.gguf and draft-q8_0.gguf not found;" \
         "set SPECD_MODELS to the folder that holds them" >&2
    exit 1
fi
bash scripts/install-deps.sh
make -j"$(nproc)" programs
echo
echo "== greedy, speculative decoding with the draft model (depth 4) =="
build/bin/specd-generate -m "$models/target-q8_0.gguf" -d "$models/draft-q8_0.gguf" --depth 4 \
    -p "And the scribes and Pharisees watched him, whether he would heal on the" -n 48
echo
echo "== 4 prompts as one continuous batch, sampling at temperature 0.8 =="
build/bin/specd-generate -m "$models/target-q8_0.gguf" -d "$models/draft-q8_0.gguf" \
    -f "$models/prompts-code.txt" --parallel 4 -n 32 --temp 0.8 --seed 42 --json | head -4
