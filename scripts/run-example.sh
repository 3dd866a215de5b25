#!/usr/bin/env bash
# Sets up the checkout, then serves examples/flask_app.py with mercy on
# http://127.0.0.1:8000/ (2 worker processes, 4 threads each).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

cat <<MSG

mercy serves examples/flask_app.py on http://127.0.0.1:8000/
  try:    curl http://127.0.0.1:8000/   curl http://127.0.0.1:8000/worker
  reload: kill -HUP $$     (graceful: new workers start, old ones retire)
  stop:   Ctrl-C, or kill -TERM $$ (graceful)

MSG

# exec keeps this shell's pid ($$) for the master, as printed above.
exec target/release/mercy --http 127.0.0.1:8000 \
    --wsgi-file examples/flask_app.py \
    --processes 2 --threads 4 \
    --virtualenv .venv
