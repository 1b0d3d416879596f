import sys

from trillium.inference.service.cli import main

sys.exit(main())
