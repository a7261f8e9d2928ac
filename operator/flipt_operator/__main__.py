import sys

from flipt_operator.cli import main

sys.exit(main())
