#!/bin/sh
# `npm test`: the whole suite, as CI runs it. The type check and the build, then two runners
# side by side:
#  - every test file outside test/slow/, one at a time (node --test's own order and
#    concurrency on 2 cores), streamed as it runs;
#  - test/slow/ (the 5-minute soak, mostly waiting on its churn, then the 1-minute fuzz), one
#    after the other, beside the first: together they take less time than the first runner,
#    so the whole stays under 10 minutes.
# The slow runner's report is printed after the others', then one summary of both runners (the
# node:test `# tests/# pass/# fail …` lines, summed, and every skipped test and part of a test
# with its reason: scripts/test-summary.sh), so a reader of the last summary sees the whole
# suite. The status is non-zero if either runner failed.
#
# `npm run test:fast` (scripts/test-fast.sh) is the edit loop: no build, no slow directories.
set -u
cd "$(dirname "$0")/.."
./node_modules/.bin/tsc -p . || exit 1
# dist/ as users run it (bin/chardev.js, the package test): rebuilt from the sources just checked.
node scripts/build.mjs || exit 1
slow_out=$(mktemp)
rest_out=$(mktemp)
rest_rc=$(mktemp)
trap 'rm -f "$slow_out" "$rest_out" "$rest_rc"' EXIT
node --import tsx --test --test-concurrency=1 $(find test/slow -name '*.test.ts' | sort -r) >"$slow_out" 2>&1 &
slow_pid=$!
{ node --import tsx --test $(find test -name '*.test.ts' ! -path 'test/slow/*' | sort) 2>&1; echo $? >"$rest_rc"; } | tee "$rest_out"
rest=$(cat "$rest_rc")
wait "$slow_pid"
slow=$?
echo "# --- test/slow/ (ran beside the files above) ---"
cat "$slow_out"
echo "# --- whole suite: both runners ---"
sh scripts/test-summary.sh "$rest_out" "$slow_out"
[ "$rest" -eq 0 ] && [ "$slow" -eq 0 ] || exit 1
# The figures the tests printed become docs/reliability.md's last section, when asked for.
if [ "${CHARDEV_WRITE_DOCS:-}" = 1 ]; then node scripts/reliability-page.mjs "$rest_out" "$slow_out"; fi
