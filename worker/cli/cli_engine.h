// Command-line options shared by the programs that run the engine (specd-generate, specd-bench,
// specd-worker): model, proposer, backend and scheduler limits.
#ifndef SPECD_WORKER_CLI_ENGINE_H
#define SPECD_WORKER_CLI_ENGINE_H

#include <getopt.h>
#include <stdio.h>

#include "worker/engine/engine.h"

// getopt_long codes of the shared options start here.
#define CLI_ENGINE_OPT_BASE 1000

// The shared long options, terminated by a zero entry; programs append their own.
extern const struct option cli_engine_options[];
#define CLI_ENGINE_SHORT "m:d:t:"

// Fills all[] with the program's own options followed by the shared ones and a zero entry.
// cap must be at least n_own + 32. Returns the number of entries before the zero entry.
int cli_engine_merge_options(const struct option *own, int n_own, struct option *all, int cap);

// Applies option `opt` with argument `arg` to *p. Returns 1 when the option was one of the
// shared ones, 0 when it is not, -1 (message printed to stderr) on a bad value.
int cli_engine_option(int opt, const char *arg, struct engine_params *p, const char *prog);

// Prints the help text of the shared options.
void cli_engine_usage(FILE *to);

// Parses an integer / float in [lo, hi]. Returns 0, or -1 with a message naming the option.
int cli_parse_int(const char *prog, const char *name, const char *arg, long lo, long hi, long *out);
int cli_parse_float(const char *prog, const char *name, const char *arg, double lo, double hi,
                    double *out);

#endif
