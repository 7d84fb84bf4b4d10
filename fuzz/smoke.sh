#!/usr/bin/env bash
# Build every cargo-fuzz target and run each for SECONDS (default 60), starting from the
# committed seed corpus in fuzz/corpus/<target>/. New inputs go to a temporary directory, so
# the committed corpus is never modified. Exits non-zero on any build failure or crash; a
# crashing input is kept in fuzz/artifacts/<target>/.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler. cargo-fuzz needs
# nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "smoke.sh: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
    exit 1
fi

targets=(name_bytes plan_invariants render_roundtrip)
# cargo-fuzz has no --locked; check that the committed Cargo.lock is current instead.
if [ -f Cargo.lock ]; then
    cargo metadata --locked --format-version 1 >/dev/null
fi

cargo fuzz build -O

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=0
for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    echo "smoke.sh: fuzzing $target for ${seconds}s"
    # The first corpus directory receives new inputs; the committed seeds are read only.
    if cargo fuzz run -O "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$target.log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done )' \
            "$work/$target.log" | sed "s/^/smoke.sh: $target: /" || true
        echo "smoke.sh: $target: ok"
    else
        tail -n 60 "$work/$target.log" >&2
        echo "smoke.sh: $target: FAILED (artifacts in fuzz/artifacts/$target/)" >&2
        failed=1
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "smoke.sh: at least one fuzz target failed" >&2
    exit 1
fi
echo "smoke.sh: ${#targets[@]} targets ran ${seconds}s each without a crash"
