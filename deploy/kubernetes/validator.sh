#!/usr/bin/env bash
# Installs the Kubernetes manifest validator the tests run (kubernetes-validate from PyPI, which
# carries the Kubernetes schemas, so validating needs no cluster and no network) into a
# virtualenv under the toolchain cache, once, and prints that virtualenv's path.
#   bash deploy/kubernetes/validator.sh   # -> ~/.cache/sandport/tools/kubernetes-validate-1.37.0
# Run by .ci/run before the tests, and by tests/deploy.rs (a no-op once installed).
set -euo pipefail

KUBERNETES_VALIDATE_VERSION="1.37.0"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../guest-plugins/lib.sh
source "$here/../../guest-plugins/lib.sh"
sp_lang=kubernetes-validate
tools="${SANDPORT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sandport/tools}"
venv="$tools/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
python="${PYTHON:-python3}"

mkdir -p "$tools"
# One install at a time (tests run in parallel): the others wait, then find it done.
exec 9>"$venv.lock"
flock 9
# The stamp is written last, so an interrupted install is redone from scratch.
if [ ! -f "$venv/.installed" ]; then
    command -v "$python" >/dev/null 2>&1 || fail "$python not found: install Python 3, or set PYTHON"
    if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        say "installing python3-venv (Debian package)" >&2
        sp_apt_install python3-venv
    fi
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI) into $venv" >&2
    PYTHON="$python" sp_venv "$venv" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
    touch "$venv/.installed"
fi
version="$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)"
[ "$version" = "$KUBERNETES_VALIDATE_VERSION" ] \
    || fail "$venv/bin/kubernetes-validate reports '$version', expected $KUBERNETES_VALIDATE_VERSION (delete $venv to reinstall)"
echo "$venv"
