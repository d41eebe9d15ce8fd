#!/usr/bin/env bash
# Remove the ssum-edge service and its code. Idempotent. Keeps configuration, keys, mosaics
# and the engine cache unless --purge is given.
#
#   sudo deploy/uninstall.sh [--purge]
#   deploy/uninstall.sh --root /tmp/stage [--purge]     # the staged tree of install.sh --root
set -euo pipefail

ROOT=""
PURGE=0
SERVICE_USER=ssum-edge

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

ROOT=${ROOT%/}
log() { echo "uninstall.sh: $*"; }
on_system() { [[ -z "$ROOT" ]]; }

if on_system && [[ $(id -u) -ne 0 ]]; then
    echo "uninstall.sh: run as root (or use --root DIR)" >&2
    exit 1
fi

if on_system && [[ -d /run/systemd/system ]]; then
    systemctl disable --now ssum-edge.service 2>/dev/null || true
fi
rm -f "$ROOT/etc/systemd/system/ssum-edge.service"
if on_system && [[ -d /run/systemd/system ]]; then systemctl daemon-reload; fi
rm -rf "$ROOT/opt/ssum-edge"
log "removed the service and $ROOT/opt/ssum-edge"

if [[ $PURGE -eq 1 ]]; then
    rm -rf "$ROOT/etc/ssum-edge" "$ROOT/var/lib/ssum-edge" "$ROOT/var/cache/ssum-edge"
    if on_system && getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
    if on_system && getent group "$SERVICE_USER" >/dev/null; then groupdel "$SERVICE_USER"; fi
    log "purged configuration, keys, mosaics, engine cache and the $SERVICE_USER user"
else
    log "kept $ROOT/etc/ssum-edge, $ROOT/var/lib/ssum-edge, $ROOT/var/cache/ssum-edge (--purge removes them)"
fi
