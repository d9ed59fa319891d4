#!/usr/bin/env bash
# Sets berth up on a fresh Debian machine and runs a first sandboxed command:
# installs the Debian packages berth needs, builds berth, installs it on PATH,
# checks the engine (berth doctor), builds the default image offline, and runs
# `berth run -- echo …` in a hardened sandbox, then a long-lived sandbox with the agent, a
# sandbox behind its egress gateway, and shows how berth reads a coding agent's event stream.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# gVisor (runsc): optional for users (`--runtime runsc`), used by the test suite.
command -v runsc >/dev/null 2>&1 || missing+=(runsc)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  say "starting the Docker engine"
  as_root systemctl start docker 2>/dev/null || as_root service docker start 2>/dev/null || true
fi

command -v cargo >/dev/null 2>&1 || { echo "berth needs a Rust toolchain (https://rustup.rs)"; exit 1; }
say "building berth (release), its static in-sandbox agent and its egress gateway"
cargo build --release --locked -p berth-cli
agent=$(scripts/build-agent)
gateway=$(scripts/build-agent berth-gateway)
bindir="${CARGO_HOME:-$HOME/.cargo}/bin"
install -D -m 0755 target/release/berth "$bindir/berth"
install -D -m 0755 "$agent" "$bindir/berth-agent"
install -D -m 0755 "$gateway" "$bindir/berth-gateway"
export PATH="$bindir:$PATH"
echo "installed $bindir/berth, $bindir/berth-agent and $bindir/berth-gateway"

say "berth doctor"
berth doctor

say "berth image build"
berth image build

say "berth run -- echo hello from a berth sandbox"
berth run -- sh -c 'echo "hello from a berth sandbox: uid $(id -u), network: $(ls /sys/class/net)"'

say "a long-lived sandbox: berth create, exec, rm"
id=$(berth create)
berth exec "$id" -- sh -c 'echo "exec in sandbox $(hostname) as uid $(id -u); pid 1 is $(cat /proc/1/comm)"'
berth rm -f "$id" >/dev/null

say "egress by domain: a sandbox reaches only what --allow-host names, through its gateway"
berth run --allow-host example.com -- sh -c '
  echo "proxy: $HTTPS_PROXY"
  echo "not allowed: $(wget -q -O- http://not-allowed.example/ 2>&1 | head -1)"
  echo "around the proxy: $(nc -w 2 1.1.1.1 80 </dev/null 2>&1 | head -1)"'

say "coding agents: a saved Claude Code event stream, normalized (berth agent events)"
berth agent events --cli claude fixtures/agent-transcripts/claude-streamjson-tooluse-bash-v2.1.3.assembled.jsonl
if docker image inspect berth/claude-cli >/dev/null 2>&1; then
  echo "berth/claude-cli is present: try berth agent run --workspace . --secret ANTHROPIC_API_KEY --prompt \"…\""
else
  echo "to run Claude Code in a sandbox, build its image where a registry is reachable (images/README.md),"
  echo "then: berth agent run --workspace . --secret ANTHROPIC_API_KEY --prompt \"fix the failing test\""
fi

say "berth as a service: berth serve, a key, and the same verbs through it (remote mode)"
server_state=$(mktemp -d)
key=$(BERTH_STATE_DIR="$server_state" berth server init 2>/dev/null)
BERTH_STATE_DIR="$server_state" berth serve --listen 127.0.0.1:0 2>"$server_state/serve.log" &
server_pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$server_state/serve.log" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^berth: listening on //p' "$server_state/serve.log")
echo "server at $url; its API is described at $url/v1/openapi.json"
id=$(BERTH_SERVER="$url" BERTH_API_KEY="$key" berth create)
BERTH_SERVER="$url" BERTH_API_KEY="$key" berth exec "$id" -- sh -c 'echo "exec through the server in sandbox $(hostname)"'
BERTH_SERVER="$url" BERTH_API_KEY="$key" berth rm -f "$id" >/dev/null
kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true
rm -rf "$server_state"
