#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! The official `openai` Python SDK (from PyPI) as a real client. Missing SDK = failure.

mod common;

use std::process::Command;

use common::*;

#[test]
fn openai_python_sdk_round_trips() {
    let mock = mock();
    let extra = model("broken", "mock;status=500") + &model("flaky", "mock;reset_after=3");
    let gw = Gateway::start(&upstream_config(mock.addr, &extra), TWO_SHARDS);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py");
    let out = Command::new("python3")
        .args([script, &format!("http://{}/v1", gw.addr)])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai SDK checks failed (is `pip install openai` done? .ci/run installs it)\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}
