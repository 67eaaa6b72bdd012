#!/bin/sh
# The summary `npm test` (scripts/test.sh) ends with, from the TAP output of its runners
# (files given as arguments):
#  - the runners' own counts (`# tests 333` …), summed per key;
#  - nothing skips silently: every skipped test with its reason (node:test's `# SKIP reason`),
#    and the parts of a test it reports as skipped itself (`skipped: …` lines, e.g. the
#    conformance cases' parts that cannot be compared). Under CI=1 (.ci/run) the tests that
#    skip elsewhere for want of root or the real-guest kit run, and fail if it is missing.
set -u
cat "$@" | awk '/^# (tests|suites|pass|fail|cancelled|skipped|todo) [0-9]+$/ { n[$2] += $3 }
  END { split("tests suites pass fail cancelled skipped todo", k, " "); for (i = 1; i <= 7; i++) printf "# %s %d\n", k[i], n[k[i]] }'
cat "$@" | awk '
  / # SKIP/ { sub(/^[ \t]*ok [0-9]+ - /, ""); split($0, p, / # SKIP ?/); tests[++nt] = p[1] " (" (p[2] == "" ? "no reason given" : p[2]) ")"; next }
  /^#[ \t]+skipped: / { sub(/^#[ \t]+skipped: /, ""); if (!($0 in seen)) { seen[$0] = 1; parts[++np] = $0 } }
  END {
    printf "# skipped: %d test%s, %d part%s of tests\n", nt, nt == 1 ? "" : "s", np, np == 1 ? "" : "s"
    for (i = 1; i <= nt; i++) printf "#   test: %s\n", tests[i]
    for (i = 1; i <= np; i++) printf "#   part: %s\n", parts[i]
  }'
