// A private redis-server for tests: a free 127.0.0.1 port, a fresh temp dir, no persistence
// (--save "" --appendonly no). No process outlives the test binary: the server gets SIGKILL when
// the test process dies for any reason (PR_SET_PDEATHSIG), and an atexit handler stops servers a
// test forgot (for example after a REQUIRE returned early). Temp dirs left by a test process
// that was killed are removed by the next redis_server_start().
//
//   struct redis_server srv;
//   char err[512];
//   int rc = redis_server_start(&srv, err, sizeof err);
//   if (rc == SPECD_SOFT_EMPTY) TEST_SKIP("%s", err);     // redis-server not installed
//   REQUIRE(rc == SPECD_OK);
//   ... connect to 127.0.0.1:srv.port ...
//   redis_server_stop(&srv);
//
// Start servers from the main thread (or one that outlives them): PR_SET_PDEATHSIG fires when
// the thread that started the server exits.
#ifndef SPECD_TESTS_SUPPORT_REDIS_SERVER_H
#define SPECD_TESTS_SUPPORT_REDIS_SERVER_H

#include <stddef.h>
#include <sys/types.h>

struct redis_server {
    pid_t pid;      // 0 when not running
    int port;       // kept across redis_server_kill() for redis_server_restart()
    char dir[512];  // private working dir ("" once removed)
    char exe[1024]; // the redis-server binary used
};

// Starts a server ($SPECD_REDIS_SERVER, else redis-server found on PATH) and waits until it
// answers PING (up to 5 s). Returns SPECD_OK; SPECD_SOFT_EMPTY when no redis-server is installed
// (err says so: skip the test); SPECD_ERR_IO when it would not start (err holds its log tail).
int redis_server_start(struct redis_server *s, char *err, size_t err_size);

// Kills the server with SIGKILL and reaps it, as a crash would; keeps port and dir.
void redis_server_kill(struct redis_server *s);

// Starts the server again on the same port and dir (after redis_server_kill() or _stop()
// without removal); data is gone since nothing is persisted. Same returns as _start().
int redis_server_restart(struct redis_server *s, char *err, size_t err_size);

// Stops the server (SIGTERM, SIGKILL after 2 s), reaps it and removes its dir. NULL-safe;
// calling it twice is harmless.
void redis_server_stop(struct redis_server *s);

// 1 when the server process is alive (not exited, not a zombie).
int redis_server_alive(pid_t pid);

#endif
