#!/usr/bin/env bash
# One-go GPU check: run it whenever a GPU machine is at hand; it ends in under 8 minutes and prints
# one summary table (copy it into docs/benchmarks.md with the machine it came from).
#
#   1. tests       the `gpu`-marked tests (bf16 pretraining resume, head train + eval on CUDA, ...)
#   2. pretrain    sapiens2-0.4b pretraining steps (MAE + CL, EMA) at 1024x768, bf16: img/s, MFU
#   3. head        a sapiens2-0.4b seg fine-tuning step at 1024x768, bf16: img/s, MFU
#   4. block-mem   one block's activation memory with and without checkpointing (measured peaks)
#   5. stages      detect, headpose, embed, quality, text alone on CUDA, then the DAG's efficiency
#                  (bench/gpu_model_stages.py)
#   6. faiss       faiss-gpu installed beside the venv (when a wheel installs): semdedup/cluster rates
#
# Without CUDA the CPU-safe parts run (tiny model steps, the faiss CPU rates; the gpu tests are
# skipped and the GPU-only parts are reported as such): the script itself stays tested.
#   bench/gpu_check.sh                 # from the repository root or anywhere
#   GPU_CHECK_OUT=/tmp/check bench/gpu_check.sh   # keep the JSON files
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${GPU_CHECK_OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
export RAY_AUTH_MODE=disabled YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 YOLO_CONFIG_DIR=$OUT/yolo MPLCONFIGDIR=$OUT/mpl
export PYTHONWARNINGS=ignore
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
START=$SECONDS
: > "$OUT/parts.tsv"

# part NAME BUDGET_S CMD...: run with a time budget; record status and seconds; log in OUT/NAME.log
part() {
  local name=$1 budget=$2; shift 2
  local t0=$SECONDS
  echo "== $name (budget ${budget}s): $*" >&2
  timeout --kill-after=10 "$budget" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local status=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timeout"
  [ $rc -ne 0 ] && [ "$status" = ok ] && status="failed (rc $rc)"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$OUT/parts.tsv"
  tail -n 3 "$OUT/$name.log" >&2
}
skip() { printf '%s\t%s\t0\n' "$1" "skipped: $2" >> "$OUT/parts.tsv"; }

if [ "$CUDA" = 1 ]; then
  # Budgets (pip install included) add up to 460 s: the whole check ends within 8 minutes.
  part tests 80 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/training
  part pretrain 70 "$PY" bench/bench_train_step.py --device cuda --model sapiens2-0.4b --batch 4 --steps 8 \
    --json "$OUT/pretrain.json"
  part head 45 "$PY" bench/bench_train_step.py --device cuda --objective head --model sapiens2-0.4b --batch 4 \
    --steps 8 --json "$OUT/head.json"
  part block-mem 35 "$PY" bench/bench_block_memory.py --device cuda --scale 1 --blocks 2
  part stages 120 "$PY" bench/gpu_model_stages.py --copies 10 --json "$OUT/stages.json"
  # faiss-gpu beside the venv (PYTHONPATH wins over the venv's faiss-cpu); its numpy is dropped so
  # the venv's own stays in use. faiss_ops moves its indexes to the GPU when it sees one.
  if timeout 60 "$PY" -m pip install -q --target "$OUT/faiss_gpu" "faiss-gpu>=1.9" > "$OUT/faiss_pip.log" 2>&1 \
     && rm -rf "$OUT"/faiss_gpu/numpy "$OUT"/faiss_gpu/numpy-* \
     && env PYTHONPATH="$OUT/faiss_gpu" "$PY" -c "import faiss; assert faiss.get_num_gpus() > 0" \
        >> "$OUT/faiss_pip.log" 2>&1; then
    part faiss 50 env PYTHONPATH="$OUT/faiss_gpu" "$PY" bench/bench_global_rates.py --only faiss semdedup --repeats 2
  else
    skip faiss "faiss-gpu did not install or sees no GPU (see $OUT/faiss_pip.log)"
  fi
else
  part tests 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/training
  part pretrain 120 "$PY" bench/bench_train_step.py --model sapiens2-tiny --height 64 --width 64 --batch 2 \
    --local-crops 2 --steps 1 --warmup 1 --json "$OUT/pretrain.json"
  part head 120 "$PY" bench/bench_train_step.py --objective head --model sapiens2-tiny --height 64 --width 64 \
    --batch 2 --steps 1 --warmup 1 --json "$OUT/head.json"
  skip block-mem "no CUDA (CPU counts: bench/bench_block_memory.py)"
  # The same script on the CPU says no GPU was found and prints the CPU figures; a small job (16 rows
  # alone, one copy of the crawl through the DAG) so the check stays short. The full CPU figures:
  # bench/bench_model_stages.py (docs/benchmarks.md).
  part stages 240 "$PY" bench/gpu_model_stages.py --limit 16 --copies 1 --json "$OUT/stages.json"
  part faiss 120 "$PY" bench/bench_global_rates.py --only faiss --repeats 1
fi

"$PY" - "$OUT" "$((SECONDS - START))" "$CUDA" <<'EOF'
import json, re, sys
from pathlib import Path

out, total, cuda = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"


def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() else None


def figures(name):
    log = out / f"{name}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    if name == "tests":
        m = re.findall(r"\d+ (?:passed|failed|skipped|error)", text)
        return ", ".join(m)
    if name in ("pretrain", "head"):
        r = load(f"{name}.json")
        if not r:
            return ""
        mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") else ""
        mem = f", peak {r['peak_memory_gib']:.1f} GiB" if r.get("peak_memory_gib") else ""
        return (f"{r['model']} {r['size'][0]}x{r['size'][1]} b{r['batch']} {r['dtype']}: "
                f"{r['images_per_s']:.2f} img/s, {r['tflops_per_s']:.2f} TFLOP/s{mfu}{mem}")
    if name == "block-mem":
        rows = [line for line in text.splitlines() if line.startswith("| sapiens2")]
        return "; ".join(" ".join(c.strip() for c in r.strip("|").split("|")[::3]) for r in rows)
    if name == "stages":
        r = load("stages.json")
        if not r:
            return ""
        alone = ", ".join(f"{k} {v['img_per_s']:.0f}" for k, v in r["stages"].items())
        dag = r.get("dag") or {}
        fused = f"; DAG {dag['img_per_s']:.1f} img/s, efficiency {dag['efficiency']:.2f}" if dag else ""
        return f"img/s alone: {alone}{fused}"
    if name == "faiss":
        return "; ".join(line.strip() for line in text.splitlines() if "GFLOP/s" in line or "semdedup" in line)[:200]
    return ""


rows = [line.rstrip("\n").split("\t") for line in (out / "parts.tsv").read_text().splitlines()]
print(f"\nGPU check ({'CUDA' if cuda else 'no CUDA: CPU-safe parts only'}), {total} s, logs in {out}\n")
print("| part | status | s | figures |")
print("|---|---|---|---|")
for name, status, seconds in rows:
    print(f"| {name} | {status} | {seconds} | {figures(name) if status == 'ok' else ''} |")
bad = [name for name, status, _ in rows if status != "ok" and not status.startswith("skipped")]
sys.exit(1 if bad else 0)
EOF
