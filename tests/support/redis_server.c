#include "tests/support/redis_server.h"

#include "shared/status.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// Servers started by this process, by value (a test's struct may be gone when atexit runs).
// Test support code, not engine code: one process-wide registry is what makes cleanup possible.
#define REDIS_SERVER_REGISTRY 32
static struct {
    pid_t pid;
    char dir[512];
} redis_registry[REDIS_SERVER_REGISTRY];
static int redis_registry_hooked;

static void redis_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void redis_remove_dir(const char *dir) {
    if (!dir[0])
        return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

// Kills and reaps pid; SIGTERM first when graceful, SIGKILL after 2 s or at once otherwise.
static void redis_terminate(pid_t pid, int graceful) {
    if (pid <= 0)
        return;
    kill(pid, graceful ? SIGTERM : SIGKILL);
    for (int i = 0; graceful && i < 200; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        redis_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static void redis_registry_cleanup(void) {
    for (int i = 0; i < REDIS_SERVER_REGISTRY; i++) {
        if (redis_registry[i].pid > 0)
            redis_terminate(redis_registry[i].pid, 0);
        redis_registry[i].pid = 0;
        redis_remove_dir(redis_registry[i].dir);
        redis_registry[i].dir[0] = '\0';
    }
}

static void redis_registry_set(pid_t pid, const char *dir) {
    if (!redis_registry_hooked) {
        atexit(redis_registry_cleanup);
        redis_registry_hooked = 1;
    }
    for (int i = 0; i < REDIS_SERVER_REGISTRY; i++) {
        if (strcmp(redis_registry[i].dir, dir) == 0 || !redis_registry[i].dir[0]) {
            redis_registry[i].pid = pid;
            snprintf(redis_registry[i].dir, sizeof redis_registry[i].dir, "%s", dir);
            return;
        }
    }
}

static void redis_registry_forget(const char *dir, int dir_removed) {
    for (int i = 0; i < REDIS_SERVER_REGISTRY; i++) {
        if (redis_registry[i].dir[0] && strcmp(redis_registry[i].dir, dir) == 0) {
            redis_registry[i].pid = 0;
            if (dir_removed)
                redis_registry[i].dir[0] = '\0';
        }
    }
}

int redis_server_alive(pid_t pid) {
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')');
    return !(close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z');
}

static int redis_find_exe(char *out, size_t size) {
    const char *env = getenv("SPECD_REDIS_SERVER");
    if (env && *env) {
        snprintf(out, size, "%s", env);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(out, size, "%.*s/redis-server", (int)len, len ? path : ".");
        if (access(out, X_OK) == 0)
            return 1;
        path += len + (colon ? 1 : 0);
    }
    return 0;
}

static int redis_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void redis_log_tail(const struct redis_server *s, char *err, size_t err_size,
                           const char *what) {
    char tail[400] = "";
    const char *names[2] = {"redis.log", "stderr.log"};
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", s->dir, names[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, size > 300 ? size - 300 : 0, SEEK_SET);
        size_t n = fread(tail, 1, sizeof tail - 1, f);
        tail[n] = '\0';
        fclose(f);
        if (n)
            break;
    }
    specd_fail(err, err_size, SPECD_ERR_IO, "redis-server %s on port %d: %s", what, s->port,
               tail[0] ? tail : "(no log)");
}

static pid_t redis_spawn(const struct redis_server *s) {
    char port[16], log[600], errlog[600];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(log, sizeof log, "%s/redis.log", s->dir);
    snprintf(errlog, sizeof errlog, "%s/stderr.log", s->dir);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    // Child: die with the test process, whatever kills it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int fd = open(errlog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(fd >= 0 ? fd : null, STDOUT_FILENO);
        dup2(fd >= 0 ? fd : null, STDERR_FILENO);
    }
    execl(s->exe, s->exe, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
          "--dir", s->dir, "--logfile", log, "--daemonize", "no", (char *)NULL);
    _exit(127);
}

static int redis_ping(int port) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

// Spawns on s->port and waits for PING. Returns SPECD_OK or SPECD_ERR_IO (server reaped).
static int redis_launch(struct redis_server *s, char *err, size_t err_size) {
    s->pid = redis_spawn(s);
    if (s->pid < 0) {
        s->pid = 0;
        return specd_fail(err, err_size, SPECD_ERR_IO, "fork failed: %s", strerror(errno));
    }
    redis_registry_set(s->pid, s->dir);
    for (int waited = 0; waited < 5000; waited += 10) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            redis_registry_forget(s->dir, 0);
            s->pid = 0;
            redis_log_tail(s, err, err_size, "exited at start");
            return SPECD_ERR_IO;
        }
        if (redis_ping(s->port))
            return SPECD_OK;
        redis_sleep_ms(10);
    }
    redis_terminate(s->pid, 0);
    redis_registry_forget(s->dir, 0);
    s->pid = 0;
    redis_log_tail(s, err, err_size, "did not answer PING within 5 s");
    return SPECD_ERR_IO;
}

