#!/usr/bin/env bash
# make bench: runs specd-bench on the trained pair for every prompt set in ../shared/models and
# writes the tables into docs/PERF.md (between the bench markers). When LLAMA_CPP_BIN points at a
# llama.cpp build's bin/ folder (llama-speculative-simple / llama-bench), it also runs llama.cpp
# on the same files in the same run for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
M=${SPECD_MODELS:-../shared/models}
N=${BENCH_TOKENS:-64}
P=${BENCH_PROMPTS:-10}
THREADS=${BENCH_THREADS:-$(nproc)}
out=$(mktemp)
{
    echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "\`make bench\`: first $P prompts of each file, $N tokens each, greedy, one sequence at a time,"
    echo "$THREADS threads. tokens/seq-step = tokens emitted per sequence per speculative step."
    for f in "$M"/prompts-*.txt; do
        name=$(basename "$f" .txt)
        echo
        echo "#### $name — draft model"
        echo
        build/bin/specd-bench -m "$M/target-q8_0.gguf" -d "$M/draft-q8_0.gguf" -f "$f" \
            --prompts "$P" -n "$N" -t "$THREADS" --markdown
        echo
        echo "#### $name — n-gram lookup"
        echo
        build/bin/specd-bench -m "$M/target-q8_0.gguf" --ngram -f "$f" --prompts "$P" -n "$N" \
            -t "$THREADS" --depths 0,2,4,8 --markdown
    done
    if [ -n "${LLAMA_CPP_BIN:-}" ] && [ -x "$LLAMA_CPP_BIN/llama-bench" ]; then
        echo
        echo "#### llama.cpp on the same machine and files (llama-bench, tg$N = batch-1 decoding)"
        echo
        for model in target-q8_0 draft-q8_0; do
            "$LLAMA_CPP_BIN/llama-bench" -m "$M/$model.gguf" -p 0 -n "$N" -t "$THREADS" -r 5 \
                --repack 0 -o md 2>/dev/null | grep '^|'
        done
    fi
} | tee "$out"
python3 - "$out" <<'PY'
import re, sys
table = open(sys.argv[1]).read().strip()
path = "docs/PERF.md"
doc = open(path).read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
new = doc[:doc.index(begin) + len(begin)] + "\n" + table + "\n" + doc[doc.index(end):]
open(path, "w").write(new)
print("updated", path)
PY
rm -f "$out"
