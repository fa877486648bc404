#!/usr/bin/env bash
# The project's test command (README "Set-up", .ci/run): formatting, lints, every test
# including doctests. Fails on the first failing step; ends with one summed closing line.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test --workspace (unit, integration, doctests)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# cargo prints one "test result:" line per test binary, the last often a crate's empty
# doctest run; sum them so the closing line says what ran.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' "$log"
