"""What the SDK scripts share: named checks that print one line each, the mock probe (what
shardgate-mock recorded, served by the Rust test, see `with_probe` in tests/common), and the
gateway's per-model token counters.

Unlike tests/sdk/openai_sdk.py, a failed check does not stop the run: every section runs, an
exception inside one counts as that section's failure, and the last line is
`N passed, M failed` (exit status 1 when M > 0), so one run reports every broken case.
"""

import json
import sys
import time
import traceback
import urllib.request

passed = 0
failed = []


def check(name, cond, detail=""):
    """One named check: `ok   name`, or `FAIL name: detail`."""
    global passed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed.append(name)
        print(f"FAIL {name}: {detail}")
    return cond


def section(name, fn, *args):
    """Run one group of checks; an exception fails the group and the run goes on."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001  (any error is a failure of this section)
        failed.append(f"{name} (raised)")
        print(f"FAIL {name}: raised {type(e).__name__}: {e}")
        traceback.print_exc(limit=3, file=sys.stdout)


def finish():
    print(f"{passed} passed, {len(failed)} failed")
    if failed:
        print("failed: " + "; ".join(failed))
        sys.exit(1)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Probe:
    """The Rust test's window on the in-process mock."""

    def __init__(self, addr):
        self.base = f"http://{addr}"

    def usage(self):
        """The mock's usage of its last answer: input, output, cached_input, reasoning."""
        return get_json(self.base + "/usage")

    def chat(self):
        """The last chat request the mock received: path, headers, body (text)."""
        return get_json(self.base + "/chat")


def model_tokens(gateway, model):
    """`gateway_model_tokens_total{model=...}` by type, from the gateway's /metrics."""
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {"input": 0.0, "output": 0.0, "cached_input": 0.0, "reasoning": 0.0}
    prefix = f'gateway_model_tokens_total{{model="{model}",type="'
    for line in text.splitlines():
        if line.startswith(prefix):
            kind = line[len(prefix):].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def delta(before, after):
    return {k: after[k] - before[k] for k in after}


def settled_delta(gateway, model, before, want, tries=50):
    """The token delta since `before`, read again (up to `tries` times, 0.05 s apart) while
    it differs from `want`: a streamed answer may be booked just after the client read its
    last event. Returns the last delta read; the caller compares it."""
    for i in range(tries):
        d = delta(before, model_tokens(gateway, model))
        if all(d[k] == v for k, v in want.items()):
            if i:
                print(f"note {model}: /metrics caught up after {i + 1} reads")
            return d
        time.sleep(0.05)
    return d


def post_raw(url, headers, body):
    """POST bytes straight to a URL; the status and the whole body as bytes."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# A 1x1 PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
