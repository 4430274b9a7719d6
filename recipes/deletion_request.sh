#!/usr/bin/env bash
# A deletion request, end to end, with no access to the original training data:
#   MODEL   a causal LM (local directory or Hub id)
#   FORGET  the texts to forget (.txt one per line, .jsonl or .csv with a 'text' column)
#   HELDOUT texts of the same kind the model never saw (for the Eq. 17 "forgotten" thresholds)
# Usage: recipes/deletion_request.sh MODEL FORGET HELDOUT OUT_DIR [REPO_ID]
set -euo pipefail
model=$1 forget=$2 heldout=$3 out=$4 repo=${5:-}

neumuter unlearn --model "$model" --forget "$forget" --layers all --out "$out/run"
neumuter eval --model "$model" --forget "$forget" --heldout "$heldout" --out "$out/eval-before"
neumuter eval --model "$model" --intervention "$out/run/intervention" --forget "$forget" --heldout "$heldout" \
    --out "$out/eval-after"
neumuter export "$out/run" --to merged --out "$out/merged"          # serve with any engine
neumuter export "$out/run" --to peft-ia3 --out "$out/ia3-adapter"   # load with plain PEFT
if [ -n "$repo" ]; then
    neumuter export "$out/run" --to pyvene --out "$out/pyvene-package" --push "$repo" --private
fi
