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
#             units /etc/systemd/system, queue root /var/lib/miniq (and the
#             helper socket miniq-api.socket that lets users use it)
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
step() { echo "==> $*"; }

# pystemd is compiled against libsystemd when it has no wheel for this Python.
step "checking the Debian packages miniq needs to build (python3-venv python3-dev libsystemd-dev pkg-config gcc)"
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
step "creating $venv"
"$python" -m venv "$venv"
step "installing miniq, click and pystemd into it (compiling pystemd can take a minute)"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$src"
mkdir -p "$bindir"
ln -sf "$venv/bin/miniq" "$bindir/miniq"
step "installing and starting the units ($mode)"
"$venv/bin/miniq" "$mode" install-units --now >/dev/null

root=$("$venv/bin/miniq" "$mode" where)
echo
echo "miniq is installed and its units are enabled; your queue is $root."
echo "Next (README, \"Getting started\"):"
case ":$PATH:" in *":$bindir:"*) ;; *) echo "  export PATH=\"$bindir:\$PATH\"      # miniq is in $bindir" ;; esac
cat <<NEXT
  jobs="\$(miniq where)/jobs"
  mkdir -p "\$jobs"
  printf '#!/bin/sh\\necho "notify: \$1 - \$2 (\$3)"\\n' > "\$jobs/notify.job"
  chmod +x "\$jobs/notify.job"
  id=\$(miniq enqueue notify Title "This is a message!" 9)
  miniq wait "\$id"; miniq logs "\$id"
NEXT
if [ "$mode" = --user ]; then
    echo "All jobs' output: journalctl --user -u miniq-process (as root: journalctl --user-unit miniq-process)"
    echo "To keep your queue running while you are logged out: loginctl enable-linger"
else
    echo "All jobs' output: journalctl -u miniq-process. Users submit with: miniq --system enqueue NAME ARGS..."
fi
