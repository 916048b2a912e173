#!/bin/bash
# Build the Debian package of this checkout with Debian's own tools:
#
#   bash packaging/build-deb.sh        # -> dist/miniq_VERSION_all.deb and dist/cockpit-miniq_VERSION_all.deb, then lintian on both
#
# As root it installs the build dependencies when they are missing.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)

bash "$src/packaging/need-debs.sh" dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-click python3-hatchling lintian

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only what is part of the source: tracked files when this is a git checkout.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$src" ls-files -z | (cd "$src" && xargs -0 cp --parents -t "$work/")
else
    tar -C "$src" --exclude=.venv --exclude=.git --exclude=dist -cf - . | tar -C "$work" -xf -
fi
mkdir -p "$work/miniq-src"
(cd "$work" && find . -mindepth 1 -maxdepth 1 ! -name miniq-src -exec mv {} miniq-src/ \;)
cp -r "$work/miniq-src/packaging/debian" "$work/miniq-src/debian"
# Debian's interpreter and tools, not a per-user Python (pyenv and the like) on PATH.
(cd "$work/miniq-src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || { tail -40 "$work/build.log" >&2; exit 1; }
mkdir -p "$src/dist"
cp "$work"/miniq_*_all.deb "$src/dist/"
deb=$(ls "$src"/dist/miniq_*_all.deb | tail -n 1)
echo "built $deb"
# The Cockpit page, its own package (0.2.0's tree had none).
if ls "$work"/cockpit-miniq_*_all.deb >/dev/null 2>&1; then
    cp "$work"/cockpit-miniq_*_all.deb "$src/dist/"
    page=$(ls "$src"/dist/cockpit-miniq_*_all.deb | tail -n 1)
    echo "built $page"
    lintian --fail-on error "$deb" "$page"
else
    lintian --fail-on error "$deb"
fi
