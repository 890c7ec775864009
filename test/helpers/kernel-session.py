# Drives a tslab kernel through a script of steps, as Jupyter's front end would, and prints what happened as JSON.
# Used by test/notebooks.test.ts (the stop button during training). Run with the notebooks' virtual environment's
# Python (jupyter_client); the kernel is the one JUPYTER_PATH names.
#
# Usage: python kernel-session.py CWD STEPS_JSON
#   STEPS_JSON: a list of {"execute": CODE} | {"wait_for": TEXT, "timeout": SECONDS} | {"sleep": SECONDS}
#               | {"interrupt": true} | {"mark": NAME}
# Prints {"streams": [[MARK, TEXT], ...], "alive": BOOL, "exitCode": INT|null, "timedOut": TEXT|null}: every stdout or
# stderr text the kernel sent, with the last mark before it.
import json
import queue
import sys
import time

from jupyter_client.manager import KernelManager

cwd, steps = sys.argv[1], json.loads(sys.argv[2])
km = KernelManager(kernel_name='tslab')
km.start_kernel(cwd=cwd)
kc = km.client()
kc.start_channels()
streams, mark, timed_out = [], '', None


def pump(seconds, until=None):
    """Collects stream output for `seconds`, or until a text containing `until` arrives; True if it did."""
    end = time.time() + seconds
    while time.time() < end:
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if msg['msg_type'] == 'stream':
            text = msg['content'].get('text', '')
            streams.append([mark, text])
            if until is not None and until in text:
                return True
    return False


try:
    kc.wait_for_ready(timeout=120)
    for step in steps:
        if 'execute' in step:
            kc.execute(step['execute'])
        elif 'wait_for' in step:
            if not pump(step.get('timeout', 60), step['wait_for']):
                timed_out = step['wait_for']
                break
        elif 'sleep' in step:
            pump(step['sleep'])
        elif 'interrupt' in step:
            km.interrupt_kernel()
        elif 'mark' in step:
            mark = step['mark']
    process = getattr(km.provisioner, 'process', None)
    exit_code = process.poll() if process is not None else None
    print(json.dumps({'streams': streams, 'alive': km.is_alive(), 'exitCode': exit_code, 'timedOut': timed_out}))
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
