#!/bin/sh
# `npm test`: the type check and the build, then every test file one at a time (node --test's own order and
# concurrency on 2 cores) — except the soak, test/slow/soak.test.ts, which runs for 5 minutes
# mostly waiting on its churn, in a second runner beside them so the whole stays under 10
# minutes. Its report is printed after the others', then one summary of both runners (the
# node:test `# tests/# pass/# fail …` lines, summed, and every skipped test and part of a test
# with its reason: scripts/test-summary.sh), so a reader of the last summary sees the whole
# suite. The status is non-zero if either runner failed.
set -u
cd "$(dirname "$0")/.."
./node_modules/.bin/tsc -p . || exit 1
# dist/ as users run it (bin/chardev.js, the package test): rebuilt from the sources just checked.
node scripts/build.mjs || exit 1
SOAK=test/slow/soak.test.ts
soak_out=$(mktemp)
rest_out=$(mktemp)
rest_rc=$(mktemp)
trap 'rm -f "$soak_out" "$rest_out" "$rest_rc"' EXIT
node --import tsx --test "$SOAK" >"$soak_out" 2>&1 &
soak_pid=$!
# Streamed as it runs, and kept for the summary.
{ node --import tsx --test $(find test -name '*.test.ts' ! -path "./$SOAK" ! -path "$SOAK" | sort) 2>&1; echo $? >"$rest_rc"; } | tee "$rest_out"
rest=$(cat "$rest_rc")
wait "$soak_pid"
soak=$?
echo "# --- $SOAK (ran beside the files above) ---"
cat "$soak_out"
echo "# --- whole suite: both runners ---"
sh scripts/test-summary.sh "$rest_out" "$soak_out"
[ "$rest" -eq 0 ] && [ "$soak" -eq 0 ]
