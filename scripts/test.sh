#!/bin/sh
# `npm test`: the whole suite, as CI runs it. The type check, the lint and format check, the
# build, then three runners side by side, each running its files one at a time, so the whole
# stays well under 10 minutes on 2 cores:
#  - heavy: the directories whose tests move bulk data, boot real guests or drive a browser
#    (test/flow, test/qemu, test/reliability, test/daemon, test/web, test/package), which
#    must not compete with each other for the CPU;
#  - soak: test/slow/soak.test.ts, 5 minutes mostly waiting on its client churn;
#  - light: everything else (the fuzzer's minute included), streamed as it runs.
# The other runners' reports are printed after it, then one summary of all three (the
# node:test `# tests/# pass/# fail …` lines, summed, and every skipped test and part of a test
# with its reason: scripts/test-summary.sh), so a reader of the last summary sees the whole
# suite. The status is non-zero if any runner failed. With CHARDEV_WRITE_DOCS=1 a passing run
# writes its figures into docs/reliability.md.
#
# `npm run test:fast` (scripts/test-fast.sh) is the edit loop: no build, no slow directories.
set -u
cd "$(dirname "$0")/.."
./node_modules/.bin/tsc -p . || exit 1
./node_modules/.bin/biome ci . || exit 1
# dist/ as users run it (bin/chardev.js, the package test): rebuilt from the sources just checked.
node scripts/build.mjs || exit 1
HEAVY='test/flow test/qemu test/reliability test/daemon test/web test/package'
SOAK=test/slow/soak.test.ts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
heavy_files=$(for d in $HEAVY; do find "$d" -name '*.test.ts'; done | sort)
light_files=$(find test -name '*.test.ts' | sort | grep -v -x -F "$SOAK" | grep -v -x -F "$heavy_files")
{ node --import tsx --test --test-concurrency=1 $heavy_files >"$tmp/heavy" 2>&1; echo $? >"$tmp/heavy.rc"; } &
heavy_pid=$!
{ node --import tsx --test "$SOAK" >"$tmp/soak" 2>&1; echo $? >"$tmp/soak.rc"; } &
soak_pid=$!
{ node --import tsx --test --test-concurrency=1 $light_files 2>&1; echo $? >"$tmp/light.rc"; } | tee "$tmp/light"
wait "$heavy_pid" "$soak_pid"
echo "# --- heavy: $HEAVY (ran beside the files above) ---"
cat "$tmp/heavy"
echo "# --- $SOAK (ran beside the files above) ---"
cat "$tmp/soak"
echo "# --- whole suite: all three runners ---"
sh scripts/test-summary.sh "$tmp/light" "$tmp/heavy" "$tmp/soak"
for r in light heavy soak; do [ "$(cat "$tmp/$r.rc")" -eq 0 ] || exit 1; done
# The figures the tests printed become docs/reliability.md's last section, when asked for.
if [ "${CHARDEV_WRITE_DOCS:-}" = 1 ]; then node scripts/reliability-page.mjs "$tmp/light" "$tmp/heavy" "$tmp/soak"; fi
