/* Minimal test harness: CHECK records a failure with its line and goes on;
 * TEST_MAIN_END prints "N passed, M failed" and sets the exit code. */
#ifndef TTT_TESTS_CHECK_H
#define TTT_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) check_passed++;                                                \
        else {                                                                   \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (cond) check_passed++;                                                \
        else {                                                                   \
            check_failed++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
        }                                                                        \
    } while (0)

#define CHECK_NEAR(a, b, tol) CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.10g vs %.10g", (double)(a), (double)(b))

#define TEST_MAIN_END()                                              \
    do {                                                             \
        printf("%d passed, %d failed\n", check_passed, check_failed); \
        return check_failed ? 1 : 0;                                 \
    } while (0)

#endif
