// The specd-worker program as a function, so that tests can run it in a child process exactly as
// the binary does (worker/bin/specd-worker.c only calls it).
#ifndef SPECD_WORKER_SERVICE_WORKER_MAIN_H
#define SPECD_WORKER_SERVICE_WORKER_MAIN_H

// Exit statuses of specd-worker.
#define WORKER_EXIT_OK 0      // stopped by SIGTERM/SIGINT after draining (or --help)
#define WORKER_EXIT_FAILURE 1 // could not start (model, sockets) or failed while running
#define WORKER_EXIT_USAGE 2   // bad command line or config file

// Parses the command line (worker_config_parse_args), sets the log level, installs SIGTERM and
// SIGINT handlers (first: drain; second: stop at once, leaving held jobs pending), ignores
// SIGPIPE, runs the worker and returns one of the exit statuses above. Logs go to stderr.
// Call once per process.
int worker_main(int argc, char **argv);

#endif
