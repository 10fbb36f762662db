import sys

from memmap.cli import main

sys.exit(main())
