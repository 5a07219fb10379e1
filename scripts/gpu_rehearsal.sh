#!/usr/bin/env bash
# The paper's Llama-2-7B shape on one GPU, through the workflow's real job commands: decompose
# (20000 iterations), the init step of every method of the paper preset plus LoRA-GA and HRP,
# a few fine-tuning steps at the preset's batch of 16 x 512, evaluation on GSM8K-layout data at
# the preset's batch size and generation length, and table2. Random weights (rehearsal:llama2-7b,
# all 32 layers), offline data; writes results/gpu-rehearsal/report.md with each job's device,
# peak GPU memory and throughput, generation side by side against the HBM bound
# (generation.md), one evaluation pass against two (passes.md), and fine-tuning with the LM head at
# the answer positions against every position (head.md). Sized for at most about 10 minutes on one
# H100/H200.
#
#   bash scripts/gpu_rehearsal.sh            # from the repository root, with the venv set up
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-results/gpu-rehearsal}
mkdir -p "$WORK"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: this rehearsal is for one')"
# A local run with device auto lifts the one-GPU cap where it finds no GPU: here it must find this one.
$PY -c "import sys; from inilora.config import gpu_visible; sys.exit(0 if gpu_visible() else
  'torch sees a GPU that inilora.config.gpu_visible misses: local auto runs would put two jobs on it')"
(cd "$WORK" && "$OLDPWD/$PY" -m inilora.rehearsal results/rehearsal-data > /dev/null)
cat > "$WORK/config.yaml" <<YAML
device: cuda
threads: 8
models:
  llama2-7b: {path: "rehearsal:llama2-7b", paper_name: LLaMA2-7B, target_modules: [q_proj, v_proj]}
methods: [lora, pissa, milora, inilora, loraga, hrp, inilora_dora]
# pissa: the official recipe's fast SVD (pissa_niter_16), seeded by the run; inilora_dora: rsLoRA
# scaling and DoRA's magnitude on top of IniLoRA (docs/init-methods.md sec. 2.6)
method_options: {loraga: {batches: 64, batch_size: 2}, pissa: {svd_niter: 16}}
variants: {inilora_dora: {method: inilora, options: {use_rslora: true, use_dora: true}}}
ranks: [8]
seeds: [11]
decompose: {lr: [5.0e-4], iterations: 20000}
train: {learning_rate: 2.0e-5, batch_size: 16, grad_accum: 1, max_steps: 3, max_length: 512, bf16: true,
        gradient_checkpointing: true, checkpoint_steps: 0}
tasks:
  metamath:
    train:
      - {loader: hf, preset: metamathqa, path: json, data_files: results/rehearsal-data/metamathqa.jsonl, n: 64,
         label: "REHEARSAL: MetaMathQA layout, stand-in rows"}
    benchmarks: [gsm8k]
benchmarks:
  gsm8k:
    label: "REHEARSAL: GSM8K layout, 64 stand-in items"
    data: {loader: hf, preset: gsm8k, path: json, split: train, data_files: results/rehearsal-data/gsm8k.jsonl, n: 64}
    prompt_suffix: " Let's think step by step."
    max_new_tokens: 1024
    batch_size: 64
  gsm8k_speed:  # the generation benchmark's: the same items, shorter answers
    label: "REHEARSAL: GSM8K layout, 64 stand-in items, 64 new tokens"
    data: {loader: hf, preset: gsm8k, path: json, split: train, data_files: results/rehearsal-data/gsm8k.jsonl, n: 64}
    prompt_suffix: " Let's think step by step."
    max_new_tokens: 64
    batch_size: 64
table2: {include_base: false, methods: [lora, inilora]}
YAML
# every method's init and fine-tune; evaluation for LoRA and IniLoRA (table2's rows)
time .venv/bin/snakemake --directory "$WORK" --configfile "$WORK/config.yaml" --cores 8 --resources gpu=1 \
  results/table2.csv \
  $(for m in pissa milora loraga hrp inilora_dora; do echo "results/finetune/llama2-7b/metamath/$m/r8/lr2e-05/seed11/train.json"; done)
$PY -m inilora.report.runtime "$WORK/results" > "$WORK/report.md"
# generation at the preset's batch, each way side by side against the HBM bound: transformers'
# generate, longest first, shared prefix once, finished rows dropped, drafted tokens checked, the prefill
# in groups and the weights packed (the default; on a GPU both stay off, so these three runs are one
# configuration), the static cache, compiled, and the prefill split into groups of similar length at a
# CPU's overhead per forward (24 tokens) and at 256
(cd "$WORK" && "$OLDPWD/$PY" -m inilora.speed generate --model results/models/llama2-7b/hf --config config.yaml \
  --benchmarks gsm8k_speed --compile --prefill-overheads 24 256) | tee "$WORK/generation.md"
# the answers and held-out loss from one forward pass (the default) against two, in bf16 on the GPU:
# time, and how many answers and losses agree
(cd "$WORK" && "$OLDPWD/$PY" -m inilora.speed passes --model results/models/llama2-7b/hf --config config.yaml \
  --benchmarks gsm8k_speed) | tee "$WORK/passes.md"
# fine-tuning with the LM head at the answer positions only (the default) against every position, in
# bf16 autocast on the GPU: training time, and how far the adapters and logged losses are apart
(cd "$WORK" && "$OLDPWD/$PY" -m inilora.speed head --model results/models/llama2-7b/hf --config config.yaml \
  --task metamath --steps 3 --repeats 1) | tee "$WORK/head.md"
# the checks that need a GPU: seeded fast PiSSA on CUDA, rsLoRA and DoRA inits there
$PY -m pytest -q -p no:cacheprovider tests/test_inits.py -k on_the_gpu
cat "$WORK/report.md"
# Every job that computes ran on the GPU (a CPU run on this machine is a failure, not a slow pass).
$PY - "$WORK/results" <<'PY'
import json, pathlib, sys

runs = {}
for path in pathlib.Path(sys.argv[1]).rglob("*.json"):
    try:
        record = json.loads(path.read_text())
    except ValueError:
        continue
    if isinstance(record, dict) and isinstance(record.get("runtime"), dict) and "device" in record["runtime"]:
        runs[str(path)] = record["runtime"]["device"]
off = {p: d for p, d in runs.items() if d != "cuda"}
print(f"{len(runs)} job records, {len(runs) - len(off)} on cuda")
sys.exit(f"not on the GPU: {off}" if off or not runs else 0)
PY
