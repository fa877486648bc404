#!/usr/bin/env bash
# The project's test command (README "Set-up", .ci/run): formatting, lints, every test
# including doctests. Fails on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test --workspace (unit, integration, doctests)"
cargo test --workspace
