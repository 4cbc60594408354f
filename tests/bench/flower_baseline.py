#!/usr/bin/env python3
"""Flower baseline of the `federated` bench: seconds per FedAvg round and server peak memory.

Runs Flower's legacy gRPC bidi-streaming path on 127.0.0.1 with N participants and a model of
P float32 parameters (one tensor), and prints one JSON line on stdout; progress goes to stderr.
The path is ``flwr.server.start_server`` + ``flwr.client.start_client``: deprecated since
flwr 1.13, still shipped in 1.41 (implemented in ``flwr.compat``, re-exported under the old
names). Both sides get ``grpc_max_message_length`` explicitly; 1.41's default is already
2 GiB - 1 (its docstrings still say 512 MB), far above the ~4 MB a 1M-parameter round needs.

Process layout (the parent only supervises and samples; it imports neither flwr nor numpy)::

    parent ──spawn──► server   (this file, `_server`): start_server + TimedFedAvg, alone in
       │                         its process, so its RSS is the server's own
       ├──spawn──► clients 0   (this file, `_clients`): ceil(N/K) start_client threads,
       ├──spawn──► clients …     one gRPC channel each; K processes (--client-procs)
       └── every 20 ms: /proc/<server>/status (VmHWM, VmRSS), CPU ticks of all of them

Round time is measured inside the server: the strategy stamps the end of every aggregate_fit,
and round r lasts from the end of aggregate_fit(r-1) to the end of aggregate_fit(r) (round 1
from the return of configure_fit(1), i.e. once all N clients are connected). That covers all
the server does per round: broadcast, client work, upload, aggregation, the (empty) evaluate
phase. The first --warmup rounds are dropped. The server's CPU per round, the clients' CPU per
round and the CPU used by other processes meanwhile are reported for the timed rounds too.

Local training is trivial: a client returns the weights it received plus a constant delta and
reports num_examples = 100; the server checks the final model equals rounds × delta.

Client placement. Clients are threads in K processes (default: one per CPU) rather than one
process each, which costs ~100 MB and ~1 s of imports per client and, on 2 cores, nearly doubled the
round time at 50 clients. Flower's client stack costs more CPU per round than its server, so
with clients on the same small machine the run is CPU-bound; K from 1 to 10 and --pin (server
alone on the first CPU) changed the round time by less than the run-to-run noise.

Every child gets PR_SET_PDEATHSIG(SIGKILL) and the parent kills them all on any exit, so a
killed or failed run leaves no process behind. Linux only (/proc, sched_setaffinity, prctl).
"""

import argparse
import ctypes
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# Largest gRPC message either side accepts (flwr's own default in 1.41, 2 GiB - 1). A round
# message is about 4 bytes per parameter, so 1M parameters need ~4 MB.
GRPC_MAX_MESSAGE_LENGTH = 2_147_483_647
# Examples every client reports, so FedAvg weights all clients equally.
NUM_EXAMPLES = 100
# What "local training" adds to every weight.
DELTA = 1e-3
# How often the parent samples the server's memory and everyone's CPU counters.
SAMPLE_INTERVAL_S = 0.02
# How long the server may take to listen, clients to finish after the server.
STARTUP_TIMEOUT_S = 120.0
CLIENT_EXIT_TIMEOUT_S = 30.0
# Above this share of the machine used by others during the timed rounds, the run is noisy.
FOREIGN_CPU_WARN_PERCENT = 10.0
PR_SET_PDEATHSIG = 1


def log(message):
    print(f"[flower-baseline] {message}", file=sys.stderr, flush=True)


