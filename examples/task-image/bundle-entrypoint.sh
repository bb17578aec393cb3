#!/bin/sh
# Entry point of the JOB container of a job with its own `image:` (fargate driver, job
# images). It is not part of the job's image: the task image ships it in its tool bundle
# (/opt/fargate-bundle, see Dockerfile), the task's `fargate-bundle` container copies the
# bundle into a task volume, and the derived task definition starts the job container with
#   /opt/fargate/bin/sh /opt/fargate/entrypoint.sh
# so that any Linux image works, with or without a shell, sshd or bash. POSIX sh (the
# bundle's static busybox sh runs it).
#
# 1. refuses to start without the job's key (SSH_PUBLIC_KEY, set by the driver): exiting
#    makes ECS stop the task at once, with this container's exit in the job log;
# 2. writes the job's service aliases (FARGATE_SERVICE_HOSTS) into the hosts file as
#    127.0.0.1: a task's containers share one network namespace;
# 3. makes sure the job's scripts find bash and sh: the bundle's are linked into
#    /usr/local/bin and /bin when the image has none;
# 4. installs the key and a fresh host key in the bundle's own directory (the image's
#    users and home directories are left alone), prints the host key on stdout as
#    `fargate-host-key: <algorithm> <key>` (the driver reads it from the container's log
#    stream, [SSH] HostKeySource), and runs the bundle's SSH server (dropbear) in the
#    foreground on FARGATE_SSH_PORT until the task's deadline.
#
# Environment (set by the driver and the derived task definition):
#   SSH_PUBLIC_KEY          one authorized_keys line
#   FARGATE_SSH_PORT        the SSH server's port ([Fargate.Images] JobSSHPort)
#   FARGATE_SERVICE_HOSTS   service host names, separated by spaces
#   FARGATE_TASK_DEADLINE   Unix seconds when the task must be gone
# For tests: FARGATE_BUNDLE (default: this script's directory), FARGATE_HOSTS_FILE
# (default /etc/hosts), FARGATE_LINK_DIRS (default "/usr/local/bin /bin").
set -eu

log() { printf 'fargate-bundle: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

bundle=${FARGATE_BUNDLE:-${0%/*}}
hosts=${FARGATE_HOSTS_FILE:-/etc/hosts}
link_dirs=${FARGATE_LINK_DIRS:-/usr/local/bin /bin}
# The image's own tools first; the bundle's (busybox applets) for what the image lacks.
image_path=${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
export PATH="$image_path:$bundle/bin"
in_image() { PATH=$image_path command -v "$1" >/dev/null 2>&1; }

# 1. The job's key.
key=${SSH_PUBLIC_KEY:-}
unset SSH_PUBLIC_KEY
case "$key" in
  '') die "SSH_PUBLIC_KEY is empty: the job container must be started by the fargate driver" ;;
  *"
"*) key=$(printf '%s\n' "$key" | head -n 1) ;;
esac
port=${FARGATE_SSH_PORT:-}
case "$port" in
  '' | *[!0-9]*) die "FARGATE_SSH_PORT must be a port number, not '$port'" ;;
esac

# 2. Service aliases.
for name in ${FARGATE_SERVICE_HOSTS:-}; do
  case "$name" in
    *[!A-Za-z0-9._-]*) die "service host name '$name' is not a host name" ;;
  esac
  if grep -Eq "^127\.0\.0\.1[[:space:]]+(.*[[:space:]])?$name([[:space:]]|\$)" "$hosts" 2>/dev/null; then
    continue
  fi
  if printf '127.0.0.1\t%s\n' "$name" >> "$hosts" 2>/dev/null; then
    log "service host $name -> 127.0.0.1"
  else
    log "warning: cannot write $hosts: service $name is reachable on localhost only"
  fi
done

# 3. bash and sh for the job's scripts.
for tool in bash sh; do
  in_image "$tool" && continue
  for dir in $link_dirs; do
    if mkdir -p "$dir" 2>/dev/null && ln -sf "$bundle/bin/$tool" "$dir/$tool" 2>/dev/null; then
      log "the image has no $tool: using the bundle's ($dir/$tool)"
      break
    fi
  done
done

# 4. Key, host key, SSH server.
umask 077
state="$bundle/state"
mkdir -p "$state"
printf '%s\n' "$key" > "$state/authorized_keys"
rm -f "$state/host_key"
"$bundle/bin/dropbearkey" -t ed25519 -f "$state/host_key" >/dev/null 2>&1 ||
  die "cannot make a host key with $bundle/bin/dropbearkey"
# The host key, announced on the container's output (its CloudWatch Logs stream) before the
# server starts: with [SSH] HostKeySource = "task-log" the driver accepts no other.
public=$("$bundle/bin/dropbearkey" -y -f "$state/host_key" 2>/dev/null | grep '^ssh-') ||
  die "cannot read the public part of the host key"
# shellcheck disable=SC2086 # split "<algorithm> <key> <comment>" into words
set -- $public
printf 'fargate-host-key: %s %s\n' "$1" "$2"
umask 022
log "SSH server on port $port"
# -F foreground, -E log to stderr, -s no passwords, -j/-k no forwarding, -D the directory of
# authorized_keys, -r the host key.
exec "$bundle/bin/sh" "$bundle/until-deadline.sh" \
  "$bundle/bin/dropbear" -F -E -s -j -k -p "$port" -r "$state/host_key" -D "$state"
