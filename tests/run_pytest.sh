#!/usr/bin/env bash
# Runs pytest on each given folder (default: clients/python/tests and tests/e2e) and prints a RESULT line per folder for tests/run.sh.
# Uses Debian's python3 (python3-redis, python3-pytest) when present.
set -u
cd "$(dirname "$0")/.."
py=/usr/bin/python3
[ -x "$py" ] || py=python3
status=0 ran=0
[ $# -gt 0 ] || set -- clients/python/tests tests/e2e
for dir in "$@"; do
    [ -d "$dir" ] || continue
    ran=1
    out=$("$py" -m pytest "$dir" -q -p no:cacheprovider 2>&1)
    rc=$?
    printf '%s\n' "$out" >&2
    passed=$(grep -oE '[0-9]+ passed' <<<"$out" | tail -1 | cut -d' ' -f1)
    failed=$(grep -oE '[0-9]+ (failed|error)' <<<"$out" | awk '{s+=$1} END {print s+0}')
    skipped=$(grep -oE '[0-9]+ (skipped|xfailed)' <<<"$out" | awk '{s+=$1} END {print s+0}')
    if [ "$rc" = 5 ]; then rc=0; fi # no tests collected
    if [ "$rc" != 0 ] && [ "${failed:-0}" = 0 ]; then failed=1; fi
    echo "RESULT pytest $dir: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
    [ "$rc" = 0 ] || status=1
done
[ "$ran" = 1 ] || echo "RESULT pytest: 0 passed, 0 failed, 0 skipped"
exit $status
