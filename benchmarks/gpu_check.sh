#!/usr/bin/env bash
# The one command to run on a lent GPU (docs/gpu.md): 8 minutes at most, into one folder.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--pack FILE]
#
# It runs from the repository root (it changes there itself); DIR (default reports/gpu-quick)
# and FILE are relative to the folder it was called from.
#
# Steps, each under its own `timeout`, each logged to DIR/check/logs/STEP.txt, each recorded with
# its status and seconds in DIR/check/steps.csv; a failed step does not stop the next one:
#   preflight  versions, driver, compiler and Python headers, data, TF32 getters, a compile smoke
#              test (benchmarks/gpu_preflight.py) -> DIR/check/preflight.json
#   graph      eager launches against a CUDA graph (benchmarks/gpu_probe.py graph) -> DIR/check/graph_probe.csv
#   timer      CUDA events against torch.utils.benchmark.Timer (gpu_probe.py timer) -> DIR/check/timer_probe.csv
#   bench      python -m suite bench --profile gpu-quick --out DIR (its report: DIR/README.md). When
#              the bench's own preflight refuses the plan (exit 2: no C compiler or Python headers
#              for compiled rows), the step bench_eager runs it once more, in what is left of the
#              bench's timeout, with --skip-preflight --set latency.compile=eager
#   report     python -m suite report --out DIR, only when the bench did not finish (a timeout):
#              the report of what the bench recorded; re-running this script resumes the bench
# The step timeouts add up to 480 s. At its timeout a step gets SIGINT (Python's
# KeyboardInterrupt: the bench stops its worker processes and says so) and SIGKILL 10 s later.
#
# --pack FILE: at the end, DIR as one gzipped tar (its top folder named as DIR), for a machine
# from which only a few files come back:
#   bash benchmarks/gpu_check.sh --pack "$OUT/gpu-quick.tgz"
#   tar xzf gpu-quick.tgz -C reports          # in your checkout: reports/gpu-quick
#
# --dry-run needs no GPU: it prints every step's command and timeout, runs the preflight without
# the GPU-only checks (what is missing is reported, not fatal) and the bench's own --dry-run
# (its plan and estimate), and exits 0 when both ran (1 otherwise: the dry run is what CI
# checks). Without --dry-run the exit status is 0 when every step passed, 1 otherwise.
# PYTHON names the interpreter (default: python3, the one holding torch on the lent machines).
set -euo pipefail

OUT="reports/gpu-quick"
PACK=""
DRY_RUN=0
STEPS=(preflight graph timer bench report)
declare -A TIMEOUT_S=([preflight]=90 [graph]=45 [timer]=45 [bench]=270 [report]=30)
KILL_AFTER_S=10   # SIGKILL this long after a step's SIGINT at its timeout
PORTABLE_S=20     # the rewrite of absolute paths at the end
PACK_S=20         # the tar of --pack
EAGER_RETRY=(--skip-preflight --set latency.compile=eager)

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

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

# column FIELD STEP: a field of STEP's line in steps.csv (2: status, 3: exit code, 4: seconds)
column_of() { grep "^$2," "$STEPS_CSV" | tail -n 1 | cut -d, -f"$1"; }

# run_step STEP STATUS_ON_FAILURE COMMAND...: run under the step's timeout, log, record.
run_step() {
    local step="$1" on_failure="$2" started code status
    shift 2
    started="$(now)"
    echo "== $step (timeout ${TIMEOUT_S[$step]} s): $*"
    set +e
    timeout --signal=INT --kill-after="$KILL_AFTER_S" "${TIMEOUT_S[$step]}" "$@" 2>&1 | tee "$LOGS/$step.txt"
    code="${PIPESTATUS[0]}"
    set -e
    case "$code" in
        0) status=ok ;;
        124|137) status=timed_out ;;
        *) status="$on_failure" ;;
    esac
    record "$step" "$status" "$code" "$(elapsed "$started")"
    echo "== $step: $status (exit $code, $(column_of 4 "$step") s)"
}

