#!/usr/bin/env bash
# The README's main command (`make demo`): the whole DAG on the bundled sample crawl.
# With the default weights staged ($CURATE_WEIGHTS or the libraries' caches) it runs them. Where
# they cannot be had (this build machine has no internet), it says so, shows how to stage them,
# and runs the same DAG with random weights that configs/demo-random.yaml asks for by name; every
# output of that run records that its weights were random.
set -euo pipefail
CURATE=${CURATE:-.venv/bin/curate}
rm -rf demo-crawl demo-out
"$CURATE" sample-crawl demo-crawl
CONFIG=configs/demo.yaml
if "$CURATE" weights list --config "$CONFIG" --json | grep -q '"where": "missing"'; then
  echo
  echo "== The default model weights are not available on this machine:"
  "$CURATE" weights list --config "$CONFIG" | sed 's/^/==   /'
  echo "== To run with real weights: on a machine with internet, 'curate weights fetch --to DIR',"
  echo "== copy DIR here and 'export CURATE_WEIGHTS=DIR', then 'make demo' again."
  echo "== Running now with RANDOM weights (configs/demo-random.yaml asks for them by name)."
  echo "== Detections, embeddings and scores of this run are meaningless; the pipeline is real."
  echo
  CONFIG=configs/demo-random.yaml
fi
"$CURATE" run --input demo-crawl --output demo-out --config "$CONFIG"
"$CURATE" manifest verify demo-out/shards/manifest.json
"$CURATE" status demo-out
