import sys

from wan_core.cli import main

sys.exit(main())
