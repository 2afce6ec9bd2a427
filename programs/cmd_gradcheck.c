/* ttt gradcheck: every op's first and second derivatives against float64
 * finite differences, as a table; exit 1 on any failure, 2 on a usage error,
 * 3 when the device asked for is not there (no gradient was checked). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ttt/gradcheck.h"
#include "ttt/runtime.h"

int cmd_gradcheck(int argc, char **argv) {
    int64_t seed = 1, seeds = 3;
    const char *only = NULL, *dev = NULL;
    ttt_device device = TTT_CPU;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help")) {
            printf("usage: ttt gradcheck [--seed N] [--seeds K] [--op NAME] [--device cpu|cuda]\n"
                   "  --seed N   first seed of the random shapes and values (default 1)\n"
                   "  --seeds K  seeds per op, N .. N+K-1 (default 3)\n"
                   "  --op NAME  check only the op with this name\n"
                   "  --device D run on cpu (default) or cuda; on cuda the analytic gradient and HVP\n"
                   "             must also match a CPU f64 run of the same case: parity64 (device f64,\n"
                   "             <= 1e-9 relative), parity32 (device f32, <= 1e-3 relative; the gradient\n"
                   "             also without create_graph, the route of f32-only fused backward kernels)\n"
                   "             and parity16 (device bf16 against CPU f64 from the same bf16-rounded\n"
                   "             inputs, <= 5e-2)\n"
                   "Errors are scaled: |analytic - numeric| / (atol + rtol |numeric|), pass <= 1;\n"
                   "order 1: atol 1e-6 rtol 1e-5 (eps 1e-6); order 2 (HVP): atol 1e-5 rtol 1e-4 (eps 1e-5).\n"
                   "Exit status: 0 all passed, 1 a check failed, 2 usage error, 3 no such device.\n");
            return 0;
        }
        if ((r = cli_flag_int(argc, argv, &i, "--seed", 0, INT64_MAX, &seed))) {
            if (r < 0) return 2;
        } else if ((r = cli_flag_int(argc, argv, &i, "--seeds", 1, 1000, &seeds))) {
            if (r < 0) return 2;
        } else if ((r = cli_flag_str(argc, argv, &i, "--device", &dev))) {
            if (r < 0) return 2;
            if (!strcmp(dev, "cpu")) device = TTT_CPU;
            else if (!strcmp(dev, "cuda")) device = TTT_CUDA;
            else {
                fprintf(stderr, "ttt gradcheck: --device %s: expected cpu or cuda\n", dev);
                return 2;
            }
        } else if ((r = cli_flag_str(argc, argv, &i, "--op", &only))) {
            if (r < 0) return 2;
        } else {
            return cli_unknown("gradcheck", argv[i]);
        }
    }
    /* A missing device is not a gradient failure: say so before any table. */
    if (ttt_device_count(device) < 1) {
        ttt_ctx *probe = ttt_ctx_new(&(ttt_ctx_config){.device = device});
        if (!probe) {
            fprintf(stderr, "ttt gradcheck: cannot run on %s: %s\n", device == TTT_CUDA ? "cuda" : "cpu",
                    ttt_runtime_error());
            return 3;
        }
        ttt_ctx_free(probe);
    }
    int failed = 0, passed = 0, found = 0;
    printf("%-28s %-6s %-10s %-10s %-10s %-10s %-10s %s\n", "op", "seed", "order1", "order2", "parity64", "parity32",
           "parity16", "result   shapes");
    for (int c = 0; c < ttt_gradcheck_count(); c++) {
        if (only && strcmp(only, ttt_gradcheck_name(c))) continue;
        found = 1;
        for (int64_t s = seed; s < seed + seeds; s++) {
            ttt_gradcheck_result r;
            int ok = ttt_gradcheck_run_on(c, (uint64_t)s, device, &r) == 0;
            if (r.msg[0]) printf("%-28s %-6lld error: %s\n", r.name, (long long)s, r.msg);
            else
                printf("%-28s %-6lld %-10.3g %-10.3g %-10.3g %-10.3g %-10.3g %-8s %s\n", r.name, (long long)s, r.err1,
                       r.err2, r.parity, r.parity32, r.parity16, ok ? "ok" : "FAIL", r.shapes);
            ok ? passed++ : failed++;
        }
    }
    if (!found) {
        fprintf(stderr, "ttt gradcheck: no op named '%s'\n", only);
        return 2;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
