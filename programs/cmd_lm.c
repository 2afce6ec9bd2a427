/* Placeholder while the 'lm' command is being written (replaced in the same session). */
#include <stdio.h>

#include "cli.h"

int cmd_lm(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "ttt lm: not implemented yet\n");
    return 2;
}
