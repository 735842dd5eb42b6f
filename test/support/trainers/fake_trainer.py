"""A trainer for the runner's tests: one behaviour per mode (argv[1]), good and bad.

ok: reads everything, writes weights + 1, replies with a hash of the record bytes it read
(metrics.records_hash48), its directory's mode and what the directory held.
"""
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples"))
import aegis_trainer as t  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
header_line = sys.stdin.buffer.readline()
header = json.loads(header_line)
tensors = header["context"]["tensors"]
call_dir = os.path.dirname(header["weights"])
sys.stderr.write("dir=%s\n" % call_dir)
sys.stderr.flush()


def read_records():
    h = hashlib.sha256()
    lines = []
    for line in sys.stdin.buffer:
        h.update(line)
        lines.append(line)
    return h.hexdigest(), lines


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def plus_one():
    w = t.load_safetensors(header["weights"])
    return {k: v + 1 for k, v in w.items()}


def records_in_files(lines):
    """How many of the call directory's files hold a record (its JSON text, or its features as float32)."""
    found = 0
    for name in os.listdir(call_dir):
        with open(os.path.join(call_dir, name), "rb") as f:
            content = f.read()
        for line in lines:
            rec = json.loads(line)
            if line.strip() in content or struct.pack("<%df" % len(rec["x"]), *rec["x"]) in content:
                found += 1
    return found


if mode == "sleep":
    child = subprocess.Popen(["sleep", "3600"])
    sys.stderr.write("child=%d\n" % child.pid)
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
    while True:
        time.sleep(3600)

if mode == "crash":
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "exit3":
    sys.stderr.write("something went wrong\n")
    sys.exit(3)

if mode == "early":
    # Replies without reading the records: Aegis's writes then hit a closed pipe.
    t.save_safetensors(header["output"], plus_one())
    reply({"aegis_trainer": 1, "num_examples": 1, "metrics": {}})
    os._exit(0)

digest, lines = read_records()

if mode == "secret":
    sys.stderr.write("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n")
    sys.stderr.write("first record: %s" % lines[0].decode())
    sys.stderr.write("api_token=s3cr3t-v4lu3 and x = %r\n" % (json.loads(lines[0])["x"],))
    sys.exit(1)

if mode == "garbage":
    print("loading model...")
    reply({"aegis_trainer": 1, "num_examples": 2, "metrics": {}})
    sys.exit(0)

if mode == "notjson":
    sys.stdout.write("done!\n")
    sys.exit(0)

if mode == "badversion":
    reply({"aegis_trainer": 2, "num_examples": 2, "metrics": {}})
    sys.exit(0)

if mode == "nooutput":
    reply({"aegis_trainer": 1, "num_examples": 2, "metrics": {}})
    sys.exit(0)

if header["kind"] == "evaluate":
    reply({"aegis_trainer": 1, "num_examples": len(lines), "loss": 0.5, "metrics": {"accuracy": 0.75, "records_hash48": int(digest[:12], 16)}})
    sys.exit(0)

w = plus_one()
if mode == "extra":
    w["surprise"] = t.np.zeros((2,), t.np.float32)
elif mode == "missing":
    w.pop(tensors[-1]["name"])
elif mode == "misshaped":
    first = tensors[0]["name"]
    w[first] = w[first].reshape(-1)[:-1]
elif mode == "nan":
    w[tensors[0]["name"]][...] = float("nan")
t.save_safetensors(header["output"], w)
if mode == "oversized":
    with open(header["output"], "ab") as f:
        f.write(b"\0" * (4 * 1024 * 1024))

reply(
    {
        "aegis_trainer": 1,
        "num_examples": len(lines),
        "metrics": {
            "records_hash48": int(digest[:12], 16),
            "dir_mode": os.stat(call_dir).st_mode & 0o777,
            "files_in_dir": len(os.listdir(call_dir)),
            "records_in_files": records_in_files(lines),
            "aegis_env": sum(1 for k in os.environ if k.startswith("AEGIS_")),
        },
    }
)
