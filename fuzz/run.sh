#!/usr/bin/env bash
# Run every fuzz target (or the ones named) for SECONDS each, one after
# another, from fuzz/corpus/<target>/ laid out by seed.sh. Prints one
# summary row per target: runtime, executions, final corpus size, crashes.
# Exits non-zero if any target crashed (panic, failed assertion, sanitizer
# report, out-of-memory); the crashing input is kept in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (default 30 s, every target)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -uo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz/.." || exit 2
secs="${1:-30}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
"$fuzz/seed.sh" || exit 2
cargo +nightly fuzz build || exit 2
mkdir -p "$fuzz/logs"
failed=()
rows=()
for t in "${targets[@]}"; do
    log="$fuzz/logs/$t.log"
    echo "fuzz: $t for ${secs}s (log: fuzz/logs/$t.log)"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)"
    took="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)"
    # libFuzzer's own final corpus (inputs kept / their total size); the
    # directory also holds inputs it later replaced by smaller ones.
    corpus="$(sed -n 's/.*DONE .* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\) .*/\1/p' "$log" | tail -1)"
    corpus="${corpus:-$(find "$fuzz/corpus/$t" -type f | wc -l) files}"
    crashes=0
    if [ "$rc" -ne 0 ]; then
        crashes=1
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc); the end of its log:" >&2
        tail -40 "$log" | cut -c1-400 >&2
    fi
    rows+=("$(printf '| %s | %ss | %s | %s | %s |' "$t" "${took:-?}" "${runs:-?}" "$corpus" "$crashes")")
done
echo "| target | runtime | executions | corpus size | crashes |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
