#!/usr/bin/env python3
"""A Synod federated-learning participant in Python: a small library and a CLI.

Subclass `Participant`, override `fit` (and, if rounds evaluate, `evaluate`), and call `run`.
The class keeps the agent session with the cluster's leader and takes part in every round it
is invited to; it never runs jobs' tasks (it rejects them) and never bids or votes.

    Participant.run ─► session: Register ─► Registered ─► Heartbeat every heartbeat_interval_ms
         │               ends ─► reconnect with Register{agent_id, session_token} (resume);
         │               LeaderChanged / UNAVAILABLE + synod-leader-addr ─► to that leader
         └─ RoundInvitation ─► round thread (once per federation, round and attempt):
              DownloadModel(model_round) ─► check size and CRC-32 ─► [evaluate] ─► fit
              ─► update = local − global ─► [clip to clip_norm] ─► SubmitUpdate to the leader
                 (header, then chunks of at most 1 MiB; metadata synod-agent-id and
                 synod-session-token of the current session)

Models are f32 only (the encoding Synod's FedAvg family uses); weights are `array('f')` in
payload order, every tensor row-major and concatenated in TensorSpec order. Secure-aggregation
rounds are not supported: the participant skips them and the round drops it.

The gRPC stubs are generated from the repository's `proto/` with the standard tools
(`python -m grpc_tools.protoc`) into a cache directory, or imported from `--stubs DIR`.
Dependencies: grpcio and grpcio-tools (see requirements.txt), and the standard library.

    python synod_participant.py --endpoints 127.0.0.1:7100,127.0.0.1:7101 --name py-1 \\
        --step 0.5 --examples 20

SIGTERM or SIGINT deregisters the agent (it leaves the federation's selections at once) and
exits with status 0.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import zlib
from array import array
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Tuple

import grpc

log = logging.getLogger("synod_participant")

#: Version reported to the coordinator in Register.agent_version.
AGENT_VERSION = "synod-participant-py/0.1.0"
#: Metadata naming the calling agent, and carrying its current session token.
AGENT_ID_METADATA = "synod-agent-id"
SESSION_TOKEN_METADATA = "synod-session-token"
#: Metadata of an UNAVAILABLE status naming the leader's API address.
LEADER_ADDR_METADATA = "synod-leader-addr"
#: Bytes per chunk of an update (the protocol allows at most 1 MiB).
CHUNK_BYTES = 1024 * 1024
#: Messages buffered towards the coordinator on one session.
OUTBOUND_CAPACITY = 1024
#: Reconnect backoff of the session, seconds.
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 0.5
#: Failed tries to open a session in a row between two warnings (the others log at debug).
FAILURES_REPORTED_EVERY = 20
#: How long one unary or streaming call may take, in total over its retries, seconds.
CALL_DEADLINE_S = 30.0
#: Timeout of one attempt of a call, seconds.
ATTEMPT_TIMEOUT_S = 10.0
#: Round attempts remembered, so that an invitation re-sent after a reconnect runs once.
SEEN_ROUNDS_MAX = 1024
#: Options of every channel: loopback and cluster addresses never go through an HTTP proxy;
#: a member that comes back is retried quickly.
CHANNEL_OPTIONS = (
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)

Weights = Sequence[float]
FitResult = Tuple[Weights, int, Mapping[str, float]]

# ------------------------------------------------------------------------------------------
# Stubs
# ------------------------------------------------------------------------------------------


def default_proto_root() -> Path:
    """The repository's `proto/` directory, two levels above this file."""
    return Path(__file__).resolve().parent.parent.parent / "proto"


