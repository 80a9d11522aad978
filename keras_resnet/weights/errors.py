"""The errors of keras_resnet.weights: plain ValueErrors, whose one-line message says what to do.
The command-line layer maps them to exit status 2."""


class WeightsError(ValueError):
    """A weight set that cannot be had as asked (an unknown name, a failed download, a file
    whose hash differs, a value a weight set cannot hold): one line, naming what to do. The
    CLIs exit 2 with it."""


class WeightsUnavailable(WeightsError):
    """The checkpoint could not be had (offline, blocked, a server error, an unwritable cache):
    the message names the URL and the exact cache path where the file can be placed by hand."""


class WeightsHashMismatch(WeightsError):
    """A checkpoint whose sha256 does not start with the set's hash: refused, nothing cached."""
