#!/usr/bin/env bash
# Reruns the comparison table of docs/baselines.md: every row trained by its
# config through the one trainer (`python -m musiq_jax.main`), one run after
# another, on synthetic_iqa/demo (the data of the README's demo), then
# `musiq_jax.compare` on the test split with paired bootstrap CIs.
#
#   bash benchmarks/baselines_table.sh [ROOT]    # default /tmp/musiq_baselines
#
# ROOT/tfds holds the dataset (built once, first), ROOT/vocab a CLIP
# tokenizer folder written from open_clip's packaged BPE vocabulary
# (`musiq_jax.clip.tokenizer.write_vocab_files`; nothing is downloaded),
# ROOT/<name> the workdirs and logs. Prints one Markdown row per run with its
# wall time, then the table (also in ROOT/table.md and ROOT/table.csv).
# The CLIP heads use the `tiny` CLIP with random weights: pass real ones with
# --config.init.clip_weights for real LIQE / CLIP-IQA numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
T=${1:-/tmp/musiq_baselines}
D=$T/tfds
TOK=$T/vocab
DATA=synthetic_iqa/demo
mkdir -p "$T"

start=$SECONDS
"$PY" - "$D" "$TOK" "$DATA" <<'PYEOF'
import importlib.util, os, sys
from musiq_jax.clip import tokenizer
from musiq_jax.datasets import build
data_dir, tok, name = sys.argv[1:]
spec = importlib.util.find_spec("open_clip")
if spec is None:
  sys.exit("open_clip_torch is not installed (pip install -e '.[test]'): it "
           "ships the BPE vocabulary the CLIP tokenizer is written from.")
tokenizer.write_vocab_files(os.path.join(
    os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz"), tok)
build.build(name, data_dir)
PYEOF
echo "dataset $DATA + tokenizer: $((SECONDS - start)) s"

echo "| run | arguments (\`python -m musiq_jax.main ARGS --workdir=\$T/NAME --config.data_dir=\$D\`) | wall |"
echo "|---|---|---|"
train() {  # NAME ARGS...
  local name=$1; shift
  local t0=$SECONDS
  # --config=... must come before its --config.xxx overrides.
  if ! "$PY" -m musiq_jax.main "$@" --workdir="$T/$name" \
      --config.data_dir="$D" > "$T/$name.log" 2>&1; then
    echo "$name failed; see $T/$name.log" >&2
    tail -20 "$T/$name.log" >&2
    exit 1
  fi
  echo "| $name | \`$*\` | $((SECONDS - t0)) s |"
}
train musiq_regression --config=configs/synthetic.py
train musiq_levels --config=configs/synthetic.py:levels
train rankiqa_pretrain --config=configs/rankiqa_pretrain.py --config.dataset=$DATA
train rankiqa_finetune --config=configs/rankiqa_finetune.py --config.dataset=$DATA \
    --config.init.pretrained_workdir="$T/rankiqa_pretrain"
# MUSIQ as RankIQA's ranked backbone, then MUSIQ's demo run started from it.
train rankiqa_musiq --config=configs/rankiqa_pretrain.py:musiq --config.dataset=$DATA
train musiq_rank_init --config=configs/synthetic.py \
    --config.init.pretrained_npz="$T/rankiqa_musiq/best.npz"
train glint_small --config=configs/glint.py:small --config.dataset=$DATA
train liqe --config=configs/liqe.py:synthetic --config.dataset=$DATA \
    --config.init.tokenizer_dir="$TOK"
train clipiqa --config=configs/clipiqa.py:synthetic --config.dataset=$DATA \
    --config.init.tokenizer_dir="$TOK"

names=musiq_regression,musiq_levels,rankiqa_pretrain,rankiqa_finetune,rankiqa_musiq,musiq_rank_init,glint_small,liqe,clipiqa
dirs=()
for n in ${names//,/ }; do dirs+=("--workdir=$T/$n"); done
t0=$SECONDS
"$PY" -m musiq_jax.compare "${dirs[@]}" --names="$names" --split=test \
    --out="$T/table.md" --csv="$T/table.csv" --bootstrap=1000 --seed=0
echo "compare: $((SECONDS - t0)) s; all: $((SECONDS - start)) s"
