//! Delivery, for handlers that act on events: render a request and hand it
//! to the host, which keeps it in the handler's outbox and sends it beside
//! the pipeline until the destination accepts it, retrying with backoff.
//! The destination must be granted (`grants = { network = ["HOST:PORT"] }`).
//!
//! ```no_run
//! fn alert(text: &str) -> Result<(), String> {
//!     correlator_sdk::delivery::post_json(
//!         "https://hooks.example.com/services/T0/B0/x",
//!         &[],
//!         format!("{{\"text\":{text:?}}}").into_bytes(),
//!     )
//! }
//! ```

use crate::__bindings::handler::correlator::plugin::delivery as host;

/// Hand over an HTTP request: `method` (`POST`, `PUT` or `PATCH`), an
/// `http`/`https` URL whose host and port are granted, headers, a body.
/// `Err` says why the host refused it (not granted, malformed, the outbox
/// full); the host then counts the event as failed for this handler.
pub fn send_http(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<(), String> {
    host::send_http(&host::HttpRequest {
        method: method.to_owned(),
        url: url.to_owned(),
        headers: headers.to_vec(),
        body,
    })
}

/// [`send_http`] of a JSON body with `POST` (`Content-Type:
/// application/json` is added).
pub fn post_json(url: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<(), String> {
    let mut all = Vec::with_capacity(headers.len() + 1);
    all.push(("Content-Type".to_owned(), "application/json".to_owned()));
    all.extend_from_slice(headers);
    send_http("POST", url, &all, body)
}
