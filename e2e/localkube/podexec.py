"""Container entry helper of the process kubelet (runs as root, inside the pod netns).

``ip netns exec <pod-netns> python3 podexec.py SPEC.json`` — ``ip netns exec`` has
already given the process its own mount namespace (with ``/`` made a slave, so
nothing mounted here reaches the host) and the pod's network namespace. This
helper then:

* gives the process its own UTS namespace with the pod's hostname,
* bind-mounts each volume source at its ``mountPath`` (read-only where asked),
* changes to ``workingDir`` and execs the container command with its env.

Mount points that do not exist on the host are created (empty directories or
files); the kubelet removes the ones it created when the pod goes away.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys

CLONE_NEWUTS = 0x04000000
PR_SET_PDEATHSIG = 1


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    # Die with the kubelet (its spawner thread forked us; survives the exec below).
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the kubelet is already gone
        sys.exit(1)
    if libc.unshare(CLONE_NEWUTS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUTS)")
    host = spec["hostname"].encode()
    if libc.sethostname(host, len(host)) != 0:
        raise OSError(ctypes.get_errno(), "sethostname")
    for m in spec["mounts"]:
        src, dst = m["source"], m["target"]
        if os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if not os.path.exists(dst):
                open(dst, "a").close()
        subprocess.run(["mount", "--bind", src, dst], check=True)
        if m.get("readOnly"):
            subprocess.run(["mount", "-o", "remount,bind,ro", dst], check=True)
    os.chdir(spec.get("workingDir") or "/")
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main()
