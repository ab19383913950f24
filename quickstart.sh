#!/usr/bin/env bash
# Weir's quick start: builds the gateway and the demo backend, starts both on loopback,
# and prints requests to try. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")"

GATEWAY=127.0.0.1:8080
ADMIN=127.0.0.1:9901
BACKEND=127.0.0.1:9000

echo "==> building weir and the demo backend"
cargo build -p weir -p weir-demo-backend

echo "==> building the plugins (wasm32-wasip2)"
if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 >/dev/null
fi
# The same target dir the tests build the plugins in (see tests/e2e/guests.rs).
cargo build --release --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml --target-dir target/wasm-guests

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "==> starting the demo backend on $BACKEND"
target/debug/weir-demo-backend "$BACKEND" &
pids+=($!)

echo "==> starting weir on examples/quickstart/weir.toml"
target/debug/weir run -c examples/quickstart/weir.toml &
pids+=($!)

# Wait (bounded) until the gateway answers.
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/${GATEWAY%:*}/${GATEWAY#*:}") 2>/dev/null; then break; fi
    sleep 0.1
done

cat <<TXT

Weir is serving on http://$GATEWAY (admin on http://$ADMIN). Try:

  curl -i http://$GATEWAY/status          # mock route: answered by the gateway itself
  curl -i http://$GATEWAY/users           # proxied to the demo backend
  curl -i http://$GATEWAY/users/2         # path parameter, proxied
  curl -i http://$GATEWAY/nowhere         # 404, JSON error with a request id
  curl -i -X DELETE http://$GATEWAY/users # 405 with Allow
  curl -i http://$GATEWAY/users/%2e%2e/x  # 400: ambiguous path encodings are refused
  curl -i http://$GATEWAY/echo/secure     # 403: this route needs an API key
  curl -i -H 'x-api-key: weir-demo-key' http://$GATEWAY/echo/secure
                                          # 200 with RateLimit-* headers (demo plan: 1/s, bursts of 3; a 4th
                                          # request within a second gets 429 with Retry-After)
  curl -i http://$GATEWAY/hello/users     # answered by a Wasm plugin (plugins/hello)
  curl -i -X POST -d '{"name":"Ada"}' http://$GATEWAY/hello/users
                                          # 201: the plugin keeps users in its KV store
  curl -i http://$ADMIN/healthz           # admin listener
  target/debug/weir routes -c examples/quickstart/weir.toml

Ctrl-C stops both.
TXT
wait
