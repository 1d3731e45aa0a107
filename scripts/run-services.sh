#!/usr/bin/env bash
# Start the API in the background and the chat UI in the foreground; stop both on exit.
set -euo pipefail
BIN=${1:-.venv/bin}
"$BIN/rag" serve &
api=$!
trap 'kill $api 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 120); do
  if "$BIN/python" -c "import httpx,sys,os; sys.exit(0 if httpx.get(os.environ.get('RAG_API_URL','http://127.0.0.1:8000')+'/readyz').status_code==200 else 1)" 2>/dev/null; then
    break
  fi
  sleep 1
done
echo "API: ${RAG_API_URL:-http://127.0.0.1:8000}  UI: http://127.0.0.1:${RAG_UI_PORT:-8501}"
"$BIN/rag" ui
