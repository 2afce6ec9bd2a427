#!/usr/bin/env bash
# `ttt tasks list / show / check` (include/ttt/tasks.h, docs/tasks.md), CPU, under a second:
# the table, text and JSON-lines examples (valid JSON, escaping, determinism, --start/--n
# windows, splits that differ), the checker from the command line and stdin, exit codes.
#   usage: tests/test_tasks_cli.sh PATH/TO/ttt
set -u
T=${1:?usage: test_tasks_cli.sh PATH/TO/ttt}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
dir=$(mktemp -d /tmp/ttt_tasks_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }

check '"$T" tasks list >list.txt && [ "$(grep -c . list.txt)" -ge 8 ] && grep -qE "^arith +math +no +number" list.txt && grep -qE "^facts-color +reasoning +yes +choice" list.txt && grep -qE "^classify +classify +no +word" list.txt' "list: a header and a row a family with category, held-out, answer kind"
for f in $("$T" tasks list | tail -n +2 | awk '{print $1}'); do
  check '"$T" tasks show --family $f --n 3 >$f.txt && [ "$(grep -c "^=== $f train " $f.txt)" -eq 3 ] && [ "$(grep -c "^--- answer: " $f.txt)" -eq 3 ]' "show $f: three examples with answers"
done
check '"$T" tasks show --family arith --split val --n 50 --jsonl >a1.jsonl && "$T" tasks show --family arith --split val --n 50 --jsonl >a2.jsonl && cmp -s a1.jsonl a2.jsonl' "the same flags give the same bytes"
check '"$T" tasks show --family arith --split val --n 10 --start 40 --jsonl >a3.jsonl && [ "$(tail -n 10 a1.jsonl)" = "$(cat a3.jsonl)" ]' "--start/--n select a window of the same examples"
check '"$T" tasks show --family arith --split test --n 50 --jsonl >t.jsonl && ! cmp -s a1.jsonl t.jsonl' "val and test differ"
if command -v python3 >/dev/null; then
  check '"$T" tasks show --family py-output --n 30 --jsonl >p.jsonl && python3 -c "
import json, sys
rows = [json.loads(l) for l in open(\"p.jsonl\")]
assert len(rows) == 30 and [r[\"index\"] for r in rows] == list(range(30))
assert all(set(r) == {\"family\", \"split\", \"index\", \"prompt\", \"answer\"} for r in rows)
assert all(r[\"family\"] == \"py-output\" and r[\"split\"] == \"train\" and \"\n\" in r[\"prompt\"] for r in rows)
"' "jsonl: valid JSON a line, newlines escaped, the documented keys"
  check '"$T" tasks show --family py-string --n 40 --jsonl | python3 -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin]
assert any(chr(34) in r[\"prompt\"] for r in rows)
"' "jsonl: quotes in prompts are escaped"
fi
tab=$(printf '\t')
check '[ "$("$T" tasks check --family arith --expected 7 "Tom has 4 + 3 = 7 apples.")" = "correct${tab}7" ]' "check: correct, with the answer read"
check '[ "$("$T" tasks check --family arith --expected 7 "6 or 7")" = "wrong${tab}6" ]' "check: the first answer counts"
check 'printf "The answer is B.\n" | "$T" tasks check --family facts-mc --expected B | grep -q "^correct"' "check: the output from stdin"
check '"$T" tasks check --family arith --expected -3 -- -3 | grep -q "^correct"' "check: -- before an output that starts with -"
check '"$T" tasks check --family classify --expected math "Math." | grep -q "^correct"' "check: a word, case and trailing period aside"
# bad input: a message and exit 2
bad() { "$T" "$@" >out.txt 2>&1; rc=$?; [ $rc -eq 2 ] && [ -s out.txt ]; }
check 'bad tasks' "no subcommand: usage, exit 2"
check 'bad tasks frobnicate && grep -q "unknown subcommand" out.txt' "unknown subcommand"
check 'bad tasks show && grep -q "needs --family" out.txt' "show without --family"
check 'bad tasks show --family nope && grep -q "unknown family .nope." out.txt && grep -q "arith" out.txt' "an unknown family names the known ones"
check 'bad tasks show --family arith --split dev && grep -q "train, val or test" out.txt' "a bad split"
check 'bad tasks show --family arith --n 0 && grep -q -- "--n" out.txt' "--n 0"
check 'bad tasks show --family arith --start -1 && grep -q -- "--start" out.txt' "a negative --start"
check 'bad tasks show --family arith --n' "--n without a value"
check 'bad tasks show --family arith --bogus && grep -q "unknown argument" out.txt' "an unknown flag"
check 'bad tasks list extra' "list takes no argument"
check 'bad tasks check --family arith && grep -q "needs" out.txt' "check without --expected"
check 'bad tasks check --family arith --expected 1 a b && grep -q "unknown argument" out.txt' "check: one output only"
check '"$T" tasks --help | grep -q "ttt tasks show" && "$T" tasks show --help | grep -q -- "--jsonl" && "$T" tasks list --help | grep -q "list"' "--help for each, exit 0"
exit $fail
