#!/usr/bin/env bash
# Lints the CloudFormation template offline with cfn-lint (pinned), installed into a
# virtualenv on first use. No AWS account or network access is needed to lint, only to
# install cfn-lint from PyPI the first time.
#
# Usage: examples/cloudformation/validate.sh
#   CFN_LINT_VENV   where to install it (default /tmp/fargate-cfn-lint)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

CFN_LINT_VERSION=1.51.0
venv=${CFN_LINT_VENV:-/tmp/fargate-cfn-lint}

if ! "$venv/bin/cfn-lint" --version 2>/dev/null | grep -qx "cfn-lint $CFN_LINT_VERSION"; then
  echo "==> installing cfn-lint==$CFN_LINT_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "cfn-lint==$CFN_LINT_VERSION"
fi

echo "==> cfn-lint $here/fargate-runner.yaml" >&2
"$venv/bin/cfn-lint" "$here/fargate-runner.yaml"
echo "==> the template is valid" >&2
