#!/usr/bin/env python3
"""An example client of moe-offload's public API, moe.v1.Generation.

Streams generated text from a running moe-coordinator to stdout and prints the run's
figures to stderr:

    clients/python/generate_stubs.sh /tmp/moe-stubs        # once: messages and stubs
    clients/python/moe_client.py --stub-dir /tmp/moe-stubs \\
        --server unix:/tmp/moe.sock --prompt "And God said," --temperature 0
    clients/python/moe_client.py --stub-dir /tmp/moe-stubs \\
        --server unix:/tmp/moe.sock --chat --prompt "Who was Moses?"
    clients/python/moe_client.py health --stub-dir /tmp/moe-stubs --server unix:/tmp/moe.sock

`health` asks the standard grpc.health.v1 service (for moe.v1.Generation unless
--service says otherwise), prints the status and exits 0 only when it is SERVING.
Errors print the gRPC status code and message and exit 1.

`health` exits 0 when SERVING, 3 when NOT_SERVING, 4 when the server cannot be reached
and 1 for other errors, as `moe health` does.

The stubs are generated, never committed: pass --stub-dir (or set MOE_STUB_DIR); the
default is clients/python/_stubs next to this file. Needs grpcio and protobuf (Debian:
python3-grpcio, python3-protobuf, for /usr/bin/python3). Run by another python3 that
lacks them (pyenv, a venv), the script runs itself again under /usr/bin/python3 when that
one has them, and otherwise says what to install. Fields left out (--max-new-tokens and
the sampling flags not given) take the server's defaults. The functions below
(load_stubs, make_request, stream_generate, check_health) are importable for use from
other Python code.
"""

import argparse
import os
import subprocess
import sys
import time

try:
    import grpc
    import google.protobuf  # noqa: F401  (the generated stubs need it)
    _MISSING = None
except ImportError as e:  # reported by main(); importers get the ImportError on use
    grpc = None
    _MISSING = e

SYSTEM_PYTHON = "/usr/bin/python3"

DEFAULT_STUB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_stubs")


class Stubs:
    """The generated modules: generation_pb2(_grpc), health_pb2(_grpc), expert_worker_pb2(_grpc)."""

    def __init__(self, stub_dir):
        if not os.path.isfile(os.path.join(stub_dir, "moe", "v1", "generation_pb2.py")):
            raise RuntimeError(
                f"no generated stubs in {stub_dir}; run "
                f"{os.path.join(os.path.dirname(os.path.abspath(__file__)), 'generate_stubs.sh')} "
                f"{stub_dir}")
        if stub_dir not in sys.path:
            sys.path.insert(0, stub_dir)
        from moe.v1 import expert_worker_pb2, expert_worker_pb2_grpc  # noqa: E402
        from moe.v1 import generation_pb2, generation_pb2_grpc  # noqa: E402
        import health_pb2, health_pb2_grpc  # noqa: E402,E401
        self.generation_pb2 = generation_pb2
        self.generation_pb2_grpc = generation_pb2_grpc
        self.expert_worker_pb2 = expert_worker_pb2
        self.expert_worker_pb2_grpc = expert_worker_pb2_grpc
        self.health_pb2 = health_pb2
        self.health_pb2_grpc = health_pb2_grpc


def load_stubs(stub_dir=None):
    """Imports the generated modules from stub_dir ($MOE_STUB_DIR, or clients/python/_stubs)."""
    return Stubs(stub_dir or os.environ.get("MOE_STUB_DIR") or DEFAULT_STUB_DIR)


def make_request(stubs, prompt, chat=False, max_new_tokens=None, temperature=None, top_p=None,
                 top_k=None, seed=0, stop=()):
    """A GenerateRequest: a plain prompt, or with chat=True one user turn.

    Sampling and length arguments left None stay absent: the server applies its defaults
    (max_new_tokens 128, temperature 0.7, top_p 0.95, top_k 0), the same as `moe
    generate`'s and the HTTP API's."""
    pb = stubs.generation_pb2
    given = {name: value for name, value in (("max_new_tokens", max_new_tokens),
                                             ("temperature", temperature), ("top_p", top_p),
                                             ("top_k", top_k)) if value is not None}
    request = pb.GenerateRequest(seed=seed, stop=list(stop), **given)
    if chat:
        request.messages.append(pb.ChatMessage(role="user", content=prompt))
    else:
        request.prompt = prompt
    return request


def stream_generate(stubs, channel, request, timeout=None, api_key=None):
    """Yields the GenerateResponse messages of one generation; the last has the stats.

    Raises grpc.RpcError (e.code(), e.details()) on failure."""
    stub = stubs.generation_pb2_grpc.GenerationStub(channel)
    metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
    yield from stub.Generate(request, timeout=timeout, metadata=metadata)


