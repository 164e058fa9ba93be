#!/usr/bin/env bash
# Runs each fuzz target for a bounded time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS defaults to $FUZZ_SECONDS or 60 (per target); TARGET defaults to every target
# (scrubber, payment_parser). Needs the nightly toolchain; installs cargo-fuzz if missing.
# Seeds in fuzz/seeds/<target>/ and the dictionary fuzz/dicts/<target>.dict are used when
# present; the growing corpus is kept in fuzz/corpus/<target>/ and crashes land in
# fuzz/artifacts/<target>/ (both git-ignored). Exits non-zero if any target found a failure.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."   # cargo fuzz works from the crate that holds fuzz/

seconds="${1:-${FUZZ_SECONDS:-60}}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(scrubber payment_parser)
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it" >&2
    cargo install cargo-fuzz --locked
fi

failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    corpora=("$corpus")
    if [ -d "fuzz/seeds/$target" ]; then
        corpora+=("fuzz/seeds/$target")
    fi
    options=("-max_total_time=$seconds" "-timeout=10" "-print_final_stats=1")
    if [ -f "fuzz/dicts/$target.dict" ]; then
        options+=("-dict=fuzz/dicts/$target.dict")
    fi
    echo "=== fuzzing $target for ${seconds}s" >&2
    if cargo +nightly fuzz run "$target" "${corpora[@]}" -- "${options[@]}"; then
        echo "=== $target: no failure found" >&2
    else
        echo "=== $target: FAILED (reproducer in fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz failures: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${seconds}s each without failure" >&2
