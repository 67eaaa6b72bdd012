#!/bin/sh
# `npm run test:fast`: the edit loop, two files at a time. No type check or build (the editor and
# `npm run typecheck` do those), and none of the directories whose files take tens of seconds
# each: test/slow (soak, fuzz), test/flow (bulk transfers with slow and stalled readers),
# test/qemu (real guests), test/reliability (faults, churn), test/package (npm pack and
# install), test/web (Chromium). `npm test` runs everything; CI runs `npm test`.
# Extra arguments are passed to node --test (e.g. --test-name-pattern=telnet).
set -u
cd "$(dirname "$0")/.."
exec node --import tsx --test --test-concurrency=2 "$@" $(find test -name '*.test.ts' \
  ! -path 'test/slow/*' ! -path 'test/flow/*' ! -path 'test/qemu/*' \
  ! -path 'test/reliability/*' ! -path 'test/package/*' ! -path 'test/web/*' ! -path 'test/daemon/*' | sort)
