import sys

from ghostcrate.appliance.cli import main

sys.exit(main())
