"""A tap around a real trainer, for the network tests: tap_trainer.py TAPDIR LABEL -- CMD...

Passes the call through to CMD unchanged (stdin streamed, stdout and exit status passed back)
and, after a successful fit, copies the trained weights the trainer wrote to
TAPDIR/LABEL-r<round>.safetensors — so a test reads back what the trainer wrote, not what it
claimed. A file TAPDIR/LABEL.fail makes the next fit fail instead (its content: "crash" kills
the wrapper, "sleep" never answers); the file is used up.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

tap, label = sys.argv[1], sys.argv[2]
cmd = sys.argv[sys.argv.index("--") + 1 :]
header_line = sys.stdin.buffer.readline()
header = json.loads(header_line)

fail = os.path.join(tap, label + ".fail")
if header["kind"] == "fit" and os.path.exists(fail):
    with open(fail) as f:
        mode = f.read().strip()
    os.remove(fail)
    if mode == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:
        time.sleep(3600)

child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def pump():
    try:
        child.stdin.write(header_line)
        shutil.copyfileobj(sys.stdin.buffer, child.stdin)
        child.stdin.close()
    except BrokenPipeError:
        pass


t = threading.Thread(target=pump, daemon=True)
t.start()
out = child.stdout.read()
code = child.wait()
if code == 0 and header["kind"] == "fit":
    shutil.copyfile(header["output"], os.path.join(tap, "%s-r%d.safetensors" % (label, header["context"]["round"])))
sys.stdout.buffer.write(out)
sys.stdout.flush()
sys.exit(code)
