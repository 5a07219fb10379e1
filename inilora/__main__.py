import sys

from inilora.cli import main

sys.exit(main())
