"""`kipuka-est agent`: the command line of the agent."""

from __future__ import annotations

import argparse
import os

from kipuka.client import exitcodes
from kipuka.client.agent import config as agent_config
from kipuka.client.agent import daemon, status
from kipuka.client.agent.state import StateDir
from kipuka.client.cli.options import Output, epilog, paragraph
from kipuka.client.describe import iso, utcnow

DEFAULT_CONFIG = "/etc/kipuka-est/agent.toml"

EXAMPLES = """
  kipuka-est agent -c /etc/kipuka-est/agent.toml            # a service: runs until stopped
  kipuka-est agent -c /etc/kipuka-est/agent.toml --once     # a timer: one pass, then exit
  kipuka-est agent -c /etc/kipuka-est/agent.toml --status --json
  kipuka-est agent --once --force --only mqtt               # renew one entry now

A minimal agent.toml (every key: docs/client.md):
  state_dir = "/var/lib/kipuka-est"
  [certificates.mqtt]
  server = "https://est.example.com:9443"
  fingerprint = "5e0a...9c"                 # SHA-256 of the CA certificate, checked out of band
  label = "iot-fleet"
  cert = "/etc/mosquitto/certs/device.crt"
  key = "/etc/mosquitto/certs/device.key"
  common_name = "device-001.example.com"
  user = "device-001"
  otp_file = "/etc/kipuka-est/device-001.otp"   # used once; then the agent renews over mTLS
  renew_before = "33%"                      # or a duration: "7d"
  post_renew = ["systemctl", "reload", "mosquitto"]"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="keep certificates fresh: enroll, renew, rotate keys, run hooks",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=paragraph("Keeps every certificate of the configuration enrolled and renewed: "
                                   "bootstraps trust from a CA fingerprint, enrolls once with an OTP or a "
                                   "bootstrap certificate, then renews over mTLS at the threshold, with a new "
                                   "key if asked, and runs the post_renew hook. Requests held by the server "
                                   "(202) are resumed with the same key, across restarts; failures are "
                                   "retried with back-off, for ever. Status in STATE_DIR/status.json (and a "
                                   "Prometheus textfile if configured)."),
                       epilog=epilog(EXAMPLES, environment="  KIPUKA_EST_AGENT_CONFIG  the configuration, when -c "
                                     f"is not given (default {DEFAULT_CONFIG})"))
    p.add_argument("-c", "--config", default=os.environ.get("KIPUKA_EST_AGENT_CONFIG", DEFAULT_CONFIG),
                   metavar="TOML", help=f"the agent's configuration (default {DEFAULT_CONFIG})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="one pass, then exit: 0 renewed/enrolled, 10 nothing due, 7 pending, else the "
                           "failure's code")
    mode.add_argument("--status", action="store_true", help="print the status from the state files, send nothing")
    p.add_argument("--force", action="store_true", help="with --once: renew now, due or not, ignoring back-off")
    p.add_argument("--only", metavar="NAME", help="with --once: this [certificates.NAME] entry only")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace, out: Output) -> int:
    log = (lambda msg: None) if args.quiet else daemon.stderr_log
    if args.status:
        config = agent_config.load(args.config)
        docs = status.entries(config, StateDir(config.state_dir))
        code = _health(docs)
        out.result({"exit_code": code, "certificates": docs}, _text(docs), ok=code == exitcodes.OK)
        return code
    if args.once:
        code, results, config, states = daemon.run_once(args.config, log, force=args.force, only=args.only)
        docs = [d for d in status.entries(config, states, results) if d["name"] in results]
        out.result({"exit_code": code, "certificates": docs}, None,
                   ok=code in (exitcodes.OK, exitcodes.NOT_DUE, exitcodes.PENDING))
        return code
    return daemon.run_forever(args.config, log)


def _health(docs: list[dict]) -> int:
    """--status: OK, or the code of what is wrong (a failing entry, or a certificate missing or expired)."""
    now = iso(utcnow())
    codes = {d["last_exit_code"] or exitcodes.ERROR for d in docs if d.get("last_result") == "failed"}
    if any(not d.get("not_after") or d["not_after"] <= now for d in docs):
        codes.add(exitcodes.ERROR)
    if codes:
        return codes.pop() if len(codes) == 1 else exitcodes.ERROR
    return exitcodes.OK


def _text(docs: list[dict]) -> str:
    lines = []
    for d in docs:
        head = f"{d['name']}: " + (f"serial {d['serial']}, expires {d['not_after']}, renews {d['renew_at']}"
                                  if d.get("not_after") else "no certificate yet")
        tail = f"last {d['last_result'] or 'never'}" + (f" at {d['last_attempt']}" if d.get("last_attempt") else "")
        if d.get("last_error"):
            tail += f": {d['last_error']}"
        if d.get("failures"):
            tail += f" ({d['failures']} failure(s) in a row, next attempt {d['next_attempt']})"
        if d.get("pending"):
            tail += " [request pending]"
        lines.append(f"{head}; {tail}")
    return "\n".join(lines)
