#!/bin/bash
# Install miniq from this source tree into its own virtualenv, put `miniq` on
# PATH, install the units for that installation and start them.
#
#   bash packaging/install.sh            # root: system units, others: user units
#   bash packaging/install.sh --user     # your own queue, run by your user manager
#   bash packaging/install.sh --system   # the system queue (as root)
#
# Where things go:
#   --user:   venv ${XDG_DATA_HOME:-~/.local/share}/miniq/venv, command ~/.local/bin/miniq,
#             units ~/.config/systemd/user, queue root ~/.local/state/miniq
#   --system: venv /opt/miniq/venv, command /usr/local/bin/miniq,
#             units /etc/systemd/system, queue root /var/lib/miniq
# Undo with: miniq [--user|--system] uninstall-units, then remove the venv.
set -euo pipefail

mode=--user
[ "$(id -u)" = 0 ] && mode=--system
if [ $# -gt 0 ]; then mode=$1; fi
case $mode in
    --user) ;;
    --system) [ "$(id -u)" = 0 ] || { echo "Error: --system needs root (try: sudo bash $0 --system)" >&2; exit 2; } ;;
    *) echo "usage: bash $0 [--user|--system]" >&2; exit 2 ;;
esac
src=$(cd "$(dirname "$0")/.." && pwd)

# pystemd is compiled against libsystemd when it has no wheel for this Python.
bash "$src/packaging/need-debs.sh" python3-venv python3-dev libsystemd-dev pkg-config gcc

if [ "$mode" = --system ]; then
    venv=/opt/miniq/venv
    bindir=/usr/local/bin
else
    venv=${XDG_DATA_HOME:-$HOME/.local/share}/miniq/venv
    bindir=$HOME/.local/bin
fi
# The distribution's interpreter: the units must not depend on a per-user
# Python (pyenv and the like live in a home directory).
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3)
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$src"
mkdir -p "$bindir"
ln -sf "$venv/bin/miniq" "$bindir/miniq"
"$venv/bin/miniq" "$mode" install-units --now

root=$("$venv/bin/python" -c 'import sys; from miniq.manager import Manager, resolve_root; print(resolve_root(Manager(sys.argv[1])))' "${mode#--}")
echo
echo "miniq is installed and its units are enabled."
echo "Put executables in $root/jobs/NAME.job, then: miniq enqueue NAME ARGS..."
if [ "$mode" = --user ]; then
    echo "Output: journalctl --user -u miniq-process (as root: journalctl --user-unit miniq-process)"
    case ":$PATH:" in *":$bindir:"*) ;; *) echo "Note: add $bindir to your PATH." ;; esac
    echo "To keep your queue running while you are logged out: loginctl enable-linger"
else
    echo "Output: journalctl -u miniq-process"
fi
