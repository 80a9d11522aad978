"""`python -m training.launch`: N local training.fit workers under MultiWorkerMirroredStrategy.

    python -m training.launch --nproc 2 [--max-restarts 3] -- --arch resnet18 --dataset mnist ...

Like `torchrun --standalone`: every worker gets a TF_CONFIG naming all of them on free loopback
ports; their output is streamed with a "[worker i]" prefix; the exit status is the chief's
(worker 0). When a worker dies (a signal, or an exit other than 0 / 2 bad input / 3 diverged),
the others are stopped and all are started again with --resume from the last completed epoch
(the run directory's state.json), at most --max-restarts times. Bad input and divergence are
not retried: a second try would fail the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from keras_resnet import _cli

NO_RETRY = (0, 2, 3)  # ok, bad input, diverged: a restart cannot change these
STOP_GRACE_S = 10.0

EPILOG = """exit status: the chief's (worker 0) exit status of its last attempt: 0 trained and
reported; 2 bad input or usage; 3 training diverged; 1 failed (a worker kept dying after
--max-restarts restarts, or an internal error)."""


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def option_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _stream(proc: subprocess.Popen, prefix: str, out) -> None:
    for line in iter(proc.stdout.readline, ""):
        out.write(f"{prefix}{line}")
        out.flush()


class Workers:
    """One attempt: N worker processes, each in its own process group."""

    def __init__(self, nproc: int, fit_argv: list[str], threads: int | None):
        ports = free_ports(nproc)
        self.procs = []
        self.threads = []
        for i in range(nproc):
            env = dict(os.environ, TF_CONFIG=tf_config(ports, i), PYTHONUNBUFFERED="1")
            if threads:
                # Workers sharing one machine would each start a thread per core.
                env.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
                env.setdefault("OMP_NUM_THREADS", str(threads))
            proc = subprocess.Popen(
                [sys.executable, "-m", "training.fit", "--strategy", "multi_worker", *fit_argv],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)
            log(f"worker {i} started (pid {proc.pid}, 127.0.0.1:{ports[i]})")
            t = threading.Thread(target=_stream, args=(proc, f"[worker {i}] ", sys.stdout),
                                 daemon=True)
            t.start()
            self.procs.append(proc)
            self.threads.append(t)

    def stop(self) -> list[int]:
        for p in self.procs:
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()
        for t in self.threads:
            t.join(timeout=5)
        return [p.returncode for p in self.procs]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def log(msg: str) -> None:
    print(f"[launch] {msg}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _cli.ArgumentParser(
        prog="python -m training.launch", epilog=EPILOG,
        description="Run training.fit as N local workers (MultiWorkerMirroredStrategy over "
                    "loopback), restarting all of them from the last completed epoch when one "
                    "dies. Options after -- go to training.fit (see python -m training.fit "
                    "--help); --run-dir is chosen if not given.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--nproc", type=_cli.positive_int, required=True,
                        help="number of worker processes (worker 0 is the chief)")
    parser.add_argument("--max-restarts", type=_cli.non_negative_int, default=3,
                        help="restarts of all workers after a failure before giving up")
    parser.add_argument("--threads-per-worker", type=_cli.non_negative_int, default=None,
                        help="TensorFlow intra-op threads of each worker (default: the CPU "
                             "count divided by --nproc; 0 = TensorFlow's default)")
    parser.add_argument("fit_args", nargs=argparse.REMAINDER,
                        help="-- then training.fit options")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fit_argv = _cli.after_double_dash(args.fit_args)
    if not fit_argv:
        parser.error("give training.fit options after --, e.g. -- --arch resnet18 "
                     "--dataset digits")
    for own in ("--strategy", "--cpu-replicas"):
        if option_value(fit_argv, own) is not None:
            parser.error(f"{own} is set by the launcher (multi_worker, one replica per worker); "
                         "leave it out of the training.fit options")
    run_dir = option_value(fit_argv, "--run-dir")
    if run_dir is None:
        arch = option_value(fit_argv, "--arch") or "resnet"
        dataset = option_value(fit_argv, "--dataset") or "data"
        run_dir = os.path.join("runs", f"{arch}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        fit_argv += ["--run-dir", run_dir]
        log(f"run directory {run_dir}")
    return _cli.exit_status(lambda: _supervise(args, fit_argv, run_dir))


def _supervise(args, fit_argv: list[str], run_dir: str) -> int:
    """Starts the workers and restarts them all after a failure: the exit status of the run."""
    threads = args.threads_per_worker
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // args.nproc)

    stopping = []

    def forward(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    attempt = 0
    argv_now = fit_argv
    while True:
        workers = Workers(args.nproc, argv_now, threads or None)
        codes, failed = None, None
        while codes is None:
            if stopping:
                log(f"signal {stopping[0]}: stopping the workers")
                workers.stop()
                return 128 + stopping[0]
            codes, failed = _poll(workers)
        final = workers.stop()
        if failed is None:
            given_up = next((c for c in codes if c in (2, 3)), None)
            status = final[0] if given_up is None or final[0] in NO_RETRY else given_up
            log(f"workers ended with {final}; exit status {status}")
            return status
        attempt += 1
        what = (f"killed by signal {-codes[failed]}" if codes[failed] < 0
                else f"exited with {codes[failed]}")
        if attempt > args.max_restarts:
            log(f"worker {failed} {what}; no restarts left (--max-restarts "
                f"{args.max_restarts}): giving up")
            return 1
        resumable = os.path.isfile(os.path.join(run_dir, "state.json"))
        argv_now = fit_argv + (["--resume"] if resumable and "--resume" not in fit_argv else [])
        log(f"worker {failed} {what}; restarting all {args.nproc} workers "
            f"({attempt}/{args.max_restarts}) "
            + ("with --resume from the last completed epoch" if resumable
               else "from the start (no epoch had completed)"))


def _poll(workers: Workers):
    """One short wait: (codes, failed) once the attempt is decided, else (None, None)."""
    codes = [p.poll() for p in workers.procs]
    for i, code in enumerate(codes):
        if code is not None and code not in NO_RETRY:
            return codes, i
    # Bad input or divergence on any worker: the others would wait for it in the next
    # collective forever.
    if all(c is not None for c in codes) or any(c in (2, 3) for c in codes):
        return codes, None
    time.sleep(0.2)
    return None, None


if __name__ == "__main__":
    sys.exit(main())