def default_server():
    """Where moe-coordinator listens by default: its private socket directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    directory = (os.path.join(runtime, "moe-offload") if runtime.startswith("/")
                 else f"/tmp/moe-offload-{os.geteuid()}")
    return f"unix:{directory}/moe.sock"


def open_channel(server, tls_ca=None):
    """A channel to a coordinator: TLS verified against `tls_ca` (a PEM file) when given."""
    if tls_ca:
        with open(tls_ca, "rb") as f:
            return grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=f.read()))
    return grpc.insecure_channel(server)


def check_health(stubs, channel, service="moe.v1.Generation", timeout=2.0):
    """The serving status name (SERVING, NOT_SERVING, ...) of `service`."""
    stub = stubs.health_pb2_grpc.HealthStub(channel)
    response = stub.Check(stubs.health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return stubs.health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


# FinishReason values as every command line prints them (moe generate too).
FINISH_REASON_NAMES = {1: "eos", 2: "length", 3: "stop"}

# `health` exit codes, as `moe health`'s.
HEALTH_SERVING, HEALTH_OTHER, HEALTH_NOT_SERVING, HEALTH_UNREACHABLE = 0, 1, 3, 4


def _generate_main(args, stubs):
    request = make_request(stubs, args.prompt, chat=args.chat, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                           seed=args.seed, stop=args.stop)
    last = None
    started = time.monotonic()
    with open_channel(args.server, args.tls_ca) as channel:
        for response in stream_generate(stubs, channel, request,
                                        timeout=args.timeout if args.timeout > 0 else None,
                                        api_key=args.api_key):
            sys.stdout.write(response.text)
            sys.stdout.flush()
            if response.finish_reason:
                last = response
    sys.stdout.write("\n")
    if last is not None:
        st = last.stats
        reason = FINISH_REASON_NAMES.get(last.finish_reason, str(last.finish_reason))
        print(f"[{st.prompt_tokens} prompt tokens, {st.generated_tokens} new, finish {reason}; "
              f"time to first token {st.time_to_first_token_s:.3f} s, "
              f"prefill {st.prefill_tokens_per_s:.1f} tok/s, decode {st.decode_tokens_per_s:.1f} tok/s, "
              f"{time.monotonic() - started:.2f} s in all, via {args.server}]", file=sys.stderr)
    return 0


def _health_main(args, stubs):
    with open_channel(args.server, args.tls_ca) as channel:
        status = check_health(stubs, channel, args.service)
    print(status)
    return HEALTH_SERVING if status == "SERVING" else HEALTH_NOT_SERVING


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # Subcommands: `health`, or `generate` (the default, so it may be left out).
    command = argv.pop(0) if argv and argv[0] in ("generate", "health") else "generate"
    parser = argparse.ArgumentParser(
        prog="moe_client.py" + ("" if command == "generate" else " health"),
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=default_server(),
                        help="coordinator address: unix:PATH or HOST:PORT (default %(default)s)")
    parser.add_argument("--tls-ca", default=None,
                        help="PEM CA of a coordinator serving TLS on TCP (default: plaintext)")
    parser.add_argument("--api-key", default=os.environ.get("MOE_API_KEY"),
                        help="sent as authorization: Bearer KEY (default $MOE_API_KEY)")
    parser.add_argument("--stub-dir", default=None,
                        help="generated stubs (default $MOE_STUB_DIR or clients/python/_stubs)")
    if command == "health":
        parser.add_argument("--service", default="moe.v1.Generation",
                            help='service to ask about ("" for the server; default %(default)s)')
    else:
        parser.add_argument("--prompt", required=True, help="the prompt text")
        parser.add_argument("--chat", action="store_true",
                            help="send the prompt as one user turn of the chat template")
        parser.add_argument("--max-new-tokens", type=int, default=None,
                            help="most tokens to generate (default: the server's, 128)")
        parser.add_argument("--temperature", type=float, default=None,
                            help="0 is greedy (default: the server's, 0.7)")
        parser.add_argument("--top-p", type=float, default=None, help="default: the server's, 0.95")
        parser.add_argument("--top-k", type=int, default=None, help="default: the server's, 0 (all)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
        parser.add_argument("--timeout", type=float, default=0, help="deadline in seconds (0: none)")
    args = parser.parse_args(argv)
    if _MISSING is not None:
        return _without_grpc(argv if command == "generate" else ["health"] + argv)
    try:
        stubs = load_stubs(args.stub_dir)
    except RuntimeError as e:
        print(f"moe_client.py: error: {e}", file=sys.stderr)
        return 2
    try:
        return _health_main(args, stubs) if command == "health" else _generate_main(args, stubs)
    except grpc.RpcError as e:
        sys.stdout.flush()
        print(f"moe_client.py: error: {e.code().name}: {e.details()}", file=sys.stderr)
        if command == "health" and e.code() in (grpc.StatusCode.UNAVAILABLE,
                                                 grpc.StatusCode.DEADLINE_EXCEEDED):
            return HEALTH_UNREACHABLE
        return HEALTH_OTHER
    except KeyboardInterrupt:
        return 130


def _without_grpc(argv):
    """This python3 lacks grpcio or protobuf: rerun under Debian's, or say what to install."""
    here = os.path.realpath(sys.executable or "")
    if (here != os.path.realpath(SYSTEM_PYTHON) and os.access(SYSTEM_PYTHON, os.X_OK)
            and subprocess.run([SYSTEM_PYTHON, "-c", "import grpc, google.protobuf"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__)] + list(argv))
    print(f"moe_client.py: error: this Python ({sys.executable}, "
          f"{sys.version.split()[0]}) cannot import {_MISSING.name or 'grpc'}.\n"
          f"  Debian: sudo apt-get install python3-grpcio python3-protobuf   (for {SYSTEM_PYTHON})\n"
          f"  any Python: {sys.executable} -m pip install grpcio protobuf", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
