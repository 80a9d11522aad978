import sys

from benchmarks.deploy.latency import main

sys.exit(main())
