#!/usr/bin/env bash
# Installs what the gateway's tests need on Debian 12: Prosody (the real XMPP server the integration
# tests start on loopback; ejabberd too, for what it does differently with component connections), GnuPG (the legacy PGP user's implementation) and python-omemo with
# slixmpp (the independent OMEMO implementation for interop tests), PostgreSQL (the tests start their
# own cluster with initdb and pg_ctl for the keystore.url backend), then the npm packages.
# Idempotent: packages already present are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(prosody lua-dbi-sqlite3 ejabberd gnupg postgresql python3-omemo python3-oldmemo python3-twomemo python3-slixmpp python3-xmlschema python3-cryptography python3-potr python3-pycryptodome libotr5-dev gcc pkg-config)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A system Prosody service is not needed (tests start their own); leave it as the package set it up.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
