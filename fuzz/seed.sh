#!/usr/bin/env bash
# Lay out fuzz/corpus/<target>/ (gitignored) from the committed hand-written
# seeds in fuzz/seeds/<target>/ and, for `validate` and `redact`, the shared
# llama-swap corpus (real configs and upstream examples), never copied into the
# repository. The shared corpus is looked for at $SWAPCFG_SHARED, else
# ../shared/llama-swap beside the checkout, else /work/shared/llama-swap;
# without it those start from the hand-written seeds alone.
# Existing corpus files are kept (libFuzzer's finds accumulate).
set -euo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
for dir in "$fuzz"/seeds/*/; do
    t="$(basename "$dir")"
    mkdir -p "$fuzz/corpus/$t"
    cp -n "$dir"* "$fuzz/corpus/$t/" 2>/dev/null || true
done
shared=""
for c in "${SWAPCFG_SHARED:-}" "$fuzz/../../shared/llama-swap" /work/shared/llama-swap; do
    if [ -n "$c" ] && [ -d "$c/corpus/real" ]; then shared="$c"; break; fi
done
if [ -z "$shared" ]; then
    echo "seed.sh: no shared llama-swap corpus found; validate and redact start from fuzz/seeds only" >&2
    exit 0
fi
n=0
for f in "$shared"/corpus/real/*.yaml "$shared"/upstream/*.yaml; do
    [ -f "$f" ] || continue
    case "$f" in */corpus/real/*) name="real-$(basename "$f")" ;; *) name="upstream-$(basename "$f")" ;; esac
    for t in validate redact; do
        cp -n "$f" "$fuzz/corpus/$t/$name" 2>/dev/null || true
    done
    n=$((n + 1))
done
echo "seed.sh: $n configs from $shared for validate and redact"
