#!/usr/bin/env bash
# Cost of attempt history on the success path (none: the completing attempt is kept on the entry,
# not as a history row): the drain workload with and without it,
# alternating in one run. Usage: bash bench/history-cost.sh [pairs]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}
for i in $(seq 1 "$pairs"); do
  for history in true false; do
    rate=$(BENCH_INBOX_OPTIONS="{\"attemptHistory\":$history}" npm run --silent bench -- --only drain --systems nestjs-inbox --repeat 1 --no-enforce 2>&1 \
      | awk -F'|' '$2 ~ /drain/ && $3 ~ /nestjs-inbox/ && $4 ~ /commands\/s/ { gsub(/[ ,]/, "", $5); print $5 }')
    echo "pair $i attemptHistory=$history drain ${rate} cmd/s"
  done
done
