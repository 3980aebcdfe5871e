#!/usr/bin/env bash
# The whole test suite in two lanes at once (make test): the suites that spend their time waiting on a
# load of their own for minutes (the soak, the chaos events: think times, a scenario's clock) run beside
# the rest instead of after it, on a Redis database of their own. Both must pass.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
SLOW=(tests/loadtest/test_soak.py tests/loadtest/test_chaos.py)
main_redis=${EXAMGATE_TEST_REDIS_URL:-redis://127.0.0.1:6379/13}
slow_redis=${EXAMGATE_TEST_SLOW_REDIS_URL:-${main_redis%/*}/12}
log=$(mktemp -t examgate-slow-lane.XXXXXX)

echo "test-lanes: ${SLOW[*]} in a lane of their own (Redis ${slow_redis##*/}), the rest here (Redis ${main_redis##*/})"
EXAMGATE_TEST_REDIS_URL=$slow_redis "$PYTHON" -m pytest -p no:cacheprovider --durations=10 "${SLOW[@]}" >"$log" 2>&1 &
slow_pid=$!
trap 'kill "$slow_pid" 2>/dev/null' INT TERM

ignores=()
for path in "${SLOW[@]}"; do ignores+=(--ignore "$path"); done
# --durations: the slowest tests listed at the end, to keep the whole suite within its time budget.
EXAMGATE_TEST_REDIS_URL=$main_redis "$PYTHON" -m pytest --durations=30 "${ignores[@]}"
main_status=$?

wait "$slow_pid"
slow_status=$?
echo
echo "test-lanes: the slow lane (${SLOW[*]}):"
cat "$log"
rm -f "$log"
if [ "$main_status" -ne 0 ] || [ "$slow_status" -ne 0 ]; then
  echo "test-lanes: failed (main lane exit $main_status, slow lane exit $slow_status)" >&2
  exit 1
fi
echo "test-lanes: both lanes passed"
