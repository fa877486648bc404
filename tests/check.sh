#!/usr/bin/env bash
# The project's test command (README "Set-up", .ci/run): formatting, lints, every test
# including doctests and the Debian package's (one release build, by build-deb), then the
# Python package's tests. Fails on the first failing step; ends with one summed closing
# line.
#
# The archive-tier tests need a local S3-compatible server: moto, installed here into
# target/py-venv (the Rust tests start it from there on a free port of 127.0.0.1, per test
# file, and stop it; pytest starts its own). A test whose prerequisite is missing (moto,
# root, a tool) fails; TMPA_ALLOW_SKIP=1 would make it skip, and is never set here.
set -euo pipefail
cd "$(dirname "$0")/.."
unset TMPA_ALLOW_SKIP
echo "== Python venv (target/py-venv): maturin, pytest, mypy, moto (the S3 server of the tests)"
venv=target/py-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# moto[s3] and the server's web framework only: moto[server] would pull every AWS
# service's dependencies (about three times the download) for nothing.
# mypy: the package's stubs are checked against the built extension (stubtest) and a
# backend's typed use of it (--strict) after pytest.
"$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.5,<2" "pytest>=7" \
    "mypy>=1.18,<3" "moto[s3]>=5,<6" "flask>=2,<4" "flask-cors>=4,<7"
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo doc --workspace --no-deps, warnings denied (broken or private doc links)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps -q
echo "== test tools: systemd-analyze, strace, dpkg-shlibdeps, readelf, man, lintian, libfaketime, restic, borg, promtool, systemd-journal-remote, podman, bindfs"
# tests/tests/cron.rs rates the units with systemd-analyze (and checks their system call
# filters against what strace sees the programs call); packaging.rs builds the
# Debian package (bash packaging/build-deb: cargo-deb runs dpkg-shlibdeps and strip) and
# reads it (readelf, man) and has lintian check it; monitoring.rs checks and tests the alert rules with promtool
# (Debian's prometheus package). A fresh machine may lack them: install what is missing.
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v strace >/dev/null || missing+=(strace)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v readelf >/dev/null || missing+=(binutils)
command -v man >/dev/null || missing+=(man-db)
command -v lintian >/dev/null || missing+=(lintian)
# tmpclean's tests run it with its clock a minute ahead (tmpa_tests::clock_ahead): a
# file's ctime cannot be set back, and --older-than has a floor of one minute.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(libfaketime)
# tests/tests/snapshot.rs backs a snapshot up with the real restic and borg and restores it.
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
command -v promtool >/dev/null || missing+=(prometheus)
# The patrol reads the units' output from the journal with journalctl; tests write real
# journal files for it with systemd-journal-remote (tmpa_tests::journal).
[ -x /lib/systemd/systemd-journal-remote ] || missing+=(systemd-journal-remote)
# tests/tests/container.rs builds the image with podman (packaging/container/build) and
# reads it through `podman image mount`; no container is ever run.
command -v podman >/dev/null || missing+=(podman)
# tests/tests/off_local_disk.rs mounts a real FUSE file system (bindfs) for what NFS, SMB
# and FUSE do differently (no RENAME_NOREPLACE; leases that see only this mount).
command -v bindfs >/dev/null || missing+=(bindfs fuse3)
# tests/tests/group_commit.rs power-cuts ext4 and XFS images on loop devices (mkfs.ext4,
# mkfs.xfs; xfs_io's shutdown, FS_IOC_SHUTDOWN, works on both).
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
{ command -v mkfs.xfs >/dev/null && command -v xfs_io >/dev/null; } || missing+=(xfsprogs)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "tests/check.sh: missing packages ${missing[*]}: install them (apt-get install)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== cargo test --workspace (unit, integration, doctests; packaging.rs runs bash packaging/build-deb)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The test binaries as `cargo test` runs them, three at a time (tests/run_tests.py: most
# integration tests wait on child programs, strace's stretched calls and fsyncs), then
# the doctests.
cargo test --locked --workspace --no-run
python3 tests/run_tests.py --jobs 3 --locked --workspace 2>&1 | tee "$log"
cargo test --locked --workspace --doc 2>&1 | tee -a "$log"
echo "== cargo test -p tmpa-core --test no_store_feature (the library without object-store)"
cargo test --locked -p tmpa-core --test no_store_feature 2>&1 | tee -a "$log"

echo "== Python package tmpa (tmpa-py): maturin develop, pytest"
(cd tmpa-py && VIRTUAL_ENV="$PWD/../$venv" PATH="$PWD/../$venv/bin:$PATH" maturin develop -q)
cargo build -q --bin tmpa-compact --bin tmpa-archive
pylog=$(mktemp)
trap 'rm -f "$log" "$pylog"' EXIT
"$venv/bin/python" -m pytest -q -p no:cacheprovider tmpa-py/tests 2>&1 | tee "$pylog"
echo "== Python types: mypy.stubtest tmpa (the stubs against the extension), mypy --strict"
# Both keep their cache under target/ (stubtest writes .mypy_cache in its directory).
export MYPY_CACHE_DIR="$PWD/target/mypy-cache"
(cd target && "../$venv/bin/python" -m mypy.stubtest tmpa)
"$venv/bin/python" -m mypy --strict tmpa-py/python/tmpa tmpa-py/tests/typing_check.py

# cargo prints one "test result:" line per test binary, the last often a crate's empty
# doctest run, and pytest one "N passed, M failed in Xs" line; sum them so the closing
# line says what ran.
{
    awk '/^test result:/ { p += $4; f += $6 } END { print p, f }' "$log"
    tail -n 1 "$pylog" | awk '{ p = 0; f = 0; for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p = $(i-1); if ($i ~ /^(failed|errors?)/) f += $(i-1) } print p, f }'
} | awk '{ p += $1; f += $2 } END { printf "tests: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }'
