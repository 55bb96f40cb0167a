//! Properties of the request-head parser and the router over arbitrary
//! input: whatever a client sends, the server decides something, never
//! panics, and never claims more bytes than it was given.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

use std::time::Duration;

use proptest::prelude::*;
use tracebench_server::Outcome;
use tracebench_server::http::{
    HeadError, MAX_HEAD_BYTES, RequestHead, parse_head, plan, render_response,
};

fn request_line() -> impl Strategy<Value = String> {
    let method = prop_oneof!["GET", "HEAD", "POST", "DELETE", "[A-Z]{1,8}"];
    let target = prop_oneof![
        Just("/".to_owned()),
        "/[a-z]{0,8}",
        "/\\?delay=[0-9]{1,5}(ms|s|us)?",
        "/\\?[a-z=&]{0,20}",
    ];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")];
    (method, target, version).prop_map(|(m, t, v)| format!("{m} {t} {v}\r\n"))
}

fn header() -> impl Strategy<Value = String> {
    let name = prop_oneof!["Host", "Connection", "Content-Length", "X-[A-Za-z]{1,10}"];
    let value = prop_oneof!["close", "keep-alive", "[0-9]{1,4}", "[ -~]{0,30}"];
    (name, value).prop_map(|(n, v)| format!("{n}: {v}\r\n"))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_never_overclaim(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(Some(head)) = parse_head(&bytes) {
            prop_assert!(head.len <= bytes.len());
            let decided = plan(&head, Duration::ZERO);
            let mut out = Vec::new();
            render_response(decided.outcome, true, decided.head_only, &mut out);
            prop_assert!(out.starts_with(b"HTTP/1.1 "));
        }
    }

    #[test]
    fn well_formed_heads_parse_whole_and_route(
        line in request_line(),
        headers in proptest::collection::vec(header(), 0..10),
    ) {
        let raw = format!("{line}{}\r\n", headers.concat());
        match parse_head(raw.as_bytes()) {
            Ok(Some(RequestHead { len, method, .. })) => {
                prop_assert_eq!(len, raw.len());
                prop_assert!(line.starts_with(&method));
                let head = parse_head(raw.as_bytes()).unwrap().unwrap();
                let decided = plan(&head, Duration::from_millis(1));
                if decided.outcome == Outcome::Ok {
                    prop_assert!(method == "GET" || method == "HEAD");
                    prop_assert!(decided.delay <= Duration::from_secs(60));
                }
            }
            // Two different Content-Length values, or a non-numeric one.
            Err(HeadError::Malformed) => prop_assert!(raw.contains("Content-Length")),
            other => prop_assert!(false, "{raw:?} gave {other:?}"),
        }
    }

    #[test]
    fn every_prefix_of_a_head_asks_for_more(cut in 0usize..40) {
        let raw = b"GET /?delay=5ms HTTP/1.1\r\nHost: x\r\n\r\n";
        let cut = cut.min(raw.len() - 1);
        prop_assert_eq!(parse_head(&raw[..cut]), Ok(None));
    }

    #[test]
    fn heads_longer_than_the_limit_are_refused(extra in 0usize..4096) {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(MAX_HEAD_BYTES + extra, b'a');
        prop_assert_eq!(parse_head(&raw), Err(HeadError::TooLarge));
    }
}
