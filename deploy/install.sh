#!/usr/bin/env bash
# Install ssum-edge as a systemd service. Idempotent: run it again to upgrade the code; it
# never overwrites /etc/ssum-edge/edge.toml, the env file or keys.
#
#   sudo deploy/install.sh [--extra tensorrt] [--wheelhouse DIR] [--with-prometheus]
#                          [--with-grafana] [--no-enable]
#   deploy/install.sh --root /tmp/stage --no-venv      # stage into a directory, touch nothing else
#
# Layout: /opt/ssum-edge (virtualenv, docs, bundles), /etc/ssum-edge (edge.toml, ssum-edge.env,
# keys/), /var/lib/ssum-edge (mosaics), /var/cache/ssum-edge (TensorRT engines),
# /etc/systemd/system/ssum-edge.service. See docs/operations.md.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=""
EXTRA=""
WHEELHOUSE=""
MAKE_VENV=1
ENABLE=1
WITH_PROMETHEUS=0
WITH_GRAFANA=0
PYTHON=${PYTHON:-python3}
SERVICE_USER=ssum-edge

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
options:
  --root DIR         install below DIR instead of / (no user, chown or systemctl)
  --extra NAME       pip extra to install, e.g. tensorrt (default: none, onnxruntime on CPU)
  --wheelhouse DIR   install from wheels in DIR only (offline hosts)
  --no-venv          do not create the virtualenv or run pip
  --no-enable        install the unit but do not enable it
  --with-prometheus  install deploy/prometheus/{prometheus,alerts}.yml into /etc/prometheus
  --with-grafana     install the Grafana dashboard and provisioning files
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --extra) EXTRA=${2:?--extra needs a name}; shift 2 ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
        --no-venv) MAKE_VENV=0; shift ;;
        --no-enable) ENABLE=0; shift ;;
        --with-prometheus) WITH_PROMETHEUS=1; shift ;;
        --with-grafana) WITH_GRAFANA=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

ROOT=${ROOT%/}
OPT=$ROOT/opt/ssum-edge
ETC=$ROOT/etc/ssum-edge
STATE=$ROOT/var/lib/ssum-edge
CACHE=$ROOT/var/cache/ssum-edge
UNIT_DIR=$ROOT/etc/systemd/system

log() { echo "install.sh: $*"; }
on_system() { [[ -z "$ROOT" ]]; }

if on_system && [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: run as root (or use --root DIR to stage into a directory)" >&2
    exit 1
fi

# owner USER:GROUP MODE PATH... : set mode always, ownership only on a real install.
owner() {
    local who=$1 mode=$2
    shift 2
    chmod "$mode" "$@"
    if on_system; then chown "$who" "$@"; fi
}

create_user() {
    on_system || return 0
    if ! getent group "$SERVICE_USER" >/dev/null; then
        groupadd --system "$SERVICE_USER"
        log "created group $SERVICE_USER"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --gid "$SERVICE_USER" --home-dir /var/lib/ssum-edge \
            --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
        log "created user $SERVICE_USER"
    fi
    # NVIDIA device nodes are usually 0666; where the driver restricts them to a group, join it.
    if getent group video >/dev/null; then usermod -a -G video "$SERVICE_USER"; fi
}

install_code() {
    install -d -m 0755 "$OPT" "$OPT/docs" "$OPT/bundles"
    install -m 0644 "$SRC"/docs/*.md "$OPT/docs/"
    [[ $MAKE_VENV -eq 1 ]] || return 0
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "install.sh: $PYTHON is older than 3.11" >&2; exit 1; }
    [[ -x "$OPT/.venv/bin/python" ]] || "$PYTHON" -m venv "$OPT/.venv"
    local spec=$SRC pip=("$OPT/.venv/bin/python" -m pip install --quiet --upgrade)
    [[ -z "$EXTRA" ]] || spec="${SRC}[${EXTRA}]"
    [[ -z "$WHEELHOUSE" ]] || pip+=(--no-index --find-links "$WHEELHOUSE")
    "${pip[@]}" "$spec"
    "$OPT/.venv/bin/ssum" --help >/dev/null
    log "installed ssum-edge${EXTRA:+[$EXTRA]} into $OPT/.venv"
}

install_config() {
    install -d -m 0755 "$ETC"
    install -d -m 0750 "$ETC/keys" "$ETC/keys/authorized"
    owner "root:$SERVICE_USER" 0750 "$ETC/keys" "$ETC/keys/authorized"
    copy_once "$SRC/deploy/edge.example.toml" "$ETC/edge.toml"
    copy_once "$SRC/systemd/ssum-edge.env" "$ETC/ssum-edge.env"
    owner "root:$SERVICE_USER" 0640 "$ETC/edge.toml" "$ETC/ssum-edge.env"
}

# copy_once SRC DEST: install SRC as DEST unless DEST exists (local edits are kept).
copy_once() {
    if [[ -e "$2" ]]; then
        log "kept existing $2"
    elif [[ -e "$1" ]]; then
        install -m 0640 "$1" "$2"
        log "wrote $2"
    else
        echo "install.sh: $1 is missing from the source tree" >&2
        exit 1
    fi
}

install_data_dirs() {
    install -d -m 0750 "$STATE" "$STATE/mosaics" "$CACHE" "$CACHE/engines"
    owner "$SERVICE_USER:$SERVICE_USER" 0750 "$STATE" "$STATE/mosaics" "$CACHE" "$CACHE/engines"
}

install_unit() {
    install -d -m 0755 "$UNIT_DIR"
    install -m 0644 "$SRC/systemd/ssum-edge.service" "$UNIT_DIR/ssum-edge.service"
    if on_system && [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
        if [[ $ENABLE -eq 1 ]]; then systemctl enable ssum-edge.service; fi
    else
        log "not running systemd here: skipped daemon-reload and enable"
    fi
}

install_monitoring() {
    if [[ $WITH_PROMETHEUS -eq 1 ]]; then
        install -d -m 0755 "$ROOT/etc/prometheus"
        install -m 0644 "$SRC/deploy/prometheus/prometheus.yml" "$SRC/deploy/prometheus/alerts.yml" \
            "$ROOT/etc/prometheus/"
        log "installed Prometheus config (reload: systemctl reload prometheus)"
    fi
    if [[ $WITH_GRAFANA -eq 1 ]]; then
        local prov=$ROOT/etc/grafana/provisioning
        install -d -m 0755 "$prov/datasources" "$prov/dashboards" \
            "$ROOT/var/lib/grafana/dashboards/ssum-edge"
        install -m 0644 "$SRC"/deploy/grafana/provisioning/datasources/*.yml "$prov/datasources/"
        install -m 0644 "$SRC"/deploy/grafana/provisioning/dashboards/*.yml "$prov/dashboards/"
        install -m 0644 "$SRC/deploy/grafana/dashboards/ssum-edge.json" \
            "$ROOT/var/lib/grafana/dashboards/ssum-edge/"
        log "installed Grafana dashboard (restart grafana-server to pick it up)"
    fi
}

create_user
install_code
install_config
install_data_dirs
install_unit
install_monitoring
log "done. Next: edit $ETC/edge.toml, then: systemctl start ssum-edge; journalctl -u ssum-edge -f"