# --- parent -------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, required=True, help="clients per round (N)")
    parser.add_argument("--params", type=int, required=True, help="float32 parameters (P)")
    parser.add_argument("--rounds", type=int, required=True, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    parser.add_argument(
        "--client-procs",
        type=int,
        default=0,
        help="processes hosting the client threads (0: one per CPU, at most N)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the server alone on the first CPU and the clients on the others "
        "(default: let the scheduler place everything)",
    )
    parser.add_argument("--timeout-s", type=float, default=0, help="abort after this (0: never)")
    parser.add_argument("--verbose", action="store_true", help="pass Flower's own logs through")
    args = parser.parse_args(argv)
    for name in ("participants", "params", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.client_procs < 0:
        parser.error("--warmup and --client-procs must not be negative")
    args.server_cpus, args.client_cpus = split_cpus(pin=args.pin)
    if args.client_procs == 0:
        args.client_procs = len(args.client_cpus)
    args.client_procs = min(args.client_procs, args.participants)
    return args


def split_cpus(pin):
    """(server CPUs, client CPUs): the first allowed CPU for the server and the rest for the
    clients when pinning and there are two or more, else all CPUs for everyone."""
    allowed = sorted(os.sched_getaffinity(0))
    if pin and len(allowed) >= 2:
        return allowed[:1], allowed[1:]
    return allowed, allowed


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port, server, deadline):
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"Flower server exited early with code {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("Flower server did not listen in time")


def proc_status_bytes(pid, field):
    """A `kB` field of /proc/<pid>/status in bytes, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Children:
    """The spawned processes; kills whatever still runs on close."""

    def __init__(self, verbose):
        self.procs = []
        self.verbose = verbose

    def spawn(self, role_args, cpus, quiet):
        command = [sys.executable, os.path.abspath(__file__), *role_args,
                   "--parent", str(os.getpid()), "--cpus", ",".join(map(str, cpus))]
        env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
        stderr = None if self.verbose or not quiet else subprocess.DEVNULL
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env)
        self.procs.append(proc)
        return proc

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def machine_ticks():
    """(process, busy, total) clock ticks of the whole machine since boot, from /proc/stat:
    process = user + nice + system, the time that shows up in processes' own counters;
    busy adds interrupt time (where loopback networking is often accounted)."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, idle, iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    except (OSError, ValueError):
        return None
    process = user + nice + system
    return process, process + irq + softirq, process + irq + softirq + idle + iowait


def process_ticks(pid):
    """utime + stime clock ticks of `pid`, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


class CpuSampler:
    """CPU counters of the machine, the server, the clients and this process over time, so the
    timed window can be cut out afterwards (all processes share CLOCK_MONOTONIC)."""

    def __init__(self, server, clients):
        self.server, self.clients = server, clients
        self.samples = []

    def take(self):
        machine = machine_ticks()
        server = process_ticks(self.server.pid)
        clients = [process_ticks(client.pid) for client in self.clients]
        own = process_ticks("self")
        if machine is None or server is None or own is None or None in clients:
            return
        self.samples.append((time.monotonic(), machine, server, sum(clients), own))

    def window(self, start, end, rounds):
        """Usage between the monotonic times `start` and `end`, or {} without samples."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2 or inside[-1][1][2] <= inside[0][1][2]:
            return {}
        (_, m0, s0, c0, o0), (_, m1, s1, c1, o1) = inside[0], inside[-1]
        process, busy, total = (after - before for before, after in zip(m0, m1))
        ours = (s1 - s0) + (c1 - c0) + (o1 - o0)
        return {
            "clients_cpu_seconds_per_round": (c1 - c0) / os.sysconf("SC_CLK_TCK") / rounds,
            "machine_busy_percent": 100.0 * busy / total,
            "foreign_cpu_percent": max(0.0, 100.0 * (process - ours) / total),
        }


def client_slices(participants, procs):
    per_proc = math.ceil(participants / procs)
    return [(first, min(per_proc, participants - first))
            for first in range(0, participants, per_proc)]


def supervise(server, clients, sampler, deadline):
    """Samples the server's memory and everyone's CPU until the server exits; returns the
    largest VmHWM and VmRSS seen."""
    hwm_max, rss_max = 0, 0
    while server.poll() is None:
        hwm_max = max(hwm_max, proc_status_bytes(server.pid, "VmHWM") or 0)
        rss_max = max(rss_max, proc_status_bytes(server.pid, "VmRSS") or 0)
        sampler.take()
        for client in clients:
            if client.poll() not in (None, 0):
                raise RuntimeError(f"a client process failed with code {client.returncode}")
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(SAMPLE_INTERVAL_S)
    if server.returncode != 0:
        raise RuntimeError(f"Flower server failed with code {server.returncode}")
    return hwm_max, rss_max


def wait_clients(clients):
    deadline = time.monotonic() + CLIENT_EXIT_TIMEOUT_S
    for client in clients:
        code = client.wait(timeout=max(0.1, deadline - time.monotonic()))
        if code != 0:
            raise RuntimeError(f"a client process failed with code {code}")


def run(args, result_path):
    children = Children(args.verbose)
    try:
        started = time.monotonic()
        deadline = started + args.timeout_s if args.timeout_s > 0 else None
        port = free_port()
        os.sched_setaffinity(0, args.client_cpus)
        server = children.spawn(server_args(args, port, result_path), args.server_cpus, quiet=False)
        wait_listening(port, server, time.monotonic() + STARTUP_TIMEOUT_S)
        log(f"server pid {server.pid} listening (CPUs {args.server_cpus}); starting "
            f"{args.participants} clients in {args.client_procs} process(es) "
            f"(CPUs {args.client_cpus})")
        clients = [
            children.spawn(["_clients", "--port", str(port), "--first", str(first),
                            "--count", str(count)], args.client_cpus, quiet=True)
            for first, count in client_slices(args.participants, args.client_procs)
        ]
        sampler = CpuSampler(server, clients)
        hwm_sampled, rss_sampled = supervise(server, clients, sampler, deadline)
        wait_clients(clients)
        with open(result_path) as result_file:
            server_result = json.load(result_file)
        result = report(args, server_result, hwm_sampled, rss_sampled)
        boundaries = server_result["round_boundaries_monotonic"]
        result.update(sampler.window(boundaries[args.warmup], boundaries[-1], args.rounds))
        result["wall_seconds"] = time.monotonic() - started
        warn_if_noisy(result)
        return result
    finally:
        children.close()


def server_args(args, port, result_path):
    return [
        "_server", "--port", str(port), "--participants", str(args.participants),
        "--params", str(args.params), "--total-rounds", str(args.warmup + args.rounds),
        "--out", result_path, *(["--verbose"] if args.verbose else []),
    ]


def warn_if_noisy(result):
    foreign = result.get("foreign_cpu_percent")
    if foreign is not None and foreign > FOREIGN_CPU_WARN_PERCENT:
        log(f"warning: other processes used {foreign:.0f}% of the machine's CPU "
            "during the timed rounds; the numbers are noisy")


def report(args, server_result, hwm_sampled, rss_sampled):
    rounds = server_result["round_seconds"][args.warmup:]
    cpu = server_result["round_cpu_seconds"][args.warmup:]
    return {
        "system": "flower",
        "flwr_version": server_result["flwr_version"],
        "numpy_version": server_result["numpy_version"],
        "grpcio_version": server_result["grpcio_version"],
        "participants": args.participants,
        "params": args.params,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "client_procs": args.client_procs,
        "pinned": args.server_cpus != args.client_cpus,
        "seconds_per_round_median": statistics.median(rounds),
        "seconds_per_round": rounds,
        "server_cpu_seconds_per_round_median": statistics.median(cpu),
        "server_peak_rss_bytes": max(hwm_sampled, server_result["vm_hwm_bytes"] or 0),
        "server_sampled_max_rss_bytes": rss_sampled,
        "server_idle_rss_bytes": server_result["idle_rss_bytes"],
    }


def parent_main(argv):
    args = parse_args(argv)
    # SIGTERM and SIGHUP unwind like Ctrl-C, so `finally` kills the children.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="flower-baseline-") as temp:
        try:
            result = run(args, os.path.join(temp, "server.json"))
        except (RuntimeError, KeyboardInterrupt, OSError, subprocess.TimeoutExpired) as error:
            log(f"failed: {error!r}")
            return 1
    print(json.dumps(result), flush=True)
    return 0


# --- children -----------------------------------------------------------------------------


def child_setup(parent_pid, cpus):
    """Runs on `cpus` (a comma-separated list) and asks the kernel to SIGKILL this process when
    the parent dies (Linux only). Called before any thread exists, so all threads inherit both."""
    os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        sys.exit("parent is gone")


def proc_self_bytes(field):
    return proc_status_bytes("self", field)


def server_main(argv):
    parser = argparse.ArgumentParser()
    for name in ("--port", "--participants", "--params", "--total-rounds", "--parent"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--cpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    child_setup(args.parent, args.cpus)

    import logging

    import flwr
    import grpc
    import numpy as np
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    class TimedFedAvg(FedAvg):
        """FedAvg that stamps round boundaries (wall and process CPU time)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.boundaries, self.cpu_boundaries = [], []
            self.last_parameters = None

        def configure_fit(self, server_round, parameters, client_manager):
            instructions = super().configure_fit(server_round, parameters, client_manager)
            if not self.boundaries:  # returns once all N clients are connected
                self.stamp()
            return instructions

        def aggregate_fit(self, server_round, results, failures):
            if failures:
                raise RuntimeError(f"round {server_round}: {len(failures)} client failures")
            aggregated = super().aggregate_fit(server_round, results, failures)
            self.stamp()
            self.last_parameters = aggregated[0]
            seconds = self.boundaries[-1] - self.boundaries[-2]
            print(f"[flower-baseline] round {server_round}: {seconds:.3f} s",
                  file=sys.stderr, flush=True)
            return aggregated

        def stamp(self):
            self.boundaries.append(time.monotonic())
            self.cpu_boundaries.append(time.process_time())

    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    initial = ndarrays_to_parameters([np.zeros(args.params, dtype=np.float32)])
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.participants,
        min_evaluate_clients=0,
        min_available_clients=args.participants,
        accept_failures=False,
        initial_parameters=initial,
    )
    del initial
    idle_rss = proc_self_bytes("VmRSS")
    start_server(
        server_address=f"127.0.0.1:{args.port}",
        config=ServerConfig(num_rounds=args.total_rounds),
        strategy=strategy,
        grpc_max_message_length=GRPC_MAX_MESSAGE_LENGTH,
    )
    if len(strategy.boundaries) != args.total_rounds + 1:
        sys.exit(f"only {len(strategy.boundaries) - 1} of {args.total_rounds} rounds completed")
    check_model(parameters_to_ndarrays(strategy.last_parameters), args.params, args.total_rounds)
    result = {
        "flwr_version": flwr.__version__,
        "numpy_version": np.__version__,
        "grpcio_version": grpc.__version__,
        "round_boundaries_monotonic": strategy.boundaries,
        "round_seconds": differences(strategy.boundaries),
        "round_cpu_seconds": differences(strategy.cpu_boundaries),
        "vm_hwm_bytes": proc_self_bytes("VmHWM"),
        "idle_rss_bytes": idle_rss,
    }
    with open(args.out, "w") as out:
        json.dump(result, out)
    return 0


def differences(values):
    return [b - a for a, b in zip(values, values[1:])]


def check_model(ndarrays, params, rounds):
    """Every round added DELTA to every weight: the final model must show it."""
    (model,) = ndarrays
    expected = rounds * DELTA
    if model.size != params or abs(float(model.min()) - expected) > 1e-3 * expected + 1e-6 \
            or abs(float(model.max()) - expected) > 1e-3 * expected + 1e-6:
        sys.exit(f"final model is off: size {model.size}, range "
                 f"[{float(model.min())}, {float(model.max())}], expected {expected}")


def clients_main(argv):
    parser = argparse.ArgumentParser()
    for name in ("--port", "--first", "--count", "--parent"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--cpus", required=True)
    args = parser.parse_args(argv)
    child_setup(args.parent, args.cpus)

    import logging

    import numpy as np
    from flwr.client import NumPyClient, start_client

    logging.getLogger("flwr").setLevel(logging.ERROR)
    delta = np.float32(DELTA)

    class TrivialClient(NumPyClient):
        def get_parameters(self, config):
            return []

        def fit(self, parameters, config):
            return [p + delta for p in parameters], NUM_EXAMPLES, {}

        def evaluate(self, parameters, config):
            return 0.0, NUM_EXAMPLES, {}

    errors = []

    def one_client():
        try:
            start_client(
                server_address=f"127.0.0.1:{args.port}",
                client=TrivialClient().to_client(),
                insecure=True,
                grpc_max_message_length=GRPC_MAX_MESSAGE_LENGTH,
            )
        except BaseException as error:  # noqa: BLE001 - reported through the exit code
            errors.append(error)

    threads = [threading.Thread(target=one_client, daemon=True) for _ in range(args.count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        sys.exit(f"clients {args.first}..{args.first + args.count}: {errors[0]!r}")
    return 0


def main(argv):
    roles = {"_server": server_main, "_clients": clients_main}
    if argv and argv[0] in roles:
        return roles[argv[0]](argv[1:])
    return parent_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
