#!/usr/bin/env bash
# Machine setup for Batcomputer development on Debian bookworm (run as root).
# Idempotent: every step checks first, so a second run on a ready machine is a
# quick no-op. Only the Debian archive, PyPI and npm are contacted.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/batcomputer"
azurite_version="3.35.0"
azurite_dir="$cache_root/tools/azurite"

debian_packages=(
  # the local Kubernetes cluster (build from Debian's source package, run it)
  golang-go rsync jq dpkg-dev etcd-server containerd runc containernetworking-plugins
  iptables conntrack socat iproute2 openssl gcc libc6-dev debootstrap buildah
  golang-github-modern-go-reflect2-dev
  # browser, Lua health checks, load tests, Azurite's runtime
  chromium chromium-driver lua5.4 wrk nodejs
  # Prometheus and promtool: the monitoring tests check the chart's rules and scrape pods
  prometheus
  # the security scan test watches checkov for network connections
  strace
)
# nodesource's nodejs already carries npm and conflicts with Debian's npm package.
command -v npm >/dev/null 2>&1 || debian_packages+=(npm)

log() { printf '[bootstrap] %s\n' "$*"; }

missing_packages() {
  local package
  for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed$' \
      || printf '%s\n' "$package"
  done
}

apt_lists_fresh=0
apt_update_once() {
  ((apt_lists_fresh)) && return
  log "apt-get update"
  apt-get update -q
  apt_lists_fresh=1
}

policy=/usr/sbin/policy-rc.d
saved_policy="$policy.batcomputer-saved"

block_service_starts() {
  [[ -e $policy ]] && cp -p "$policy" "$saved_policy"
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
}

restore_service_starts() {
  if [[ -e $saved_policy ]]; then mv -f "$saved_policy" "$policy"; else rm -f "$policy"; fi
}

install_debian_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  if ((${#missing[@]} == 0)); then
    log "Debian packages: all present"
    return
  fi
  log "Debian packages to install: ${missing[*]}"
  # No systemd here, and nothing (containerd, etcd) may start on its own: the
  # cluster tooling starts exactly what it needs and stops it by PID.
  block_service_starts
  trap restore_service_starts EXIT
  apt_update_once
  log "apt-get install (${#missing[@]} packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  restore_service_starts
  trap - EXIT
}

# The cluster tooling fetches Kubernetes with `apt-get source`, which needs a
# deb-src entry mirroring the existing deb entry of the Debian archive.
ensure_deb_src() {
  local sources=/etc/apt/sources.list.d/batcomputer-src.sources
  if [[ -e $sources ]]; then
    log "deb-src entry: present"
    return
  fi
  log "adding deb-src entry $sources"
  cat >"$sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_update_once
}

ensure_venv() {
  local venv="$repo_root/.venv"
  local stamp="$venv/.batcomputer-pyproject.sha256"
  local wanted
  # Both distributions: the product and the developer tooling.
  wanted="$(cat "$repo_root/pyproject.toml" "$repo_root/devtools/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [[ -x $venv/bin/python && -e $stamp && "$(cat "$stamp")" == "$wanted" ]]; then
    log "Python venv: up to date"
    return
  fi
  if [[ ! -x $venv/bin/python ]]; then
    log "creating $venv"
    python3 -m venv "$venv"
  fi
  # Product first, then the tooling: the tooling's commands must outlive the
  # product's reinstall when an older layout had them in the product.
  log "pip install -e '.[server,train,operator]'; pip install -e devtools"
  "$venv/bin/pip" install -q -e "$repo_root[server,train,operator]"
  "$venv/bin/pip" install -q -e "$repo_root/devtools"
  printf '%s\n' "$wanted" >"$stamp"
}

ensure_azurite() {
  if [[ -x $azurite_dir/node_modules/.bin/azurite-blob ]] \
    && grep -q "\"version\": \"$azurite_version\"" "$azurite_dir/node_modules/azurite/package.json"; then
    log "Azurite $azurite_version: present"
    return
  fi
  log "npm install azurite@$azurite_version into $azurite_dir"
  mkdir -p "$azurite_dir"
  npm install --prefix "$azurite_dir" --no-audit --no-fund --silent "azurite@$azurite_version"
}

ensure_deb_src
install_debian_packages
ensure_venv
ensure_azurite
log "done"
