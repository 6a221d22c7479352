#!/usr/bin/env bash
# Fuzz the protocol decoders (RELIABILITY.md S1): build the `fuzz` preset (clang-14, libFuzzer,
# ASan + UBSan) and run every fuzz target for a time budget.
#
# Usage: scripts/fuzz.sh [seconds per variant]       (default 60; the LONG tier uses 600)
# Each limits variant (small, prod) gets the seconds, split between its two targets: the client
# protocol's decoders (protocol_fuzz_<variant>, the larger share on an odd count) and the
# cluster link decoder (protocol_fuzz_link_<variant>). The whole run takes 2 x seconds.
# Environment:
#   LARIV_FUZZ_BIN_DIR  use fuzz executables already built there; skip configure and build
#   LARIV_JOBS          build parallelism (default: nproc)
# Output: build/fuzz/artifacts/ holds crash, leak and timeout inputs; build/fuzz/corpus/<target>/
# the grown corpus. Exits non-zero if any target finds a crash, leak or timeout. Add crash files
# to tests/protocol/fuzz/corpus/ (corpus_link/ for the link targets) once fixed, so corpus
# replay keeps them fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-60}
root=$PWD
out=$root/build/fuzz
seeds_dir=$root/tests/protocol/fuzz
targets=(protocol_fuzz_small protocol_fuzz_link_small protocol_fuzz_prod protocol_fuzz_link_prod)
# libFuzzer reads -max_total_time=0 as "no limit": every target gets at least a second.
link_budget=$(( budget / 2 ))
(( link_budget >= 1 )) || link_budget=1
decoder_budget=$(( budget - link_budget ))
(( decoder_budget >= 1 )) || decoder_budget=1

if [[ -n "${LARIV_FUZZ_BIN_DIR:-}" ]]; then
    bin_dir=$LARIV_FUZZ_BIN_DIR
else
    cmake --preset fuzz >/dev/null
    cmake --build --preset fuzz -j "${LARIV_JOBS:-$(nproc)}" \
        --target "${targets[@]}"
    bin_dir=$out/tests/protocol
fi

mkdir -p "$out/artifacts"
status=0
for target in "${targets[@]}"; do
    exe=$bin_dir/$target
    [[ -x "$exe" ]] || exe=$(find "$bin_dir" -name "$target" -type f -perm -u+x | head -n 1)
    if [[ -z "$exe" || ! -x "$exe" ]]; then
        echo "fuzz.sh: $target not found under $bin_dir" >&2
        exit 2
    fi
    # The production build must be able to produce whole max-size frames (1 MiB payload plus
    # header); the small build's frames are at most a few hundred bytes.
    if [[ $target == *_prod ]]; then
        len_flags=(-max_len=1049000 -len_control=0)
    else
        len_flags=(-max_len=4096)
    fi
    if [[ $target == protocol_fuzz_link_* ]]; then
        seeds=$seeds_dir/corpus_link
        seconds=$link_budget
    else
        seeds=$seeds_dir/corpus
        seconds=$decoder_budget
    fi
    corpus=$out/corpus/$target
    mkdir -p "$corpus"
    log=$out/$target.log
    echo "== $target: ${seconds}s"
    set +e
    "$exe" "$corpus" "$seeds" -max_total_time="$seconds" -timeout=2 -rss_limit_mb=512 \
        "${len_flags[@]}" -print_final_stats=1 -artifact_prefix="$out/artifacts/$target-" \
        >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    size=$(find "$corpus" -type f | wc -l)
    echo "   execs=${execs:-?} exec/s=${rate:-?} corpus=$size exit=$rc"
    if [[ $rc -ne 0 ]]; then
        echo "   FAILED: see $log and $out/artifacts/" >&2
        grep -E "ERROR|check failed|SUMMARY" "$log" | head -n 5 >&2 || true
        status=1
    fi
done
exit $status