print_plan() {
    local total=0 worst step
    for step in "${STEPS[@]}"; do total=$((total + TIMEOUT_S[$step])); done
    worst=$((total + KILL_AFTER_S * (${#STEPS[@]} + 1) + PORTABLE_S + PACK_S))
    echo "gpu_check$( ((DRY_RUN)) && echo ' (dry run)'): ${#STEPS[@]} steps into $OUT, at most $total s in all" \
         "($worst s with every step's ${KILL_AFTER_S} s kill grace, the path rewrite and --pack)"
    for step in "${STEPS[@]}"; do
        step_command "$step"
        printf '  %-10s timeout %4d s  %s\n' "$step" "${TIMEOUT_S[$step]}" "${CMD[*]}"
    done
    step_command bench
    echo "  (bench exit 2, its preflight refusing the plan: once more, in what is left of its timeout:" \
         "${CMD[*]} ${EAGER_RETRY[*]})"
    [[ -z "$PACK" ]] || echo "  then $OUT packed into $PACK"
}

# The check's files without the machine's absolute paths (suite.portable, as every result).
make_check_portable() {
    timeout "$PORTABLE_S" "$PYTHON" -c 'import sys; from suite.portable import make_portable; make_portable(sys.argv[1])' \
        "$CHECK" || echo "gpu_check: could not rewrite the absolute paths in $CHECK" >&2
}

# The folder as one gzipped tar at --pack FILE (written beside, then moved: FILE may lie inside it).
pack() {
    local tmp
    [[ -n "$PACK" ]] || return 0
    tmp="$(mktemp "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
    if timeout "$PACK_S" tar czf "$tmp" -C "$(dirname "$(realpath -m "$OUT")")" "$(basename "$OUT")" \
            && mv -f "$tmp" "$PACK"; then
        echo "gpu_check: $OUT packed into $PACK (unpack: tar xzf $(basename "$PACK") -C <folder above $(basename "$OUT")>)"
    else
        rm -f "$tmp"
        echo "gpu_check: could not pack $OUT into $PACK" >&2
        return 1
    fi
}

print_summary() {
    echo "gpu_check: steps (status, exit code, seconds) in $STEPS_CSV:"
    column -s, -t < "$STEPS_CSV" 2>/dev/null || cat "$STEPS_CSV"
}

dry_run() {
    local step failed=0
    step_command preflight
    run_step preflight failed "${CMD[@]}" --dry-run
    for step in graph timer; do
        step_command "$step"
        echo "== $step (timeout ${TIMEOUT_S[$step]} s, not run: needs a GPU): ${CMD[*]}"
        record "$step" planned "" 0
    done
    step_command bench
    run_step bench failed "${CMD[@]}" --dry-run
    step_command report
    echo "== report (timeout ${TIMEOUT_S[report]} s, only when the bench did not finish): ${CMD[*]}"
    record report planned "" 0
    if grep -qi "estimat" "$LOGS/bench.txt"; then
        echo "gpu_check: the bench's estimate:"
        grep -i "estimat" "$LOGS/bench.txt" | sed 's/^/  /'
    fi
    make_check_portable
    print_summary
    # the preflight's dry run exits 0 whatever is missing, the bench's plans without a GPU:
    # another status means one of them crashed or refused the plan
    for step in preflight bench; do
        if [[ "$(column_of 2 "$step")" != ok ]]; then
            echo "gpu_check: the dry run's $step did not run (see $LOGS/$step.txt)" >&2
            failed=1
        fi
    done
    pack || failed=1
    return "$failed"
}

# The bench, and once more without compiled rows when its preflight refused the plan.
run_bench() {
    local left
    step_command bench
    run_step bench failed "${CMD[@]}"
    [[ "$(column_of 3 bench)" == 2 ]] || return 0
    left="$(awk -v t="${TIMEOUT_S[bench]}" -v s="$(column_of 4 bench)" 'BEGIN { printf "%d", t - s }')"
    TIMEOUT_S[bench_eager]="$left"
    if ((left < 30)); then
        echo "== bench_eager: skipped (the bench's preflight refused the plan and ${left} s of its timeout are left)"
        record bench_eager skipped "" 0
        return 0
    fi
    echo "== bench: its preflight refused the plan (exit 2, see $LOGS/bench.txt): once more with" \
         "${EAGER_RETRY[*]}: no compiled rows, the rest measured"
    run_step bench_eager failed "${CMD[@]}" "${EAGER_RETRY[@]}"
}

full_run() {
    local step failed=0
    for step in preflight graph timer; do
        step_command "$step"
        run_step "$step" failed "${CMD[@]}"
    done
    run_bench
    if [[ "$(column_of 2 bench)" == ok || "$(column_of 2 bench_eager)" == ok ]]; then
        echo "== report: skipped (the bench rendered it)"
        record report skipped "" 0
    else
        step_command report
        run_step report failed "${CMD[@]}"
    fi
    make_check_portable
    print_summary
    echo "gpu_check: results in $OUT; commit the folder: git add $OUT"
    ! grep -v '^step,' "$STEPS_CSV" | cut -d, -f2 | grep -qvE '^(ok|skipped)$' || failed=1
    pack || failed=1
    return "$failed"
}

# Parse the arguments, set up the folder, print the plan and run it (dry or not).
main() {
    while (($#)); do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --out) [[ $# -ge 2 && -n "$2" ]] || { echo "error: --out needs a folder" >&2; exit 2; }
                   OUT="$2"; shift ;;
            --out=*) OUT="${1#--out=}" ;;
            --pack) [[ $# -ge 2 && -n "$2" ]] || { echo "error: --pack needs a file name (DIR.tgz)" >&2; exit 2; }
                    PACK="$2"; shift ;;
            --pack=*) PACK="${1#--pack=}" ;;
            -h|--help) usage; exit 0 ;;
            *) echo "error: unknown argument '$1'; accepted: --dry-run, --out DIR, --pack FILE, --help" >&2; exit 2 ;;
        esac
        shift
    done

    command -v timeout >/dev/null || { echo "error: coreutils 'timeout' is needed to bound each step" >&2; exit 2; }
    if [[ -n "$PACK" ]]; then
        PACK="$(realpath -m "$PACK")"
        [[ -d "$(dirname "$PACK")" ]] || { echo "error: --pack $PACK: no folder $(dirname "$PACK")" >&2; exit 2; }
    fi
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
    print_plan
    if ((DRY_RUN)); then dry_run; else full_run; fi
}

# Sourced (as the tests do), the script only defines its functions.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
