import sys

from lungfuse.app.cli.main import main

sys.exit(main())
