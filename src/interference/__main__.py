import sys

from interference.cli import main

sys.exit(main())
