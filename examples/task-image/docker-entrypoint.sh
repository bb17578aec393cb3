#!/bin/sh
# Entrypoint of a task image for the `fargate` GitLab Runner driver (container
# `ci-coordinator`). POSIX sh: works on Debian (dash) and Alpine (busybox ash).
#
# 1. installs the job's public key, passed by the driver in SSH_PUBLIC_KEY, as the only
#    authorized key of the SSH user (directory 0700, file 0600), and refuses to start
#    without one;
# 2. makes fresh host keys for this task and prints them (`fargate-host-key:` lines, read
#    by the driver from the task's log stream; it pins the one it sees at prepare);
# 3. passes the ECS task's credential and metadata variables on to SSH sessions, which do
#    not inherit the container's environment (without this, job scripts cannot use the
#    task role);
# 4. runs sshd in the foreground until the task's deadline (until-deadline.sh, installed
#    beside this script): past FARGATE_TASK_DEADLINE the container ends, and so the task,
#    even when the runner host that should have stopped it is gone.
#
# Environment:
#   SSH_PUBLIC_KEY    (set by the driver) one authorized_keys line
#   FARGATE_TASK_DEADLINE  (set by the driver) Unix seconds when the task must be gone
#   SSH_USER          login user, default root; must match [SSH] Username in fargate.toml
#   FARGATE_PERSIST_ENV  extra variable names (space-separated) to pass on to SSH sessions
set -eu

log() { printf 'docker-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

user=${SSH_USER:-root}
# The user's home directory and ids, from /etc/passwd (getent is not in every image).
entry=$(awk -F: -v u="$user" '$1 == u { print $3 ":" $4 ":" $6; exit }' /etc/passwd)
[ -n "$entry" ] || die "user '$user' (SSH_USER) does not exist in this image"
uid=${entry%%:*}
rest=${entry#*:}
gid=${rest%%:*}
home=${rest#*:}
[ -n "$home" ] || die "user '$user' has no home directory"

# 1. The job's key. Refuse to start without one: sshd would run but nobody could log in,
#    and the job would only fail at the end of [Fargate] ReadyTimeout. Exiting makes ECS
#    stop the task at once, and the driver reports the container's exit in the job log.
key=${SSH_PUBLIC_KEY:-}
unset SSH_PUBLIC_KEY
case "$key" in
  '') die "SSH_PUBLIC_KEY is empty: this container must be started by the fargate driver (container name ci-coordinator, or [Fargate] ContainerName)" ;;
  *"
"*) key=$(printf '%s' "$key" | head -n 1) ;; # one line only (the Go driver added a newline)
esac

umask 077
mkdir -p "$home/.ssh"
chmod 0700 "$home/.ssh"
printf '%s\n' "$key" > "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
chown "$uid:$gid" "$home/.ssh" "$home/.ssh/authorized_keys"
umask 022
log "installed the job's public key for user '$user'"

# 2. Host keys: made here, per task, never baked into the image (the image build deletes
#    the ones its openssh package made), so that every task has its own.
ssh-keygen -A >/dev/null
#    Each is announced on the container's output (its CloudWatch Logs stream) before sshd
#    starts: with [SSH] HostKeySource = "task-log" (the default through a public IP) the
#    driver accepts only a key announced here, so a host that answers for the task's
#    address first gets nothing.
for pub in /etc/ssh/ssh_host_*_key.pub; do
  [ -f "$pub" ] || continue
  read -r algorithm key _ < "$pub"
  printf 'fargate-host-key: %s %s\n' "$algorithm" "$key"
done
mkdir -p /run/sshd
chmod 0755 /run/sshd

# 3. Variables ECS sets for the container, which SSH sessions must see: the task role's
#    credentials endpoint (used by every AWS SDK and the AWS CLI), the region, and the task
#    metadata endpoints. sshd's SetEnv reaches every session, login shell or not (the
#    driver's sessions are not login shells); /etc/environment covers tools that read it
#    (pam_env on Debian).
names="AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI
AWS_CONTAINER_AUTHORIZATION_TOKEN AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
AWS_REGION AWS_DEFAULT_REGION AWS_EXECUTION_ENV
ECS_CONTAINER_METADATA_URI ECS_CONTAINER_METADATA_URI_V4 ECS_AGENT_URI
${FARGATE_PERSIST_ENV:-}"
setenv=""
: > /etc/environment.fargate
for name in $names; do
  case "$name" in
    *[!A-Za-z0-9_]* | [0-9]*) log "skipping '$name': not a variable name"; continue ;;
  esac
  # isset=x when the variable is set (even to ""), value=its value; eval expands each
  # name once (checked above), the values themselves are not evaluated.
  isset='' value=''
  eval "isset=\${$name+x} value=\${$name-}"
  [ "$isset" = x ] || continue
  case "$value" in
    *'"'* | *\\* | *"
"*) log "not passing $name on: its value has a quote, backslash or newline"; continue ;;
  esac
  setenv="$setenv \"$name=$value\""
  printf '%s="%s"\n' "$name" "$value" >> /etc/environment.fargate
done
if [ -n "$setenv" ]; then
  mkdir -p /etc/ssh/sshd_config.d
  # sshd uses the first SetEnv line it reads, so all variables go on one line.
  printf 'SetEnv%s\n' "$setenv" > /etc/ssh/sshd_config.d/00-ecs-task-env.conf
  chmod 0644 /etc/ssh/sshd_config.d/00-ecs-task-env.conf
  # Keep whatever /etc/environment already had, minus older copies of these variables.
  if [ -f /etc/environment ]; then
    grep -v -E '^(AWS_|ECS_)' /etc/environment >> /etc/environment.fargate || true
  fi
  mv /etc/environment.fargate /etc/environment
  chmod 0644 /etc/environment
else
  rm -f /etc/environment.fargate
  log "no ECS task variables found (not running on ECS?); SSH sessions get none"
fi

# 4. sshd in the foreground, logging to stderr (CloudWatch Logs via the task's log
#    configuration), until FARGATE_TASK_DEADLINE; until-deadline.sh passes on the signals
#    ECS sends when the task stops (without a deadline it simply execs sshd).
#    A job that takes this task over from the warm pool writes its own deadline to the
#    login user's ~/.fargate-deadline (the driver's key swap), which until-deadline.sh
#    reads from then on.
export FARGATE_DEADLINE_FILE="$home/.fargate-deadline"
exec "$(dirname "$0")/until-deadline.sh" /usr/sbin/sshd -D -e
