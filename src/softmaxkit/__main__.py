import sys

from softmaxkit.cli import main

sys.exit(main())
