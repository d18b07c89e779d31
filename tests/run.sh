#!/usr/bin/env bash
# Runs test binaries and adds up their RESULT lines. A binary that crashes or prints no RESULT
# line counts as one failure. Usage: tests/run.sh [--env K=V] BINARY... ; --env applies to the
# binaries after it.
set -u
passed=0 failed=0 skipped=0 bad=() envs=()
while [ $# -gt 0 ]; do
    t=$1
    shift
    if [ "$t" = --env ]; then
        envs+=("$1")
        shift
        continue
    fi
    out=$(env "${envs[@]}" "$t" 2> >(sed "s|^|[$(basename "$t")] |" >&2))
    rc=$?
    lines=$(printf '%s\n' "$out" | grep '^RESULT ')
    printf '%s\n' "$out"
    if [ -z "$lines" ]; then
        echo "CRASH $(basename "$t") (exit $rc, no RESULT line)"
        failed=$((failed + 1)); bad+=("$t"); continue
    fi
    f_here=0
    while IFS= read -r line; do
        p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
        f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
        s=$(sed -E 's/.* ([0-9]+) skipped.*/\1/' <<<"$line")
        passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
        f_here=$((f_here + f))
    done <<<"$lines"
    if [ "$f_here" != 0 ] || [ "$rc" != 0 ]; then
        bad+=("$t")
        [ "$f_here" = 0 ] && failed=$((failed + 1))
    fi
done
echo
[ ${#bad[@]} -gt 0 ] && echo "failing: ${bad[*]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
