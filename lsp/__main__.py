import sys

from funcsight.lsp.cli import main

sys.exit(main())
