#!/bin/bash
# Runs as PID 1 of fresh PID, mount, UTS, IPC, network and cgroup namespaces
# (see testbed.py) and turns itself into a booted systemd whose root is an
# overlay of the host's / with all writes in a tmpfs.  Nothing here writes to
# the host: every mount is private to the new mount namespace.
#
# Environment: TESTBED_SCRATCH (an empty host directory to mount the tmpfs
# on), TESTBED_CGROUPS ("dir:options ..." for each cgroup v1 hierarchy, or
# "unified" alone on a pure cgroup v2 host), TESTBED_BINDS (host paths to
# bind read-only at the same place), TESTBED_SHARED (host paths to bind
# writable), TESTBED_HOSTNAME.
set -euo pipefail

S=$TESTBED_SCRATCH
mount -t tmpfs -o mode=0755,size=2g testbed "$S"
mkdir "$S/upper" "$S/work" "$S/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$S/upper,workdir=$S/work" "$S/root"
R=$S/root

mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --rbind /dev "$R/dev"
mount --make-rslave "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"

# Fresh cgroup mounts made inside the cgroup namespace: systemd needs them
# writable and rooted at the namespace's cgroup.
if [ "$TESTBED_CGROUPS" = unified ]; then
    mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
else
    mount -t tmpfs -o mode=0755 tmpfs "$R/sys/fs/cgroup"
    for spec in $TESTBED_CGROUPS; do
        dir=${spec%%:*}
        opts=${spec#*:}
        mkdir -p "$R/sys/fs/cgroup/$dir"
        if [ "$dir" = unified ]; then
            mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup/unified"
        else
            mount -t cgroup -o "$opts" cgroup "$R/sys/fs/cgroup/$dir"
        fi
    done
fi

for path in ${TESTBED_SHARED:-}; do
    mkdir -p "$R$path"
    mount --bind "$path" "$R$path"
done

for path in $TESTBED_BINDS; do
    mkdir -p "$R$path"
    mount --bind "$path" "$R$path"
    mount -o remount,bind,ro "$R$path"
    # Let unprivileged users of the sandbox reach it: the parents are
    # overlay directories, so this changes only the sandbox's copy.
    p=$(dirname "$path")
    while [ "$p" != / ]; do chmod o+x "$R$p"; p=$(dirname "$p"); done
done

# Units that would act on the host's hardware or clock, or are not wanted.
mkdir -p "$R/run/systemd/system"
for unit in systemd-remount-fs.service systemd-sysctl.service systemd-binfmt.service \
    systemd-modules-load.service systemd-timesyncd.service systemd-pstore.service \
    getty@tty1.service console-getty.service serial-getty@ttyS0.service postgresql.service \
    e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer man-db.timer fstrim.timer \
    e2scrub_all.timer dpkg-db-backup.timer logrotate.timer systemd-tmpfiles-clean.timer \
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount \
    sys-kernel-config.mount systemd-firstboot.service systemd-networkd.service \
    systemd-resolved.service cron.service docker.service containerd.service ssh.service; do
    ln -sf /dev/null "$R/run/systemd/system/$unit"
done

echo "$TESTBED_HOSTNAME" > "$R/etc/hostname"
hostname "$TESTBED_HOSTNAME"

cd "$R"
mkdir -p oldroot
pivot_root . oldroot
cd /
umount -l /oldroot
export container=other
exec /lib/systemd/systemd --unit=multi-user.target
