#!/usr/bin/env bash
# README.md's library example, as a new user meets it: install the build into an
# empty prefix, take the ```c block under "## Using the library" exactly as
# written, compile it with the plain `pkg-config --cflags --libs ttt` line (the
# shared library), run it; then link libttt.a with `pkg-config --static`'s list.
#   usage: tests/test_readme_example.sh SOURCE_DIR BUILD_DIR [EXTRA_CFLAGS]
# EXTRA_CFLAGS: what the library was built with that a program linking it needs
# too (the sanitizer build passes -fsanitize=...).
set -u
src=${1:?usage: test_readme_example.sh SOURCE_DIR BUILD_DIR [EXTRA_CFLAGS]}
build=${2:?usage: test_readme_example.sh SOURCE_DIR BUILD_DIR [EXTRA_CFLAGS]}
extra=${3:-}
cc=${CC:-cc}
command -v pkg-config >/dev/null || { echo "FAILED: pkg-config is not installed (scripts/install-deps.sh installs it)"; exit 1; }
dir=$(mktemp -d /tmp/ttt_readme_XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }

check 'cmake --install "$build" --prefix "$dir/prefix" >"$dir/install.log" 2>&1 || { cat "$dir/install.log"; false; }' "cmake --install into an empty prefix"
pc=$(find "$dir/prefix" -name ttt.pc | head -1)
check '[ -n "$pc" ]' "ttt.pc installed"
check 'ls "$dir"/prefix/lib*/libttt.so* "$dir"/prefix/lib*/*/libttt.so* 2>/dev/null | grep -q .' "libttt.so installed"
export PKG_CONFIG_PATH="$(dirname "${pc:-/nonexistent/x}")"

# the first ```c block after the heading, verbatim
awk '/^## Using the library/ { sect = 1; next }
     sect && /^## / { exit }
     sect && !inblk && /^```c$/ { inblk = 1; next }
     inblk && /^```$/ { exit }
     inblk { print }' "$src/README.md" >"$dir/example.c"
check '[ "$(grep -c . "$dir/example.c")" -gt 10 ] && grep -q "int main" "$dir/example.c"' "README.md has a whole C program under \"Using the library\""

cd "$dir" || exit 1
# exactly README's line (plus the sanitizer flags of a sanitizer build)
check '$cc example.c $(pkg-config --cflags --libs ttt) $extra -o example 2>build.log || { cat build.log; false; }' "cc example.c \$(pkg-config --cflags --libs ttt) -o example"
check 'ldd ./example | grep -q "libttt.so"' "the example links the shared library"
check './example >out.txt 2>&1 || { cat out.txt; false; }' "the example runs (no LD_LIBRARY_PATH needed)"
check 'grep -Eq "^outer loss -?[0-9.]+, \|d outer / d w\| summed [0-9.]+$" out.txt && ! grep -q "nan" out.txt' "it prints the outer loss and a finite gradient"
cat out.txt
# libttt.a, named by path, with the dependencies that `pkg-config --static` lists
lib_a=$(ls "$dir"/prefix/lib*/libttt.a "$dir"/prefix/lib*/*/libttt.a 2>/dev/null | head -1)
check '[ -n "$lib_a" ] && $cc example.c $(pkg-config --cflags ttt) "$lib_a" $(pkg-config --static --libs-only-other --libs-only-l ttt | sed "s/-lttt//") $extra -o example_static 2>build_static.log || { cat build_static.log; false; }' "libttt.a links with pkg-config --static's dependencies"
check '! ldd ./example_static | grep -q "libttt.so" && ./example_static >out_static.txt 2>&1 && cmp -s out.txt out_static.txt' "the static build runs and prints the same"
exit $fail
