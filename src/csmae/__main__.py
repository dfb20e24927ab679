import sys

from csmae.cli import main

sys.exit(main())
