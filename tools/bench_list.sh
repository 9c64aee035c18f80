# Sourced by the device drivers (gpu_final.sh, gpu_followup.sh): run_bench_list LOG "cmd;cmd" runs
# each command (a python script plus arguments, or a .sh run by bash) while the caller's `left`
# (seconds to its deadline) is at least MIN_S (default 60), cut at that deadline, appending to LOG.
run_bench_list() {
  local log=$1 cmds b runner
  IFS=';' read -ra cmds <<< "$2"
  for b in "${cmds[@]}"; do
    [ -z "$b" ] && continue
    if [ "$(left)" -lt "${MIN_S:-60}" ]; then echo "skipped (no time left): $b"; continue; fi
    echo "=== $b ($(left) s left)"
    case $b in *.sh*) runner=bash ;; *) runner=python3 ;; esac
    # shellcheck disable=SC2086  # a script plus its arguments
    timeout "$(left)" $runner $b 2>&1 | tee -a "$log" | tail -40
  done
}