def default_cache_dir() -> Path:
    """Where generated stubs are cached: $XDG_CACHE_HOME/synod or ~/.cache/synod."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synod" / "python-stubs"


def proto_files(proto_root: Path) -> list:
    """The `.proto` files of package synod.v1, relative to `proto_root`, sorted."""
    files = sorted(p.relative_to(proto_root) for p in (proto_root / "synod" / "v1").glob("*.proto"))
    if not files:
        raise FileNotFoundError(f"no synod/v1/*.proto under {proto_root}")
    return files


def generate_stubs(proto_root: Path, out: Path) -> None:
    """Generates `synod/v1/*_pb2.py` and `*_pb2_grpc.py` into `out` with grpc_tools.protoc."""
    proto_root = Path(proto_root).resolve()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "grpc_tools.protoc", "-I", str(proto_root),
        f"--python_out={out}", f"--grpc_python_out={out}",
        *(str(proto_root / f) for f in proto_files(proto_root)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({done.returncode}): {done.stderr.strip()}")


def ensure_stubs(proto_root: Optional[Path] = None, cache_dir: Optional[Path] = None) -> Path:
    """A directory holding stubs of `proto_root`, generated once per content of the protos and
    version of grpcio-tools (in a subdirectory of `cache_dir` named after their hash)."""
    if importlib.util.find_spec("grpc_tools") is None:
        raise ModuleNotFoundError("generating the stubs needs grpcio-tools: "
                                  "pip install -r requirements.txt")
    from importlib.metadata import version

    proto_root = Path(proto_root or default_proto_root()).resolve()
    digest = hashlib.sha256(version("grpcio-tools").encode())
    for name in proto_files(proto_root):
        digest.update(str(name).encode() + b"\0" + (proto_root / name).read_bytes())
    target = Path(cache_dir or default_cache_dir()) / digest.hexdigest()[:16]
    if (target / "synod" / "v1" / "agent_pb2_grpc.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".stubs-", dir=target.parent))
    try:
        generate_stubs(proto_root, staging)
        os.replace(staging, target)  # atomic; another process may have won the race
    except OSError:
        if not (target / "synod" / "v1" / "agent_pb2_grpc.py").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_stubs(stubs_dir: Path) -> types.SimpleNamespace:
    """Imports the generated modules from `stubs_dir` (put on sys.path, since they import each
    other as `synod.v1.x_pb2`)."""
    stubs_dir = str(Path(stubs_dir).resolve())
    if not Path(stubs_dir, "synod", "v1", "agent_pb2.py").is_file():
        raise FileNotFoundError(f"{stubs_dir} holds no synod/v1/agent_pb2.py")
    if stubs_dir not in sys.path:
        sys.path.insert(0, stubs_dir)
    module = lambda name: importlib.import_module(f"synod.v1.{name}")  # noqa: E731
    return types.SimpleNamespace(
        common=module("common_pb2"),
        agent=module("agent_pb2"),
        agent_grpc=module("agent_pb2_grpc"),
        federation=module("federation_pb2"),
        federation_grpc=module("federation_pb2_grpc"),
    )


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


def f32_from_le(data: bytes) -> array:
    """Little-endian f32 bytes as array('f')."""
    values = array("f")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def f32_to_le(values: array) -> bytes:
    """array('f') as little-endian bytes."""
    if sys.byteorder == "big":
        values = array("f", values)
        values.byteswap()
    return values.tobytes()


def check_f32_specs(pb, tensors) -> int:
    """The number of elements of `tensors`, all of which must be DTYPE_F32."""
    total = 0
    for spec in tensors:
        if spec.dtype != pb.federation.DTYPE_F32:
            dtype = pb.federation.Dtype.Name(spec.dtype)
            raise ValueError(f"tensor {spec.name} is {dtype}; only DTYPE_F32 is supported")
        total += math.prod(spec.shape)
    return total


def update_of(local: Weights, global_weights: array, clip_norm: float) -> array:
    """local − global, clipped to `clip_norm` in L2 norm when it is > 0."""
    if len(local) != len(global_weights):
        raise ValueError(f"fit returned {len(local)} weights, the model has {len(global_weights)}")
    update = array("f", (float(l) - g for l, g in zip(local, global_weights)))
    if clip_norm > 0:
        norm = math.sqrt(math.fsum(v * v for v in update))
        if norm > clip_norm:
            scale = clip_norm / norm
            update = array("f", (v * scale for v in update))
    return update


# ------------------------------------------------------------------------------------------
# Calls that follow the leader
# ------------------------------------------------------------------------------------------


def leader_hint(error: grpc.RpcError) -> Optional[str]:
    """The leader's address a failed call named in its metadata, if any."""
    for getter in ("trailing_metadata", "initial_metadata"):
        try:
            metadata = getattr(error, getter)() or ()
        except Exception:  # noqa: BLE001  (not every RpcError carries metadata)
            continue
        for key, value in metadata:
            if key == LEADER_ADDR_METADATA and value:
                return value.decode() if isinstance(value, bytes) else value
    return None


RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.CANCELLED)


