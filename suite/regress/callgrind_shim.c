/* Callgrind client requests for the instruction counter (suite/regress/callgrind.py).
 *
 * torch exposes CALLGRIND_TOGGLE_COLLECT and CALLGRIND_DUMP_STATS only; starting the
 * instrumentation late (valgrind --instr-atstart=no) lets `import torch` run uninstrumented,
 * about 5x faster, and a labelled dump names the case it counted. The functions are called
 * through ctypes; outside valgrind every request is a no-op.
 */
#include <valgrind/callgrind.h>

int attnbench_running_on_valgrind(void) { return RUNNING_ON_VALGRIND; }

void attnbench_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }

void attnbench_zero_stats(void) { CALLGRIND_ZERO_STATS; }

void attnbench_toggle_collect(void) { CALLGRIND_TOGGLE_COLLECT; }

void attnbench_dump_stats_at(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
