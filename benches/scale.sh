#!/usr/bin/env bash
# The model checker's scale, measured in one run: states per second on the
# unreduced space, the reduced search on the scenarios issue 12 compares
# with SPIN, the largest qemu-9.1 scenario with misses and short reads (and
# with queued reads, what a Linux socket does), and
# `explain` on every example log. Each command runs under /usr/bin/time (wall
# seconds, peak resident memory); the table is Markdown for RESULTS.md.
#
# Usage: bash benches/scale.sh   (builds the release binary first)
# Needs: /usr/bin/time, jq.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p checker
bin=target/release/vhost-race
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run | verdicts | unique states | search s | states/s | total s | peak MB |"
echo "|---|---|---|---|---|---|---|"

# One check: label, then the CLI's arguments (JSON output is added).
check() {
  local label=$1; shift
  local code=0
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$bin" check --json "$@" >"$tmp/out" 2>"$tmp/err" || code=$?
  read -r wall kb < <(tail -n 1 "$tmp/time")
  local mb=$((kb / 1024))
  if [ "$code" -eq 0 ]; then
    jq -r --arg name "$label" --arg wall "$wall" --arg mb "$mb" '
      [ $name,
        ([.properties[] | if .holds then "✓" else "✗" end] | join("")),
        .unique_states,
        (.search_seconds * 100 | round / 100),
        ((.unique_states / .search_seconds) | round),
        $wall, $mb ] | "| " + (map(tostring) | join(" | ")) + " |"' "$tmp/out"
  else
    local why
    why=$(grep -o 'stopped at the state bound ([0-9]* states generated, [0-9]* unique' "$tmp/err" \
      | sed 's/stopped at the state bound (/refused at the bound: /') || why="exit $code"
    echo "| $label | $why | | | | $wall | $mb |"
  fi
}

check "qemu-9.1, V=6, short reads, every interleaving (--full)" \
  --variant qemu-9.1 --virtqueues 6 --misses 0 --short-reads --full
check "qemu-9.1, V=8, short reads, every interleaving (--full)" \
  --variant qemu-9.1 --virtqueues 8 --misses 0 --short-reads --full --max-states 200000000
check "qemu-9.1, V=6, short reads, reduced" \
  --variant qemu-9.1 --virtqueues 6 --misses 0 --short-reads
check "qemu-9.1, V=8, short reads, reduced" \
  --variant qemu-9.1 --virtqueues 8 --misses 0 --short-reads
check "qemu-9.1, V=8, short reads, reduced, 2 threads" \
  --variant qemu-9.1 --virtqueues 8 --misses 0 --short-reads --threads 2
check "qemu-9.1, 16 vq, 8 misses, reduced" \
  --variant qemu-9.1 --virtqueues 16 --misses 8
check "qemu-9.1, 16 vq, 8 misses, short reads, reduced" \
  --variant qemu-9.1 --virtqueues 16 --misses 8 --short-reads
# The variants, as the matrix names them.
mapfile -t variants < <("$bin" --json 2>/dev/null | jq -r '.[].variant')
# Every row at 8 updates and 3 misses: with short reads, then with reads as
# a Linux socket makes them (--queued-reads).
for reads in short queued; do
  for v in "${variants[@]}"; do
    check "$v, 8 vq, 3 misses, $reads reads, reduced" \
      --variant "$v" --virtqueues 8 --misses 3 "--$reads-reads"
  done
done
check "qemu-9.1, 16 vq, 8 misses, queued reads, reduced" \
  --variant qemu-9.1 --virtqueues 16 --misses 8 --queued-reads

echo
echo "| explain (default bound: 8 virtqueues, 3 misses) | explained by | total s | peak MB |"
echo "|---|---|---|---|"
for log in examples/logs/*.log; do
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$bin" explain --json "$log" >"$tmp/out" 2>"$tmp/err"
  read -r wall kb < <(tail -n 1 "$tmp/time")
  by=$(jq -r '[.variants[] | select(.found != null) | .variant] | join(", ")' "$tmp/out")
  echo "| $(basename "$log") | ${by:-none} | $wall | $((kb / 1024)) |"
done
