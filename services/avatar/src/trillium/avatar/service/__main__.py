import sys

from trillium.avatar.service.cli import main

sys.exit(main())
