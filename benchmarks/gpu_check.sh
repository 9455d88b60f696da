#!/usr/bin/env bash
# The one command to run on a lent GPU (docs/gpu.md): about 10 minutes at most, into one folder.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#
# It runs from the repository root (it changes there itself); DIR (default reports/gpu-quick)
# is relative to the folder it was called from.
#
# Steps, each under its own `timeout`, each logged to DIR/check/logs/STEP.txt, each recorded with
# its status and seconds in DIR/check/steps.csv; a failed step does not stop the next one:
#   preflight  versions, driver, compiler and Python headers, data, TF32 getters, a compile smoke
#              test (benchmarks/gpu_preflight.py) -> DIR/check/preflight.json
#   graph      eager launches against a CUDA graph (benchmarks/gpu_probe.py graph) -> DIR/check/graph_probe.csv
#   timer      CUDA events against torch.utils.benchmark.Timer (gpu_probe.py timer) -> DIR/check/timer_probe.csv
#   bench      python -m suite bench --profile gpu-quick --out DIR (its report: DIR/README.md)
#   report     python -m suite report --out DIR, only when the bench did not finish (a timeout):
#              the report of what the bench recorded; re-running this script resumes the bench
#
# --dry-run needs no GPU: it prints every step's command and timeout, runs the preflight without
# the GPU-only checks (what is missing is reported, not fatal) and the bench's own --dry-run
# (its plan and estimate, where the gpu-quick profile exists), and exits 0 unless the preflight
# itself crashed. Without --dry-run the exit status is 0 when every step passed, 1 otherwise.
# PYTHON names the interpreter (default: python3, the one holding torch on the lent machines).
set -euo pipefail

OUT="reports/gpu-quick"
DRY_RUN=0
STEPS=(preflight graph timer bench report)
declare -A TIMEOUT_S=([preflight]=120 [graph]=60 [timer]=60 [bench]=330 [report]=30)
KILL_AFTER_S=10   # SIGKILL this long after a step's SIGTERM at its timeout

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --out) [[ $# -ge 2 && -n "$2" ]] || { echo "error: --out needs a folder" >&2; exit 2; }
               OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'; accepted: --dry-run, --out DIR, --help" >&2; exit 2 ;;
    esac
    shift
done

command -v timeout >/dev/null || { echo "error: coreutils 'timeout' is needed to bound each step" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m --relative-base="$ROOT" "$OUT")"   # relative to the root when inside it
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "error: no Python interpreter '$PYTHON' (set PYTHON)" >&2; exit 2; }
export PYTHONUNBUFFERED=1

CHECK="$OUT/check"
LOGS="$CHECK/logs"
STEPS_CSV="$CHECK/steps.csv"
mkdir -p "$LOGS"
rm -f "$LOGS"/*.txt   # the logs of an earlier check in the same folder
echo "step,status,exit_code,seconds,timeout_s,log" > "$STEPS_CSV"

# The command of a step, into the array CMD (with --dry-run: the command that is printed).
step_command() {
    case "$1" in
        preflight) CMD=("$PYTHON" -m benchmarks.gpu_preflight --out "$CHECK/preflight.json") ;;
        graph) CMD=("$PYTHON" -m benchmarks.gpu_probe graph --out "$CHECK/graph_probe.csv") ;;
        timer) CMD=("$PYTHON" -m benchmarks.gpu_probe timer --out "$CHECK/timer_probe.csv") ;;
        bench) CMD=("$PYTHON" -m suite bench --profile gpu-quick --out "$OUT" --no-progress) ;;
        report) CMD=("$PYTHON" -m suite report --out "$OUT" --profile gpu-quick) ;;
    esac
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# record STEP STATUS EXIT_CODE SECONDS: one line of steps.csv (a log only for a step that ran)
record() {
    local log="logs/$1.txt"
    [[ -f "$CHECK/$log" ]] || log=""
    echo "$1,$2,$3,$4,${TIMEOUT_S[$1]},$log" >> "$STEPS_CSV"
}

# run_step STEP STATUS_ON_FAILURE COMMAND...: run under the step's timeout, log, record.
run_step() {
    local step="$1" on_failure="$2" started code status
    shift 2
    started="$(now)"
    echo "== $step (timeout ${TIMEOUT_S[$step]} s): $*"
    set +e
    timeout --kill-after="$KILL_AFTER_S" "${TIMEOUT_S[$step]}" "$@" 2>&1 | tee "$LOGS/$step.txt"
    code="${PIPESTATUS[0]}"
    set -e
    case "$code" in
        0) status=ok ;;
        124|137) status=timed_out ;;
        *) status="$on_failure" ;;
    esac
    record "$step" "$status" "$code" "$(elapsed "$started")"
    echo "== $step: $status (exit $code, $(tail -n 1 "$STEPS_CSV" | cut -d, -f4) s)"
}

print_plan() {
    local total=0 step
    for step in "${STEPS[@]}"; do total=$((total + TIMEOUT_S[$step])); done
    echo "gpu_check$( ((DRY_RUN)) && echo ' (dry run)'): ${#STEPS[@]} steps into $OUT, at most $total s in all"
    for step in "${STEPS[@]}"; do
        step_command "$step"
        printf '  %-10s timeout %4d s  %s\n' "$step" "${TIMEOUT_S[$step]}" "${CMD[*]}"
    done
}

# The check's files without the machine's absolute paths (suite.portable, as every result).
make_check_portable() {
    timeout 60 "$PYTHON" -c 'import sys; from suite.portable import make_portable; make_portable(sys.argv[1])' \
        "$CHECK" || echo "gpu_check: could not rewrite the absolute paths in $CHECK" >&2
}

print_summary() {
    echo "gpu_check: steps (status, exit code, seconds) in $STEPS_CSV:"
    column -s, -t < "$STEPS_CSV" 2>/dev/null || cat "$STEPS_CSV"
}

dry_run() {
    local step
    step_command preflight
    run_step preflight failed "${CMD[@]}" --dry-run
    for step in graph timer; do
        step_command "$step"
        echo "== $step (timeout ${TIMEOUT_S[$step]} s, not run: needs a GPU): ${CMD[*]}"
        record "$step" planned "" 0
    done
    step_command bench
    run_step bench unavailable "${CMD[@]}" --dry-run
    step_command report
    echo "== report (timeout ${TIMEOUT_S[report]} s, only when the bench did not finish): ${CMD[*]}"
    record report planned "" 0
    if grep -qi "estimat" "$LOGS/bench.txt"; then
        echo "gpu_check: the bench's estimate:"
        grep -i "estimat" "$LOGS/bench.txt" | sed 's/^/  /'
    fi
    make_check_portable
    print_summary
    # the preflight's dry run exits 0 whatever is missing: another status means it crashed
    [[ "$(grep '^preflight,' "$STEPS_CSV" | cut -d, -f2)" == ok ]]
}

full_run() {
    local step
    for step in preflight graph timer bench; do
        step_command "$step"
        run_step "$step" failed "${CMD[@]}"
    done
    if [[ "$(grep '^bench,' "$STEPS_CSV" | cut -d, -f2)" == ok ]]; then
        echo "== report: skipped (the bench rendered it)"
        record report skipped "" 0
    else
        step_command report
        run_step report failed "${CMD[@]}"
    fi
    make_check_portable
    print_summary
    echo "gpu_check: results in $OUT; commit the folder: git add $OUT"
    ! grep -v '^step,' "$STEPS_CSV" | cut -d, -f2 | grep -qvE '^(ok|skipped)$'
}

print_plan
if ((DRY_RUN)); then dry_run; else full_run; fi
