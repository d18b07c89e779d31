#include "tests/test.h"

#include <sys/stat.h>
#include <unistd.h>

struct test_state test_state_g;

void test_begin(int argc, char **argv) {
    memset(&test_state_g, 0, sizeof test_state_g);
    test_state_g.argc = argc;
    test_state_g.argv = argv;
}

static int test_selected(const char *name) {
    if (test_state_g.argc <= 1)
        return 1;
    for (int i = 1; i < test_state_g.argc; i++)
        if (strstr(name, test_state_g.argv[i]))
            return 1;
    return 0;
}

void test_run_one(const char *name, void (*fn)(void)) {
    if (!test_selected(name))
        return;
    test_state_g.current_failed = 0;
    test_state_g.current_skipped = 0;
    fprintf(stderr, "RUN  %s\n", name);
    fn();
    if (test_state_g.current_failed) {
        test_state_g.failed++;
        fprintf(stderr, "FAIL %s\n", name);
    } else if (test_state_g.current_skipped) {
        test_state_g.skipped++;
        fprintf(stderr, "SKIP %s\n", name);
    } else {
        test_state_g.passed++;
        fprintf(stderr, "PASS %s\n", name);
    }
}

int test_end(const char *file) {
    const char *base = strrchr(file, '/');
    printf("RESULT %s: %d passed, %d failed, %d skipped\n", base ? base + 1 : file,
           test_state_g.passed, test_state_g.failed, test_state_g.skipped);
    fflush(stdout);
    return test_state_g.failed ? 1 : 0;
}

static int test_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *test_shared_dir(void) {
    static char dir[4096];
    const char *env = getenv("SPECD_SHARED");
    if (env && *env)
        return test_is_dir(env) ? env : NULL;
    // Walk up from the current directory to the repo root (the folder with a Makefile and
    // worker/), then take ../shared beside it.
    char cwd[3000];
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    for (;;) {
        char probe[3100];
        snprintf(probe, sizeof probe, "%s/worker/engine", cwd);
        if (test_is_dir(probe)) {
            snprintf(dir, sizeof dir, "%s/../shared", cwd);
            return test_is_dir(dir) ? dir : NULL;
        }
        char *slash = strrchr(cwd, '/');
        if (!slash || slash == cwd)
            return NULL;
        *slash = '\0';
    }
}

const char *test_shared_path(const char *rel) {
    static char paths[8][4300]; // a few results stay valid at once
    static int next;
    char *path = paths[next++ % 8];
    const char *dir = test_shared_dir();
    if (!dir)
        return NULL;
    snprintf(path, sizeof paths[0], "%s/%s", dir, rel);
    return access(path, R_OK) == 0 ? path : NULL;
}