class Cluster:
    """Channels to the cluster's members and the address calls go to: the leader once a member
    has named it, otherwise the endpoints in turn."""

    def __init__(self, endpoints: Sequence[str]):
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._endpoints = list(endpoints)
        self._next = 0
        self._current = self._endpoints[0]
        self._channels: dict = {}
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        with self._lock:
            return self._current

    def channel(self, addr: str) -> grpc.Channel:
        with self._lock:
            if addr not in self._channels:
                self._channels[addr] = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
            return self._channels[addr]

    def redirect(self, leader: str) -> None:
        """Sends later calls to `leader`."""
        with self._lock:
            self._current = leader

    def failed(self, addr: str) -> None:
        """`addr` could not serve: later calls try the next endpoint."""
        with self._lock:
            if self._current == addr:
                self._next = (self._next + 1) % len(self._endpoints)
                self._current = self._endpoints[self._next]

    def call(self, attempt: Callable[[grpc.Channel, float], object], deadline: float,
             retry_if: Callable[[grpc.RpcError], bool] = lambda e: False):
        """Runs `attempt(channel, timeout_s)` until it succeeds, a final error, or `deadline`
        (time.monotonic()); follows leader hints and skips unreachable members."""
        backoff = BACKOFF_INITIAL_S
        while True:
            addr = self.current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the call did not succeed before its deadline")
            try:
                return attempt(self.channel(addr), min(ATTEMPT_TIMEOUT_S, remaining))
            except grpc.RpcError as error:
                hint = leader_hint(error)
                if hint and hint != addr:
                    log.debug("following the leader hint %s", hint)
                    self.redirect(hint)
                    continue
                if error.code() in RETRIED_CODES:
                    self.failed(addr)
                elif not retry_if(error):
                    raise
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_MAX_S)


# ------------------------------------------------------------------------------------------
# The participant
# ------------------------------------------------------------------------------------------


class RoundSkipped(Exception):
    """The round cannot be taken part in (e.g. secure aggregation, a changed model)."""


class _SessionEnd(Exception):
    """A session ended; `redirect` is the leader to reconnect to, when known."""

    def __init__(self, reason: str, redirect: Optional[str] = None):
        super().__init__(reason)
        self.redirect = redirect
        self.registered = False  # whether the session had been Registered


_CLOSE = object()