// Removes the dirs of earlier test processes that were killed before they could clean up
// (each dir names its owner's pid in a file "owner"; dirs of live owners are left alone).
static void redis_sweep_stale_dirs(const char *tmp) {
    DIR *d = opendir(tmp);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "specd-redis-", 12) != 0)
            continue;
        char dir[512], owner[600];
        snprintf(dir, sizeof dir, "%s/%s", tmp, e->d_name);
        snprintf(owner, sizeof owner, "%s/owner", dir);
        FILE *f = fopen(owner, "r");
        long pid = 0;
        if (!f)
            continue;
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
        if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
            redis_remove_dir(dir);
    }
    closedir(d);
}

int redis_server_start(struct redis_server *s, char *err, size_t err_size) {
    memset(s, 0, sizeof *s);
    if (!redis_find_exe(s->exe, sizeof s->exe))
        return specd_fail(err, err_size, SPECD_SOFT_EMPTY,
                          "redis-server not found on PATH (install redis-server or set "
                          "SPECD_REDIS_SERVER)");
    const char *tmp = getenv("TMPDIR");
    tmp = tmp && *tmp ? tmp : "/tmp";
    redis_sweep_stale_dirs(tmp);
    snprintf(s->dir, sizeof s->dir, "%s/specd-redis-XXXXXX", tmp);
    if (!mkdtemp(s->dir)) {
        int e = errno;
        s->dir[0] = '\0';
        return specd_fail(err, err_size, SPECD_ERR_IO, "mkdtemp in %s: %s", tmp, strerror(e));
    }
    char owner[600];
    snprintf(owner, sizeof owner, "%s/owner", s->dir);
    FILE *f = fopen(owner, "w");
    if (f) {
        fprintf(f, "%ld\n", (long)getpid());
        fclose(f);
    }
    int rc = SPECD_ERR_IO;
    // The port is free when probed but another process may take it first: try a few.
    for (int attempt = 0; attempt < 5 && rc != SPECD_OK; attempt++) {
        s->port = redis_free_port();
        if (s->port <= 0)
            return specd_fail(err, err_size, SPECD_ERR_IO, "no free TCP port on 127.0.0.1");
        rc = redis_launch(s, err, err_size);
    }
    if (rc != SPECD_OK) {
        redis_remove_dir(s->dir);
        redis_registry_forget(s->dir, 1);
        s->dir[0] = '\0';
    }
    return rc;
}

void redis_server_kill(struct redis_server *s) {
    if (!s || s->pid <= 0)
        return;
    redis_terminate(s->pid, 0);
    redis_registry_forget(s->dir, 0);
    s->pid = 0;
}

int redis_server_restart(struct redis_server *s, char *err, size_t err_size) {
    if (!s || !s->dir[0] || s->port <= 0)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "restart: server was never started");
    redis_server_kill(s);
    int rc = SPECD_ERR_IO;
    // The old socket may linger for a moment; retry for about 2 s.
    for (int attempt = 0; attempt < 10 && rc != SPECD_OK; attempt++) {
        if (attempt)
            redis_sleep_ms(200);
        rc = redis_launch(s, err, err_size);
    }
    return rc;
}

void redis_server_stop(struct redis_server *s) {
    if (!s)
        return;
    if (s->pid > 0)
        redis_terminate(s->pid, 1);
    s->pid = 0;
    if (s->dir[0]) {
        redis_remove_dir(s->dir);
        redis_registry_forget(s->dir, 1);
        s->dir[0] = '\0';
    }
}
