#!/usr/bin/env bash
# Seed fuzz/corpus/classify with every line of the classifier corpus.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/classify corpus/differential
i=0
grep -hv '^-- ' ../testdata/classify/*.sql | grep -v '^\s*$' | while IFS= read -r line; do
  printf "%s" "$line" > "corpus/classify/seed-$i"; printf "%s" "$line" > "corpus/differential/seed-$i"; i=$((i+1))
done
