// A small test harness. Each test file defines tests with TEST(name) and lists them in main()
// with TEST_RUN(name). `./test_x` runs all tests; `./test_x NAME...` runs those whose name
// contains one of the arguments. Each binary ends with the line
//   "RESULT <file>: N passed, N failed, N skipped"
// which tests/run.sh adds up.
#ifndef SPECD_TESTS_TEST_H
#define SPECD_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_state {
    int argc;
    char **argv;
    int passed, failed, skipped;
    int current_failed;  // checks failed in the running test
    int current_skipped; // the running test called TEST_SKIP
};

extern struct test_state test_state_g;

#define TEST(name) static void name(void)

#define TEST_FAIL_AT(file, line, ...)                                                              \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: ", file, line);                                                  \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        test_state_g.current_failed++;                                                             \
    } while (0)

// CHECK records a failure and continues; REQUIRE records it and returns from the test.
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TEST_FAIL_AT(__FILE__, __LINE__, "check failed: %s", #cond);                           \
    } while (0)
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            TEST_FAIL_AT(__FILE__, __LINE__, "requirement failed: %s", #cond);                     \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_)                                                                            \
            TEST_FAIL_AT(__FILE__, __LINE__, "%s == %s failed: %lld != %lld", #a, #b, va_, vb_);   \
    } while (0)
#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0)                                                 \
            TEST_FAIL_AT(__FILE__, __LINE__, "%s == %s failed: \"%s\" != \"%s\"", #a, #b,          \
                         sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                              \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double va_ = (double)(a), vb_ = (double)(b);                                               \
        if (!(fabs(va_ - vb_) <= (tol)))                                                           \
            TEST_FAIL_AT(__FILE__, __LINE__, "%s ~= %s failed: %.9g vs %.9g (tol %g)", #a, #b,     \
                         va_, vb_, (double)(tol));                                                 \
    } while (0)

// Marks the running test skipped (with a reason printed) and returns from it.
#define TEST_SKIP(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "  skipped: ");                                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        test_state_g.current_skipped = 1;                                                          \
        return;                                                                                    \
    } while (0)

void test_run_one(const char *name, void (*fn)(void));
#define TEST_RUN(name) test_run_one(#name, name)
// Call first in main(); returns nothing.
void test_begin(int argc, char **argv);
// Call last in main(); prints the RESULT line and returns the exit status.
int test_end(const char *file);

// Path of the team asset folder (env SPECD_SHARED, else "../shared" relative to the repo root,
// found from the current directory). Returns NULL when absent.
const char *test_shared_dir(void);
// Joins test_shared_dir() with a relative path into one of 8 static buffers used in turn; NULL
// when the folder or the file is absent.
const char *test_shared_path(const char *rel);

#define TEST_MAIN_BEGIN(argc, argv) test_begin(argc, argv)
#define TEST_MAIN_END() test_end(__FILE__)

#endif
