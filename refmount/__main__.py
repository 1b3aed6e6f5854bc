import sys

from refmount.cli.commands import main

if __name__ == "__main__":  # not when a scan worker process imports it
    sys.exit(main())
