#!/usr/bin/env bash
# Provide a real Consul agent binary and print its path.
# Order: $MESHSERVE_CONSUL_BIN, `consul` on PATH, .tools/consul/consul, else Debian bullseye's
# consul 1.8.7 package fetched with apt (separate sources list) and unpacked into .tools/consul/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.tools/consul"

if [[ -n "${MESHSERVE_CONSUL_BIN:-}" && -x "${MESHSERVE_CONSUL_BIN}" ]]; then
  echo "$MESHSERVE_CONSUL_BIN"; exit 0
fi
if command -v consul >/dev/null 2>&1; then
  command -v consul; exit 0
fi
if [[ -x "$DEST/consul" ]]; then
  echo "$DEST/consul"; exit 0
fi

echo "installing consul 1.8.7 from Debian bullseye into $DEST" >&2
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/archives/partial" "$DEST"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ -f "$KEYRING" ]]; then
  echo "deb [signed-by=$KEYRING] http://deb.debian.org/debian bullseye main" > "$WORK/sources.list"
else
  echo "deb [trusted=yes] http://deb.debian.org/debian bullseye main" > "$WORK/sources.list"
fi
APT_OPTS=(-o "Dir::Etc::SourceList=$WORK/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache::Archives=$WORK/archives"
          -o "APT::Sandbox::User=root")
apt-get "${APT_OPTS[@]}" update >&2
(cd "$WORK" && apt-get "${APT_OPTS[@]}" download consul >&2)
dpkg -x "$WORK"/consul_*.deb "$WORK/unpacked"
install -m 0755 "$WORK/unpacked/usr/bin/consul" "$DEST/consul"
"$DEST/consul" version >&2
echo "$DEST/consul"