class Participant:
    """A federated-learning participant: override `fit` (and optionally `evaluate`)."""

    def __init__(self, endpoints: Sequence[str], name: str, *, capabilities=("fl",),
                 labels: Optional[Mapping[str, str]] = None, stubs=None):
        self.name = name
        self.capabilities = list(capabilities)
        self.labels = dict(labels or {})
        self.pb = stubs or load_stubs(ensure_stubs())
        self.cluster = Cluster(endpoints)
        self._lock = threading.Lock()
        self._agent_id = ""
        self._session_token = ""
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._draining = False
        self._session = None  # (call, outbound queue) of the open session
        self._session_addr = ""
        self._seen: dict = {}
        self._request_id = 0

    # -- what users override ----------------------------------------------------------------

    def fit(self, global_weights: array, config) -> FitResult:
        """Trains on `global_weights` (array('f'), payload order) with `config`
        (synod.v1.RoundConfig); returns (local weights, examples trained on > 0, metrics)."""
        raise NotImplementedError("override Participant.fit")

    def evaluate(self, global_weights: array, config) -> Optional[Mapping[str, float]]:
        """Evaluates the received model when the round asks for it; None reports nothing."""
        return None

    # -- identity -----------------------------------------------------------------------------

    @property
    def agent_id(self) -> str:
        """The agent's id once registered, else ''."""
        with self._lock:
            return self._agent_id

    def credentials(self) -> Tuple[Tuple[str, str], ...]:
        """Metadata proving the agent's identity on unary and streaming calls."""
        with self._lock:
            return ((AGENT_ID_METADATA, self._agent_id),
                    (SESSION_TOKEN_METADATA, self._session_token))

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        """Keeps a session with the leader until `stop`, reconnecting as needed."""
        backoff, failures = BACKOFF_INITIAL_S, 0
        try:
            while not self._stopping.is_set():
                addr = self.cluster.current
                try:
                    self._run_session(addr)
                    return  # ended by stop()
                except _SessionEnd as end:
                    if end.registered:
                        backoff, failures = BACKOFF_INITIAL_S, 0
                        log.warning("session on %s ended: %s", addr, end)
                    else:
                        failures += 1
                        quiet = failures % FAILURES_REPORTED_EVERY != 0
                        (log.debug if quiet else log.warning)(
                            "no session on %s (%d tries): %s", addr, failures, end)
                    if end.redirect and end.redirect != addr:
                        self.cluster.redirect(end.redirect)
                        if end.registered:
                            continue  # LeaderChanged on an open session: go there at once
                    else:
                        self.cluster.failed(addr)
                # Followers name the old leader until they learn of a new one: back off, also
                # between redirects, until a session opens.
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            self._stopped.set()

    def stop(self, grace_s: float = 5.0) -> None:
        """Deregisters (when a session is open) and ends `run`, waiting up to `grace_s` for the
        coordinator to close the session. Safe to call from any thread but `run`'s."""
        self._stopping.set()
        with self._lock:
            session, registered = self._session, bool(self._agent_id)
        if session is not None:
            call, outbound = session
            if registered:
                deregister = self.pb.agent.Deregister(reason="participant shutting down")
                try:
                    outbound.put(self._message(deregister=deregister), timeout=1.0)
                except queue.Full:
                    pass
            if not registered or not self._stopped.wait(grace_s):
                call.cancel()
        self._stopped.wait(grace_s)

    # -- the session --------------------------------------------------------------------------

    def _message(self, **kind):
        with self._lock:
            self._request_id += 1
            request_id = self._request_id
        return self.pb.agent.AgentMessage(request_id=request_id, **kind)

    def _register(self):
        with self._lock:
            agent_id, token = self._agent_id, self._session_token
        return self.pb.agent.AgentMessage(register=self.pb.agent.Register(
            agent_id=agent_id, session_token=token, name=self.name,
            capabilities=self.capabilities, labels=self.labels, max_concurrent_tasks=1,
            agent_version=AGENT_VERSION,
        ))

    def _outbound(self, outbound: queue.Queue, timing: dict) -> Iterator:
        """The session's request stream: queued messages, and a heartbeat whenever one is
        due once registered."""
        while True:
            interval = timing.get("heartbeat_s")
            timeout = 0.2  # until registered: only wait for queued messages
            if interval is not None:
                now = time.monotonic()
                if now >= timing["next_beat"]:
                    timing["next_beat"] = now + interval
                    yield self.pb.agent.AgentMessage(heartbeat=self.pb.agent.Heartbeat())
                    continue
                timeout = timing["next_beat"] - now
            try:
                item = outbound.get(timeout=timeout)
            except queue.Empty:
                continue
            if item is _CLOSE:
                return
            yield item

    def _run_session(self, addr: str) -> None:
        """One session on `addr`; returns when stopped, raises _SessionEnd otherwise."""
        outbound: queue.Queue = queue.Queue(maxsize=OUTBOUND_CAPACITY)
        outbound.put(self._register())
        timing: dict = {}
        stub = self.pb.agent_grpc.AgentServiceStub(self.cluster.channel(addr))
        call = stub.Session(self._outbound(outbound, timing))
        with self._lock:
            self._session = (call, outbound)
            self._session_addr = addr
        if self._stopping.is_set():
            call.cancel()  # stop() came before this session existed
        registered = False
        try:
            for message in call:
                registered = self._on_message(message, outbound, timing) or registered
            if self._stopping.is_set():
                return
            raise _SessionEnd("session closed by the coordinator")
        except grpc.RpcError as error:
            if self._stopping.is_set():
                return
            end = self._session_error(error, registered)
            end.registered = registered
            raise end from None
        except _SessionEnd as end:
            end.registered = registered
            raise
        finally:
            with self._lock:
                self._session = None
            try:
                outbound.put_nowait(_CLOSE)
            except queue.Full:
                call.cancel()

    def _session_error(self, error: grpc.RpcError, registered: bool) -> _SessionEnd:
        code = error.code()
        if not registered and code in (grpc.StatusCode.UNAUTHENTICATED,
                                       grpc.StatusCode.FAILED_PRECONDITION):
            log.warning("resuming agent %s was refused (%s: %s); registering anew",
                        self.agent_id, code.name, error.details())
            with self._lock:
                self._agent_id, self._session_token = "", ""
        return _SessionEnd(f"{code.name}: {error.details()}", leader_hint(error))

    def _on_message(self, message, outbound: queue.Queue, timing: dict) -> bool:
        """Handles one coordinator message; True once it was Registered."""
        kind = message.WhichOneof("kind")
        body = getattr(message, kind) if kind else None
        agent = self.pb.agent
        if kind == "registered":
            self._on_registered(body, timing)
            return True
        if kind == "round_invitation":
            self._invited(body, message.sent_at_ms)
        elif kind == "ping":
            outbound.put(agent.AgentMessage(heartbeat=agent.Heartbeat(ping_id=body.ping_id)))
        elif kind == "leader_changed":
            raise _SessionEnd("the leader changed", body.leader_addr or None)
        elif kind == "drain":
            log.info("draining: %s", body.reason)
            self._draining = True
        elif kind == "task_assignment":
            reason = "a Python participant runs no tasks"
            outbound.put(self._message(task_rejected=agent.TaskRejected(task=body.task,
                                                                        reason=reason)))
        elif kind == "call_for_bids":
            decline = agent.Bid(call_id=body.call_id, decline=agent.Bid.Decline(reason="no tasks"))
            outbound.put(self._message(bid=decline))
        elif kind == "message_delivery" and not body.message.channel:
            ack = agent.DeliveryAck(offset=body.message.offset)
            outbound.put(agent.AgentMessage(delivery_ack=ack))
        elif kind == "error":
            if body.request_id == 0:
                raise _SessionEnd(f"session error {body.code}: {body.message}")
            log.debug("request %d refused (%d): %s", body.request_id, body.code, body.message)
        return False

    def _on_registered(self, registered, timing: dict) -> None:
        with self._lock:
            self._agent_id = registered.agent_id
            self._session_token = registered.session_token
        interval = max(registered.heartbeat_interval_ms, 10) / 1000.0
        timing["next_beat"] = time.monotonic() + interval
        timing["heartbeat_s"] = interval
        log.info("registered on %s: agent_id=%s resumed=%s heartbeat_ms=%d", self._session_addr,
                 registered.agent_id, registered.resumed, registered.heartbeat_interval_ms)

    # -- rounds -------------------------------------------------------------------------------

    def _invited(self, invitation, sent_at_ms: int) -> None:
        key = (invitation.federation_id, invitation.round, invitation.attempt)
        with self._lock:
            if key in self._seen:
                return
            self._seen[key] = True
            while len(self._seen) > SEEN_ROUNDS_MAX:
                self._seen.pop(next(iter(self._seen)))
        if self._draining or self._stopping.is_set():
            return
        span_ms = invitation.deadline_at_ms - sent_at_ms if invitation.deadline_at_ms else 0
        deadline = time.monotonic() + (span_ms / 1000.0 if span_ms > 0 else CALL_DEADLINE_S)
        name = f"round-{invitation.round}.{invitation.attempt}"
        threading.Thread(target=self._run_round, args=(invitation, deadline), name=name,
                         daemon=True).start()

    def _run_round(self, invitation, deadline: float) -> None:
        where = f"federation {invitation.federation_id} round {invitation.round} " \
                f"attempt {invitation.attempt}"
        try:
            answer = self.take_part(invitation, deadline)
        except Exception as error:  # noqa: BLE001  (one failed round must not end the agent)
            log.warning("%s not completed: %s", where, error)
            return
        if answer.accepted:
            log.info("%s: update accepted", where)
        else:
            log.info("%s: update refused: %s", where, answer.rejection_reason)

    def take_part(self, invitation, deadline: float):
        """Runs one invited round attempt: download, fit, submit; returns the
        SubmitUpdateResponse."""
        if invitation.HasField("secure_aggregation"):
            raise RoundSkipped("secure aggregation is not supported by this participant")
        header, global_weights = self.download_model(
            invitation.federation_id, invitation.model_round, deadline)
        expected = invitation.model if invitation.HasField("model") else None
        if expected is not None and (header.blob.crc32, header.blob.size_bytes) != (
                expected.crc32, expected.size_bytes):
            raise RoundSkipped("the global model changed since the invitation")
        config = invitation.config
        evaluation = self.evaluate(global_weights, config) if invitation.evaluate else None
        weights, num_examples, metrics = self.fit(array("f", global_weights), config)
        update = update_of(weights, global_weights, invitation.clip_norm)
        fed = self.pb.federation
        update_header = fed.UpdateHeader(
            federation_id=invitation.federation_id, round=invitation.round,
            attempt=invitation.attempt, agent_id=self.agent_id,
            num_examples=max(int(num_examples), 1),
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            evaluation_metrics={k: float(v) for k, v in (evaluation or {}).items()},
            tensors=header.tensors, masked=False,
        )
        return self.submit_update(update_header, f32_to_le(update), deadline)

    def download_model(self, federation_id: str, round_: int, deadline: float):
        """Downloads the global model of `round_` (from any member); returns (ModelHeader,
        array('f')) after checking size and CRC-32 against the header."""
        fed = self.pb.federation
        request = fed.DownloadModelRequest(federation_id=federation_id, round=round_)

        def attempt(channel, timeout_s):
            stub = self.pb.federation_grpc.FederationServiceStub(channel)
            stream = stub.DownloadModel(request, timeout=timeout_s)
            try:
                return read_model(self.pb, stream)
            finally:
                stream.cancel()

        header, data = self.cluster.call(attempt, deadline)
        elements = check_f32_specs(self.pb, header.tensors)
        if elements * 4 != len(data):
            raise ValueError(f"the model has {len(data)} bytes, its tensors {elements * 4}")
        return header, f32_from_le(data)

    def submit_update(self, header, payload: bytes, deadline: float):
        """Submits an update to the leader with this agent's credentials; `header.blob` is
        filled in from `payload`."""
        fed, common = self.pb.federation, self.pb.common
        header.blob.CopyFrom(common.BlobInfo(size_bytes=len(payload), crc32=zlib.crc32(payload)))

        def requests():
            yield fed.SubmitUpdateRequest(header=header)
            count = max(1, -(-len(payload) // CHUNK_BYTES))
            for i in range(count):
                data = payload[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES]
                chunk = common.Chunk(offset=i * CHUNK_BYTES, data=data, last=i + 1 == count)
                yield fed.SubmitUpdateRequest(chunk=chunk)

        def attempt(channel, timeout_s):
            stub = self.pb.federation_grpc.FederationServiceStub(channel)
            return stub.SubmitUpdate(requests(), timeout=timeout_s, metadata=self.credentials())

        # A reconnect replaces the session token: a call made with the old one is retried.
        unauthenticated = lambda e: e.code() == grpc.StatusCode.UNAUTHENTICATED  # noqa: E731
        return self.cluster.call(attempt, deadline, retry_if=unauthenticated)


def read_model(pb, stream) -> Tuple[object, bytes]:
    """Reads a DownloadModel stream: the header, then chunks in order; checks them."""
    header, data, crc = None, bytearray(), 0
    for message in stream:
        part = message.WhichOneof("part")
        if header is None:
            if part != "header":
                raise ValueError("the model stream did not start with its header")
            header = message.header
            continue
        if part != "chunk":
            raise ValueError("a second model header")
        if message.chunk.offset != len(data):
            raise ValueError("model chunks out of order")
        crc = zlib.crc32(message.chunk.data, crc)
        data += message.chunk.data
        if message.chunk.last:
            break
    if header is None:
        raise ValueError("the model stream was empty")
    if len(data) != header.blob.size_bytes or crc != header.blob.crc32:
        raise ValueError("model size or CRC-32 does not match its header")
    return header, bytes(data)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


class StepParticipant(Participant):
    """"Trains" by adding `step` to every weight; reports `examples` and loss = `step`, so that
    tests can compute FedAvg by hand."""

    def __init__(self, *args, step: float, examples: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.step = step
        self.examples = examples

    def fit(self, global_weights: array, config) -> FitResult:
        weights = array("f", (w + self.step for w in global_weights))
        return weights, self.examples, {"loss": self.step}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", required=True,
                        help="comma-separated host:port API addresses of cluster members")
    parser.add_argument("--name", default="py-participant", help="the agent's name")
    parser.add_argument("--step", type=float, default=0.5,
                        help="added to every weight in each round")
    parser.add_argument("--examples", type=int, default=20,
                        help="examples reported per update (> 0)")
    parser.add_argument("--capability", action="append", dest="capabilities",
                        help="capability to advertise (repeatable; default: fl)")
    parser.add_argument("--stubs", type=Path,
                        help="directory of generated synod/v1 stubs; generated into a cache "
                             "from --proto when absent")
    parser.add_argument("--proto", type=Path, default=None,
                        help="the proto/ directory to generate stubs from (default: the "
                             "repository's)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    args = parser.parse_args(argv)
    args.endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not args.endpoints:
        parser.error("--endpoints: at least one host:port is needed")
    if args.examples <= 0:
        parser.error("--examples: must be > 0")
    if not math.isfinite(args.step):
        parser.error("--step: must be finite")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {args.name}: %(message)s")
    stubs = load_stubs(args.stubs or ensure_stubs(args.proto))
    participant = StepParticipant(args.endpoints, args.name, step=args.step,
                                  examples=args.examples, capabilities=args.capabilities or ["fl"],
                                  stubs=stubs)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    session = threading.Thread(target=participant.run, name="session", daemon=True)
    session.start()
    while not stop.wait(0.5):
        if not session.is_alive():
            log.error("the session loop ended unexpectedly")
            return 1
    log.info("shutting down")
    participant.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
