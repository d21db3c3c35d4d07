#!/usr/bin/env bash
# One GPU measurement call: tfrobust's XLA-compiled TRADES step (exported on a CPU machine by
# xla_export.py into xla_programs/) run through JAX next to the PyTorch step, on the same GPU.
#
#   prepare (CPU, TensorFlow):  bash benchmarks/gpu_bridge.sh --export
#   measure (GPU, JAX + torch): OUT=results_dir bash benchmarks/gpu_bridge.sh
#   a subset:                   ONLY="check_l2_highest xla_wrn28_bf16" OUT=... bash benchmarks/gpu_bridge.sh
#
# With BUNDLE=FILE (an `aa_reference.py --write-bundle` npz) the export also writes the programs of
# `tfrobust eval --attack aa --jit-compile on` for that model and its images (Linf EPS/255, default 2), and
# the GPU call runs that cascade (xla_run_attack.py) next to the reference AutoAttack on the same bundle
# (aa_reference.py --bundle; the reference package on PYTHONPATH, from PYDEPS, default pydeps).
#
# Every run is bounded by `timeout`, in order of importance, so a slow compile costs only its own line.
set -u
cd "$(dirname "$0")/.."
P=xla_programs
if [ "${1:-}" = "--export" ]; then
  set -e
  for n in l2 linf; do
    python benchmarks/xla_export.py --model wrn-10-1 --batch-size 8 --norm $n --precision float32 --values --out $P/wrn10_b8_${n}_check
  done
  python benchmarks/xla_export.py --model wrn-28-10 --batch-size 512 --precision mixed_bfloat16 --out $P/wrn28_b512_bf16
  python benchmarks/xla_export.py --model wrn-28-10 --batch-size 512 --precision float32 --out $P/wrn28_b512_fp32
  python benchmarks/xla_export.py --model wrn-70-16 --batch-size 512 --precision mixed_bfloat16 --out $P/wrn70_b512_bf16
  if [ -n "${BUNDLE:-}" ]; then
    [ "$BUNDLE" -ef $P/aa_bundle.npz ] || cp "$BUNDLE" $P/aa_bundle.npz
    rm -f $P/aa.json $P/aa.npz $P/aa.*.hlo.pb  # this script's own earlier export (xla_export_attack never overwrites)
    python benchmarks/xla_export_attack.py --bundle $P/aa_bundle.npz --eps "${EPS:-2}" --attack aa --batch-size 500 --out $P/aa
  fi
  exit 0
fi
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
nvidia-smi -L
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)"
LOGS=$(mktemp -d)
run() {  # NAME=... run SECONDS command...: the JSON goes to $OUT, the log to $LOGS (printed on failure)
  case " ${ONLY:-$NAME} " in *" $NAME "*) ;; *) return ;; esac
  local limit=$1; shift; echo "=== $*"
  timeout "$limit" "$@" > "$LOGS/$NAME.log" 2>&1; local rc=$?; echo "rc=$rc"
  grep -E 'images_per_second|compile_seconds|"input"|passed|worst_relative|images/s|MFU|robust|compiled on' "$LOGS/$NAME.log" | tail -n 8
  [ $rc -eq 0 ] || tail -c 1500 "$LOGS/$NAME.log"
}
NAME=check_l2_highest run 120 python3 benchmarks/xla_run.py $P/wrn10_b8_l2_check --check --matmul-precision highest --json "$OUT/check_l2_highest.json"
NAME=xla_wrn28_bf16 run 180 python3 benchmarks/xla_run.py $P/wrn28_b512_bf16 --steps 10 --json "$OUT/xla_wrn28_bf16.json"
NAME=torch_wrn28_bf16 run 90 python3 benchmarks/torch_trades_step.py --device cuda --bf16 --channels-last --model wrn-28-10 --batch-size 512 --steps 10 --json "$OUT/torch_wrn28_bf16.json"
NAME=xla_wrn28_fp32 run 150 python3 benchmarks/xla_run.py $P/wrn28_b512_fp32 --steps 5 --json "$OUT/xla_wrn28_fp32.json"
NAME=xla_wrn70_bf16 run 200 python3 benchmarks/xla_run.py $P/wrn70_b512_bf16 --steps 5 --json "$OUT/xla_wrn70_bf16.json"
NAME=torch_wrn70_bf16 run 120 python3 benchmarks/torch_trades_step.py --device cuda --bf16 --channels-last --model wrn-70-16 --batch-size 512 --steps 5 --json "$OUT/torch_wrn70_bf16.json"
NAME=torch_wrn28_fp32 run 90 python3 benchmarks/torch_trades_step.py --device cuda --channels-last --model wrn-28-10 --batch-size 512 --steps 5 --json "$OUT/torch_wrn28_fp32.json"
if [ -f $P/aa.json ]; then
  NAME=xla_aa run 300 python3 benchmarks/xla_run_attack.py $P/aa --json "$OUT/xla_aa.json"
  NAME=reference_aa run 300 env PYTHONPATH="${PYDEPS:-pydeps}" python3 benchmarks/aa_reference.py --bundle $P/aa_bundle.npz \
    --eps "$(python3 -c "import json; print(round(json.load(open('$P/aa.json'))['eps'] * 255, 6))")" --out "$OUT/reference_aa.json"
fi
NAME=check_linf_default run 90 python3 benchmarks/xla_run.py $P/wrn10_b8_linf_check --check --tolerance 1e-2 --json "$OUT/check_linf_default.json"
