/* The emulator tests' check: EXPECT(cond, printf-style message) counts a pass, or counts a failure and prints
 * the message with its line; main prints the counts and returns failed != 0. */
#ifndef TTT_EMU_EXPECT_H
#define TTT_EMU_EXPECT_H

#include <cstdio>

static int failed = 0, passed = 0;
#define EXPECT(cond, ...)                                        \
    do {                                                         \
        if (cond) passed++;                                      \
        else {                                                   \
            failed++;                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
        }                                                        \
    } while (0)

#endif
