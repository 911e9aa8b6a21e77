#!/usr/bin/env bash
# The CUDA path end to end, for a machine with a GPU (the CPU test suite cannot reach it):
#
#     bash benchmarks/cuda_check.sh [WORKDIR]          # default WORKDIR: $TMPDIR/cpfd-cuda
#     DEVICE=cpu TRAIN=200 EVAL=100 bash benchmarks/cuda_check.sh   # a dry run of this script
#
# synth -> train-teacher, train-student (bf16 autocast) -> dump-teacher on the GPU with --verify
# (recomputed on the GPU: must agree to float32 tolerance) -> the same dump on the CPU, compared
# row by row with the GPU's (how far bf16 autocast moves the stored logits) -> calibrate ->
# distill reading the GPU dump -> evaluate every model. `CPFD` names the command (default
# `cpfd`; `python3 -m cpfd.cli` with the package installed elsewhere). Stops at the first failure.
set -euo pipefail

DEVICE=${DEVICE:-cuda}
TRAIN=${TRAIN:-2000}
EVAL=${EVAL:-1000}
EPOCHS=${EPOCHS:-2}
CPFD=${CPFD:-cpfd}
W=${1:-${TMPDIR:-/tmp}/cpfd-cuda}
rm -rf "$W"
mkdir -p "$W"

step() { echo; echo "== $*"; }
timed() { local start=$SECONDS; "$@"; echo "   ($((SECONDS - start)) s)"; }

step "versions"
python3 - <<'EOF'
import duckdb, pyarrow, torch, transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, pyarrow {pyarrow.__version__}, duckdb {duckdb.__version__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"cuda {torch.version.cuda}: {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
else:
    print("no CUDA device")
EOF

step "synth: $TRAIN train, $EVAL eval videos"
timed $CPFD synth "$W/corpus" --train-samples "$TRAIN" --eval-samples "$EVAL" --quiet
step "train-teacher on $DEVICE"
timed $CPFD train-teacher "$W/corpus" --out "$W/teacher" --epochs "$EPOCHS" --device "$DEVICE" --quiet
step "train-student on $DEVICE"
timed $CPFD train-student "$W/corpus" --out "$W/student" --epochs "$EPOCHS" --device "$DEVICE" --quiet
step "dump-teacher on $DEVICE, --verify 256 (recomputed on $DEVICE)"
timed $CPFD dump-teacher "$W/teacher" "$W/corpus" --out "$W/dump" --device "$DEVICE" --verify 256 --quiet
step "dump-teacher on cpu, for comparison"
timed $CPFD dump-teacher "$W/teacher" "$W/corpus" --out "$W/dump-cpu" --device cpu --quiet

step "$DEVICE dump against cpu dump, row by row"
python3 - "$W/dump" "$W/dump-cpu" <<'EOF'
import sys
import numpy as np
import pyarrow.dataset as ds

def load(path):
    t = ds.dataset(path, format="parquet").to_table()
    logits = t.column("logits").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
    return t.column("sample_id").to_pylist(), t.column("label").to_numpy(), logits, t.column("teacher_loss").to_numpy()

ids_a, labels_a, logits_a, loss_a = load(sys.argv[1])
ids_b, labels_b, logits_b, loss_b = load(sys.argv[2])
assert ids_a == ids_b and (labels_a == labels_b).all(), "the two dumps hold other rows"
diff = np.abs(logits_a - logits_b)
print(f"rows {len(ids_a)}: max |logits diff| {diff.max():.3g} (median {np.median(diff):.3g}), "
      f"max |loss diff| {np.abs(loss_a - loss_b).max():.3g}, "
      f"same argmax {np.mean(logits_a.argmax(1) == logits_b.argmax(1)):.4f}")
EOF

step "calibrate"
$CPFD calibrate "$W/dump" --mapping exp-decay
step "distill on $DEVICE from the $DEVICE dump"
timed $CPFD distill "$W/corpus" "$W/dump" --out "$W/cpfd" --mapping exp-decay --epochs "$EPOCHS" --device "$DEVICE" --quiet
for model in teacher student cpfd; do
    step "evaluate $model on $DEVICE"
    $CPFD evaluate "$W/$model" "$W/corpus" --device "$DEVICE" --quiet
done
echo
echo "cuda_check: all steps passed ($DEVICE)"
