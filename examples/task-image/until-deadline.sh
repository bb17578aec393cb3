#!/bin/sh
# Runs a command (the task image's sshd) until the task's deadline, so that a task whose
# runner host is gone for good still ends: the container's main process exits, and ECS
# stops the task. POSIX sh: works on Debian (dash) and Alpine (busybox ash).
#
#   until-deadline.sh COMMAND [ARG...]
#
# Environment:
#   FARGATE_TASK_DEADLINE  (set by the driver) Unix seconds after which the task must be
#                          gone. Unset or empty: COMMAND simply runs (exec), as before.
#   FARGATE_DEADLINE_FILE  (optional) a file holding a later deadline (Unix seconds, one
#                          line), read every 10 s: a job that takes the task over from the
#                          warm pool writes its own deadline there. A missing file or one
#                          that is not a number is ignored.
#
# With a deadline, COMMAND runs in the background and this script waits for whichever
# comes first:
#   - COMMAND exits: the script exits with its status;
#   - the deadline passes: the script sends COMMAND SIGTERM, waits for it, and exits with
#     status 124 and a message on stderr (ECS shows the exit code in the task's details);
#   - SIGTERM or SIGINT (ECS stopping the task, through tini): passed on to COMMAND, then
#     as above when it exits.
# A deadline already past refuses to start COMMAND (status 124).
set -eu

log() { printf 'until-deadline: %s\n' "$*" >&2; }

[ "$#" -gt 0 ] || { log "error: usage: until-deadline.sh COMMAND [ARG...]"; exit 2; }

deadline=${FARGATE_TASK_DEADLINE:-}
[ -n "$deadline" ] || exec "$@"
case "$deadline" in
  *[!0-9]*) log "error: FARGATE_TASK_DEADLINE=$deadline is not a number of Unix seconds"; exit 2 ;;
esac

expired() {
  log "the task's lifetime has ended (FARGATE_TASK_DEADLINE=$deadline, now $(date +%s)): stopping it"
}

remaining=$((deadline - $(date +%s)))
if [ "$remaining" -le 0 ]; then
  expired
  exit 124
fi

command_pid=''
deadline_passed=''
terminated=''
stop_command() { [ -z "$command_pid" ] || kill -TERM "$command_pid" 2>/dev/null || true; }
trap 'deadline_passed=1' USR1
trap 'terminated=1; stop_command' TERM INT
"$@" &
command_pid=$!
[ -z "$terminated" ] || stop_command

# The timer: sleeps until the deadline, at most 10 s at a time, then tells this shell
# (USR1; `$$` in a subshell is this shell's pid). It is ended with SIGKILL, which no race
# can lose: a sleep it leaves behind ends within 10 s, tells nobody and holds no output.
(
  while now=$(date +%s) && {
    if [ -n "${FARGATE_DEADLINE_FILE:-}" ] && [ -f "$FARGATE_DEADLINE_FILE" ]; then
      d=$(head -c 20 "$FARGATE_DEADLINE_FILE" 2>/dev/null | tr -d ' \n') || d=''
      case "$d" in ''|*[!0-9]*) ;; *) deadline=$d ;; esac
    fi
    [ "$now" -lt "$deadline" ]
  }; do
    sleep $(( deadline - now < 10 ? deadline - now : 10 ))
  done
  kill -USR1 $$ 2>/dev/null || true
) </dev/null >/dev/null 2>&1 &
timer_pid=$!

# `wait` returns early when a trapped signal arrives; loop until COMMAND has exited or the
# deadline has passed.
status=0
while :; do
  if wait "$command_pid"; then status=0; else status=$?; fi
  [ -z "$deadline_passed" ] || break
  kill -0 "$command_pid" 2>/dev/null || break
done

if [ -n "$deadline_passed" ]; then
  expired
  stop_command
  wait "$command_pid" || true
  exit 124
fi
kill -KILL "$timer_pid" 2>/dev/null || true
wait "$timer_pid" || true
exit "$status"
