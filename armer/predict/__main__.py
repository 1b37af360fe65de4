import sys

from armer.predict.cli import main

sys.exit(main())
