"""The one line format of training's own messages on stdout."""


def log(msg: str) -> None:
    print(f"[training] {msg}", flush=True)
