#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Graceful shutdown: SIGTERM while streams run.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn sigterm_during_20_streams_lets_all_complete_and_exits_0() {
    let mock = mock();
    let extra = &model("long", "mock;chunks=10;interval_ms=100");
    let config = upstream_config(mock.addr, extra).replace(
        "shutdown_grace_ms = 10000",
        "shutdown_grace_ms = 10000\ndrain_delay_ms = 1000",
    );
    let mut gw = Gateway::start(&config, TWO_SHARDS);
    let addr = gw.addr;
    let streams: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let body = chat_body("long", &format!("stream {i}"), true);
                request(addr, "POST", "/v1/chat/completions", &[], body.as_bytes())
            })
        })
        .collect();
    // Let every stream start (the scrape itself is not counted), then ask the gateway to stop.
    poll_until(Duration::from_secs(10), "every stream started", || {
        gw.metric("gateway_inflight_requests") == 20.0
    });
    gw.sigterm();
    // Readiness fails at once, while the listener is still open (drain delay).
    poll_until(Duration::from_millis(800), "readiness fails", || {
        gw.get("/ready").status == 503
    });
    gw.get("/ready").assert_error(503, "draining");
    for (i, s) in streams.into_iter().enumerate() {
        let res = s.join().unwrap();
        assert_eq!(res.status, 200, "stream {i}");
        let events = res.events();
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "stream {i} complete: {events:?}"
        );
        assert_eq!(
            stream_text(&events),
            format!("This is a mock reply to: stream {i}")
        );
    }
    let status = gw
        .wait(Duration::from_secs(15))
        .expect("gateway exits after the drain");
    assert!(status.success(), "exit code: {status:?}\n{}", gw.stderr());
    // After exit, new connections are refused.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
