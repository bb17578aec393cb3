# shellcheck shell=bash
# Shared by scripts/test and scripts/demo: installs what the tests and the demo need when it
# is missing (OpenSSH server, C build dependencies, the moto ECS emulator in its own venv,
# the dynalite DynamoDB emulator with Node.js), and checks for a Rust toolchain.
#
# Usage (from a bash script run with `set -euo pipefail`):
#   . "$(dirname "$0")/lib/deps.sh"
#   require_cargo          # exits with a clear message when cargo is missing
#   install_test_deps      # installs what is missing; exports FARGATE_MOTO_PYTHON and
#                          # FARGATE_DYNALITE
#
# Needs root or sudo only when something must be installed. Environment:
#   FARGATE_MOTO_VENV       where moto goes (default /opt/fargate-moto)
#   FARGATE_DYNALITE_PREFIX where dynalite goes (default /opt/fargate-dynalite)

FARGATE_MOTO_VERSION=5.2.5
FARGATE_DYNALITE_VERSION=3.2.2

say() { printf '==> %s\n' "$*"; }

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "'$*' needs root; run as root or install sudo"
  fi
}

# cargo on the PATH (or in ~/.cargo/bin), else a message saying how to get it.
require_cargo() {
  if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null || die "cargo is not installed. Install a Rust toolchain (1.91 or newer) with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
then open a new shell (or run: . \"\$HOME/.cargo/env\") and try again."
}

# Installs the Debian/Ubuntu packages, moto and dynalite when missing, creates sshd's
# privilege separation directory, and exports FARGATE_MOTO_PYTHON and FARGATE_DYNALITE.
install_test_deps() {
  local missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  # Rust links with the system C compiler; the *-sys crates compile C too.
  command -v cc >/dev/null || missing+=(gcc libc6-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  [ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  # dynalite, the second DynamoDB emulator, runs on Node.js.
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null ||
      die "missing: ${missing[*]}; this script installs them with apt-get (Debian/Ubuntu) only: install them yourself"
    say "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # sshd refuses to start without its privilege separation directory.
  [ -d /run/sshd ] || as_root mkdir -p -m 0755 /run/sshd

  local venv=${FARGATE_MOTO_VENV:-/opt/fargate-moto}
  if ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$FARGATE_MOTO_VERSION')" 2>/dev/null; then
    say "installing moto[server]==$FARGATE_MOTO_VERSION into $venv"
    as_root python3 -m venv "$venv"
    as_root "$venv/bin/pip" install -q "moto[server]==$FARGATE_MOTO_VERSION"
  fi
  export FARGATE_MOTO_PYTHON="$venv/bin/python"

  # In memory, so without leveldown's native build (--ignore-scripts); a few seconds.
  local dynalite=${FARGATE_DYNALITE_PREFIX:-/opt/fargate-dynalite}
  if ! grep -qs "\"version\": \"$FARGATE_DYNALITE_VERSION\"" "$dynalite/node_modules/dynalite/package.json"; then
    say "installing dynalite@$FARGATE_DYNALITE_VERSION into $dynalite"
    as_root mkdir -p "$dynalite"
    as_root npm install --prefix "$dynalite" --ignore-scripts --no-audit --no-fund --loglevel=error \
      "dynalite@$FARGATE_DYNALITE_VERSION" >/dev/null
  fi
  export FARGATE_DYNALITE="$dynalite"
}
