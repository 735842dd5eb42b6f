#!/usr/bin/python3
"""
A tap around a real trainer, for tests: `torch_tap.py TAP_DIR TRAINER_SCRIPT [MODE]`.

It runs TRAINER_SCRIPT (with this Python) on the same stdin, passes its reply through, and
after a successful fit copies the trained weights it wrote (the header's `output`) to
TAP_DIR/fit-r<round>-<n>.safetensors, with its reply as fit-r<round>-<n>.json — what the test
then compares the coordinator's aggregate with.

MODE makes it a broken evaluator while the file TAP_DIR/broken exists (otherwise it is the
trainer itself): `hang` sleeps for ever (a timeout), `garbage` prints a line that is no reply,
`crash` exits 3.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

tap_dir, script = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else None

if mode and os.path.exists(os.path.join(tap_dir, "broken")):
    sys.stdin.read()
    if mode == "hang":
        while True:
            time.sleep(60)
    if mode == "garbage":
        print("this is not a reply")
        sys.exit(0)
    sys.exit(3)

header_line = sys.stdin.buffer.readline()
header = json.loads(header_line)
child = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
child.stdin.write(header_line)
shutil.copyfileobj(sys.stdin.buffer, child.stdin)
child.stdin.close()
reply = child.stdout.read()
code = child.wait()
if code == 0 and header["kind"] == "fit":
    name = "fit-r%d-%s" % (header["context"]["round"], uuid.uuid4().hex[:12])
    shutil.copyfile(header["output"], os.path.join(tap_dir, name + ".safetensors"))
    with open(os.path.join(tap_dir, name + ".json"), "wb") as f:
        f.write(reply)
sys.stdout.buffer.write(reply)
sys.stdout.flush()
sys.exit(code)
