"""``python -m keras_resnet.convert``."""

import sys

from keras_resnet.convert.cli import main

sys.exit(main())
