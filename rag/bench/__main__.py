"""`python -m rag.bench serve <settings.json> <port>`: the HTTP benchmark's server, run in a child process."""

import sys
from pathlib import Path

from rag.bench.http import serve

if len(sys.argv) == 4 and sys.argv[1] == "serve":
    serve(Path(sys.argv[2]), int(sys.argv[3]))
else:
    sys.exit("usage: python -m rag.bench serve <settings.json> <port>")
