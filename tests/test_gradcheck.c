/* Every op's VJP (order 1) and HVP through grad-of-grad (order 2) against
 * float64 finite differences, on several random draws of shapes and values. */
#include <stdio.h>

#include "check.h"
#include "ttt/gradcheck.h"

int main(void) {
    for (int c = 0; c < ttt_gradcheck_count(); c++) {
        for (uint64_t seed = 1; seed <= 4; seed++) {
            ttt_gradcheck_result r;
            int ok = ttt_gradcheck_run(c, seed, &r) == 0;
            CHECK_MSG(ok, "%s seed %llu %s: order1 %.3g order2 %.3g %s", r.name, (unsigned long long)seed, r.shapes,
                      r.err1, r.err2, r.msg);
        }
    }
    TEST_MAIN_END();
}
