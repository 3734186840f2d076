#!/usr/bin/env bash
# Throughput-latency curve of a 4-validator devnet on this machine: signed
# transfers (verified, executed, stored) and, for like-for-like comparison
# with published DAG-BFT figures, 512-byte unsigned opaque transactions with
# signature checks and execution off. Writes the reports, a markdown table
# (curve.md) and a plot (curve.svg) in the current directory.
#
#   cargo build --release --workspace --all-targets
#   VELOX=target/release/velox CURVE=target/release/examples/devnet_curve \
#     benches/scripts/devnet-curve.sh
set -euo pipefail
V=${VELOX:-velox}
C=${CURVE:-devnet_curve}
N=${VALIDATORS:-4}
D=${DURATION:-10}
$V bench verify --json > verify.json
for r in ${SIGNED_RATES:-1000 2000 4000 6000 8000 10000}; do
  $V devnet --validators "$N" --rate "$r" --duration "$D" --report "signed-$r.json" >/dev/null 2>"signed-$r.err"
done
for r in ${OPAQUE_RATES:-2000 5000 10000 15000 20000 30000}; do
  $V devnet --validators "$N" --bench-unsigned-opaque --rate "$r" --duration "$D" \
    --report "opaque-$r.json" >/dev/null 2>"opaque-$r.err"
done
$C curve.svg signed-*.json opaque-*.json > curve.md
cat curve.md
