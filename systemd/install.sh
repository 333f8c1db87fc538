#!/usr/bin/env bash
# Installs the edge-vos units: sudo bash systemd/install.sh [--prefix DIR] [--config configs/cpu.yaml]
#   --prefix  the checkout whose .venv runs the service (default: this checkout; run tools/setup.sh first)
#   --config  copied to /etc/edge-vos/config.yaml (and cam0.yaml for the template) unless they exist
# Then:  systemctl enable --now edge-vos           (every camera of config.yaml's streams:, or one camera)
#        systemctl enable --now edge-vos@cam0      (one instance per /etc/edge-vos/<name>.yaml)
# DESTDIR=/tmp/root installs into a staging tree and skips systemctl (used by the tests).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$here"
config="$here/configs/cpu.yaml"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$(cd "$2" && pwd)"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
dest="${DESTDIR:-}"
exe="$prefix/.venv/bin/edge-vos"
if [ ! -x "$exe" ]; then
  echo "$exe not found: run 'bash tools/setup.sh' in $prefix first" >&2
  exit 1
fi
"$exe" run --config "$config" --print-config >/dev/null  # refuse to install an invalid config
install -d -m 0755 "$dest/etc/systemd/system" "$dest/etc/edge-vos"
for unit in edge-vos.service edge-vos@.service; do
  sed "s|/opt/edge-vos/.venv/bin/edge-vos|$exe|" "$here/systemd/$unit" > "$dest/etc/systemd/system/$unit"
  chmod 0644 "$dest/etc/systemd/system/$unit"
done
for name in config.yaml cam0.yaml; do
  [ -e "$dest/etc/edge-vos/$name" ] || install -m 0644 "$config" "$dest/etc/edge-vos/$name"
done
if [ -z "$dest" ]; then
  systemctl daemon-reload
  echo "installed; start with: systemctl enable --now edge-vos   (logs: journalctl -u edge-vos -f)"
else
  echo "installed into $dest"
fi
