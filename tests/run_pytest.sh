#!/usr/bin/env bash
# Runs the Python client's tests and prints a RESULT line for tests/run.sh.
set -u
cd "$(dirname "$0")/.."
py=/usr/bin/python3
[ -x "$py" ] || py=python3
out=$("$py" -m pytest clients/python/tests -q -p no:cacheprovider 2>&1)
rc=$?
printf '%s\n' "$out" >&2
passed=$(grep -oE '[0-9]+ passed' <<<"$out" | tail -1 | cut -d' ' -f1)
failed=$(grep -oE '[0-9]+ (failed|error)' <<<"$out" | awk '{s+=$1} END {print s+0}')
skipped=$(grep -oE '[0-9]+ skipped' <<<"$out" | tail -1 | cut -d' ' -f1)
[ "$rc" != 0 ] && [ "${failed:-0}" = 0 ] && failed=1
echo "RESULT pytest clients/python: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
[ "$rc" = 0 ]
