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

use crate::sys::delivery as host;

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

pub use host::MailSecurity;

/// An e-mail for [`send_mail`]: the SMTP server and how to reach it, the
/// envelope, and the message whole (headers and body, RFC 5322), which the
/// handler renders and encodes.
#[derive(Debug, Clone)]
pub struct Mail<'a> {
    /// `HOST:PORT` of the SMTP server; it must be granted.
    pub server: &'a str,
    /// STARTTLS, TLS from the start, or none.
    pub security: MailSecurity,
    /// The user to authenticate as; empty: none (a password goes over TLS
    /// only).
    pub username: &'a str,
    /// The name of the granted secret with the password: the host reads it
    /// when it sends, so it is never kept with the mail.
    pub password_secret: &'a str,
    /// The envelope's sender.
    pub sender: &'a str,
    /// The envelope's recipients.
    pub recipients: &'a [String],
    /// Headers and body.
    pub message: Vec<u8>,
}

/// Hand over an e-mail; `Err` says why the host refused it.
pub fn send_mail(mail: Mail<'_>) -> Result<(), String> {
    host::send_mail(&host::MailRequest {
        server: mail.server.to_owned(),
        security: mail.security,
        username: mail.username.to_owned(),
        password_secret: mail.password_secret.to_owned(),
        sender: mail.sender.to_owned(),
        recipients: mail.recipients.to_vec(),
        message: mail.message,
    })
}
