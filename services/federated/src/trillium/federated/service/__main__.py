import sys

from trillium.federated.service.cli import main

sys.exit(main())
