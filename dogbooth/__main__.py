import sys

from dogbooth.cli import main

sys.exit(main())
