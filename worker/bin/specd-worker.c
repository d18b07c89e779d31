// specd-worker: serves generation jobs from Redis with the specd engine, publishes per-step
// metrics to the controller over ZeroMQ and follows its speculation settings.
// `specd-worker --help` lists every option; docs/worker.md describes the service.
//
// Exit status: 0 clean stop after SIGTERM/SIGINT (held jobs finished, or left pending for other
// workers after --drain-timeout-ms), 1 startup or fatal error, 2 bad usage or config file.
#include "worker/service/worker_main.h"

int main(int argc, char **argv) {
    return worker_main(argc, argv);
}
