#!/usr/bin/env bash
# What `npm test` runs after the build: the linter and the tests at the same time. The
# linter's type-aware rules take half a minute of mostly one core, and the tests spend much
# of theirs waiting on sockets and child processes; side by side the whole run is that much
# shorter. The linter's report is printed after the tests'; either failing fails the run.
set -u
cd "$(dirname "$0")/.."
lint_out=$(mktemp)
trap 'rm -f "$lint_out"' EXIT
npx eslint . >"$lint_out" 2>&1 &
lint=$!
npx vitest run "$@"
tests=$?
wait "$lint"
linted=$?
if [ "$linted" -ne 0 ]; then
  echo "eslint failed:" >&2
  cat "$lint_out" >&2
fi
[ "$tests" -eq 0 ] && [ "$linted" -eq 0 ]
