/* Placeholder while the 'data' command is being written (replaced in the same session). */
#include <stdio.h>

#include "cli.h"

int cmd_data(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "ttt data: not implemented yet\n");
    return 2;
}
