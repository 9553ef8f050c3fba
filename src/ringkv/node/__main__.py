"""``python -m ringkv.node ...``: the same as ``ringkv node ...``."""

import sys

from ringkv.node.main import main

raise SystemExit(main(sys.argv[1:]))
