#!/usr/bin/env bash
# Single-validator throughput-latency sweep plus the verify baseline, same run.
set -euo pipefail
V=${VELOX:-velox}   # path to the velox binary
$V bench verify --json > verify.json
for r in 2000 5000 10000 20000 30000 40000 50000; do
  $V devnet --validators 1 --rate $r --duration 10 --report sweep-$r.json >/dev/null 2>sweep-$r.err
done
