"""`python -m tests.registered_cli MODULE ARG...`: `python -m MODULE ARG...` with a weight set
registered first, as a user's script registers its own (keras_resnet.weights.register lasts for
its process). README's IMAGENET1K_V2 commands run this way where torchvision's server cannot be
reached: the same CLI code, a local checkpoint.

$REGISTERED_WEIGHTS: register()'s keyword arguments as a JSON object, with "name".
"""

import json
import os
import runpy
import sys

VARIABLE = "REGISTERED_WEIGHTS"


def main() -> None:
    from keras_resnet import weights

    spec = json.loads(os.environ[VARIABLE])
    weights.register(spec.pop("name"), **spec)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
