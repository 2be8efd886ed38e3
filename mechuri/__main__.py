import sys

from mechuri.cli import main

sys.exit(main())
