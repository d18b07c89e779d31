#!/usr/bin/env bash
# Installs every build and test dependency of specd on a fresh Debian 12 (or Ubuntu 24.04)
# machine. Run as root (or with sudo). Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi

packages=(
    build-essential make pkg-config git ca-certificates
    clang llvm libclang-rt-dev clang-format   # libFuzzer runtime (make fuzz), format check
    libzmq3-dev libmsgpack-dev libhiredis-dev libmicrohttpd-dev
    libyaml-dev libcjson-dev libxxhash-dev libpcre2-dev
    redis-server                      # tests start private servers on free ports
    python3 python3-redis python3-pytest python3-yaml
)

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "specd: build and test dependencies installed"
