#!/bin/sh
# `npm test`: the type check, then every test file one at a time (node --test's own order and
# concurrency on 2 cores) — except the soak, test/slow/soak.test.ts, which runs for 5 minutes
# mostly waiting on its churn, in a second runner beside them so the whole stays under 10
# minutes. Its report is printed after the others'; the status is non-zero if either failed.
set -u
cd "$(dirname "$0")/.."
./node_modules/.bin/tsc -p . || exit 1
SOAK=test/slow/soak.test.ts
soak_out=$(mktemp)
trap 'rm -f "$soak_out"' EXIT
node --import tsx --test "$SOAK" >"$soak_out" 2>&1 &
soak_pid=$!
node --import tsx --test $(find test -name '*.test.ts' ! -path "./$SOAK" ! -path "$SOAK" | sort)
rest=$?
wait "$soak_pid"
soak=$?
echo "# --- $SOAK (ran beside the files above) ---"
cat "$soak_out"
[ "$rest" -eq 0 ] && [ "$soak" -eq 0 ]
