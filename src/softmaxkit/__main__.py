import sys

from softmaxkit.tools.cli import main

sys.exit(main())
