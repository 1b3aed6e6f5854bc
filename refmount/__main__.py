import sys

from refmount.cli.commands import main

sys.exit(main())
