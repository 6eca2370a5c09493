//! Judging what a handler case's handler handed over for delivery, as the
//! runtime captured it (`delivery.capture`): HTTP requests and mails, each
//! expectation a subset of what one must hold.

use super::judge::{Expectation, judge_all, judge_unexpected};
use super::{Case, ExpectMail, ExpectRequest, indent};

impl Expectation for ExpectRequest {
    fn is_of_kind(&self, delivery: &serde_json::Value) -> bool {
        delivery["kind"] == "http"
    }

    fn what(&self) -> String {
        "request(s)".to_owned()
    }

    fn none(&self) -> String {
        "no request at all".to_owned()
    }

    fn shown(delivery: &serde_json::Value) -> String {
        shown_delivery(delivery)
    }

    fn count(&self) -> Option<usize> {
        self.count
    }

    fn differences(&self, request: &serde_json::Value) -> Vec<String> {
        let mut differences = exact_differences(&self.exact(), request);
        let headers = request["headers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (name, wanted) in &self.headers {
            let got = headers.iter().find_map(|header| {
                let header = header.as_array()?;
                let is_it = header.first()?.as_str()?.eq_ignore_ascii_case(name);
                is_it.then(|| header.get(1)?.as_str())?
            });
            match got {
                None => differences.push(format!("no header {name} (expected {wanted:?})")),
                Some(got) if got != wanted => {
                    differences.push(format!("header {name} {got:?} (expected {wanted:?})"));
                }
                Some(_) => {}
            }
        }
        let body = request["body"].as_str().unwrap_or("");
        for text in &self.body_contains {
            if !body.contains(text.as_str()) {
                differences.push(format!("the body does not contain {text:?}"));
            }
        }
        differences
    }

    fn describe(&self) -> String {
        let mut parts = exact_parts(&self.exact());
        parts.extend(
            self.headers
                .iter()
                .map(|(name, value)| format!("header {name} = {value:?}")),
        );
        parts.extend(
            self.body_contains
                .iter()
                .map(|text| format!("body containing {text:?}")),
        );
        with_parts(parts)
    }
}

impl Expectation for ExpectMail {
    fn is_of_kind(&self, delivery: &serde_json::Value) -> bool {
        delivery["kind"] == "mail"
    }

    fn what(&self) -> String {
        "mail(s)".to_owned()
    }

    fn none(&self) -> String {
        "no mail at all".to_owned()
    }

    fn shown(delivery: &serde_json::Value) -> String {
        shown_delivery(delivery)
    }

    fn count(&self) -> Option<usize> {
        self.count
    }

    fn differences(&self, mail: &serde_json::Value) -> Vec<String> {
        let mut differences = exact_differences(&self.exact(), mail);
        if let Some(wanted) = &self.recipients {
            let got = recipients(mail);
            if got != *wanted {
                differences.push(format!("recipients {got:?} (expected {wanted:?})"));
            }
        }
        let message = readable_mail(mail["message"].as_str().unwrap_or(""));
        for text in &self.contains {
            if !message.contains(text.as_str()) {
                differences.push(format!("the message does not contain {text:?}"));
            }
        }
        differences
    }

    fn describe(&self) -> String {
        let mut parts = exact_parts(&self.exact());
        if let Some(recipients) = &self.recipients {
            parts.push(format!("recipients = {recipients:?}"));
        }
        parts.extend(
            self.contains
                .iter()
                .map(|text| format!("containing {text:?}")),
        );
        with_parts(parts)
    }
}

impl ExpectRequest {
    /// The keys it expects exactly, with what it expects (if anything).
    fn exact(&self) -> [(&'static str, &Option<String>); 3] {
        [
            ("method", &self.method),
            ("url", &self.url),
            ("body", &self.body),
        ]
    }
}

impl ExpectMail {
    /// The keys it expects exactly, with what it expects (if anything).
    fn exact(&self) -> [(&'static str, &Option<String>); 2] {
        [("server", &self.server), ("sender", &self.sender)]
    }
}

/// `key VALUE (expected "...")` for each expected key `item` has otherwise.
fn exact_differences(
    exact: &[(&'static str, &Option<String>)],
    item: &serde_json::Value,
) -> Vec<String> {
    exact
        .iter()
        .filter_map(|&(key, wanted)| {
            let wanted = wanted.as_ref()?;
            (item[key].as_str() != Some(wanted.as_str()))
                .then(|| format!("{key} {} (expected {wanted:?})", item[key]))
        })
        .collect()
}

/// `key = "..."` for each expected key.
fn exact_parts(exact: &[(&'static str, &Option<String>)]) -> Vec<String> {
    exact
        .iter()
        .filter_map(|(key, value)| Some(format!("{key} = {:?}", value.as_ref()?)))
        .collect()
}

/// A captured mail's envelope recipients.
fn recipients(mail: &serde_json::Value) -> Vec<&str> {
    mail["recipients"]
        .as_array()
        .map(|all| all.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default()
}

/// `mail via SERVER from SENDER to RECIPIENTS`.
fn envelope(mail: &serde_json::Value) -> String {
    let text = |key: &str| mail[key].as_str().unwrap_or("");
    format!(
        "mail via {} from {} to {}",
        text("server"),
        text("sender"),
        recipients(mail).join(", ")
    )
}

/// `with { a, b }`, or nothing for no parts.
fn with_parts(parts: Vec<String>) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!(" with {{ {} }}", parts.join(", "))
    }
}

/// What of the case's request and mail expectations the captured
/// deliveries do not meet; empty when they meet all.
pub(super) fn judge_deliveries(case: &Case, deliveries: &[serde_json::Value]) -> String {
    let mut report = String::new();
    let mut matched = vec![false; deliveries.len()];
    judge_all(&case.expect_request, deliveries, &mut matched, &mut report);
    judge_all(&case.expect_mail, deliveries, &mut matched, &mut report);
    if case.only_expected && case.is_handler_case() {
        judge_unexpected(
            deliveries,
            &matched,
            "deliveries",
            shown_delivery,
            &mut report,
        );
    }
    report
}

/// `POST URL: body` or `mail via SERVER to RECIPIENTS: first line`.
pub(super) fn shown_delivery(delivery: &serde_json::Value) -> String {
    let text = |key: &str| delivery[key].as_str().unwrap_or("").to_owned();
    if delivery["kind"] == "mail" {
        let subject = text("message")
            .lines()
            .find(|line| line.to_ascii_lowercase().starts_with("subject:"))
            .unwrap_or("")
            .to_owned();
        format!("{}: {subject}", envelope(delivery))
    } else {
        format!("{} {}: {}", text("method"), text("url"), text("body"))
    }
}

/// A delivery whole, for the list at the end of a failure: a request's
/// headers and body, a mail's envelope and readable text.
pub(super) fn delivery_in_full(delivery: &serde_json::Value) -> String {
    let text = |key: &str| delivery[key].as_str().unwrap_or("").to_owned();
    if delivery["kind"] == "mail" {
        format!(
            "{}:\n{}",
            envelope(delivery),
            indent(&readable_mail(&text("message")))
        )
    } else {
        let headers: String = delivery["headers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|header| {
                let header = header.as_array()?;
                Some(format!(
                    "{}: {}\n",
                    header.first()?.as_str()?,
                    header.get(1)?.as_str()?
                ))
            })
            .collect();
        format!(
            "{} {}\n{}",
            text("method"),
            text("url"),
            indent(&format!("{headers}\n{}", text("body")))
        )
    }
}

/// A mail as a person reads it: its headers (encoded words decoded) and
/// each text part's body decoded from base64 or quoted-printable, so that
/// expectations name the text rather than its encoding.
pub(super) fn readable_mail(message: &str) -> String {
    let message = message.replace("\r\n", "\n");
    let (head, body) = message.split_once("\n\n").unwrap_or((&message, ""));
    // Folded header lines are one line.
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let content_type = header("Content-Type").unwrap_or_default();
    let mut out: String = head
        .lines()
        .map(|line| format!("{}\n", decode_words(line)))
        .collect();
    out.push('\n');
    let boundary = content_type
        .to_ascii_lowercase()
        .starts_with("multipart/")
        .then(|| {
            let (_, rest) = content_type.split_once("boundary=")?;
            Some(rest.split(';').next()?.trim_matches('"').to_owned())
        })
        .flatten();
    match boundary {
        Some(boundary) => {
            let delimiter = format!("--{boundary}");
            for part in body.split(delimiter.as_str()).skip(1) {
                if part.starts_with("--") {
                    break;
                }
                out.push_str(&readable_mail(part.trim_start_matches('\n')));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        None => {
            let encoding = header("Content-Transfer-Encoding")
                .unwrap_or_default()
                .to_ascii_lowercase();
            out.push_str(&decode_body(body, &encoding));
        }
    }
    out
}

/// A body in its transfer encoding, decoded (as it is when not base64 or
/// quoted-printable, or not valid).
fn decode_body(body: &str, encoding: &str) -> String {
    use base64::Engine as _;
    match encoding {
        "base64" => {
            let joined: String = body.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(joined)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|_| body.to_owned())
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.to_owned(),
    }
}

/// Quoted-printable (RFC 2045): `=XX` bytes and soft line breaks.
fn decode_quoted_printable(body: &str) -> String {
    let body = body.replace("=\n", "");
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A header line with its encoded words (`=?utf-8?B?...?=`, RFC 2047)
/// decoded.
fn decode_words(line: &str) -> String {
    use base64::Engine as _;
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = rest[start + 2..]
            .split_once("?=")
            .and_then(|(word, after)| {
                let mut pieces = word.splitn(3, '?');
                let (_charset, encoding, text) = (pieces.next()?, pieces.next()?, pieces.next()?);
                let bytes = match encoding {
                    "B" | "b" => base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()?,
                    "Q" | "q" => decode_quoted_printable(&text.replace('_', " ")).into_bytes(),
                    _ => return None,
                };
                Some((String::from_utf8_lossy(&bytes).into_owned(), after))
            });
        let Some((text, after)) = decoded else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        // White space between two encoded words is not text.
        let between = &rest[..start];
        if !(after_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&text);
        rest = after;
        after_word = true;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::readable_mail;

    #[test]
    fn mails_read_as_their_decoded_text() {
        let message = "From: a@example.com\r\n\
            Subject: =?utf-8?B?w6ljaGVj?= =?utf-8?Q?_de_connexion?=\r\n\
            Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n\
            --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: base64\r\n\r\naGVsbG8g\r\nd29ybGQ=\r\n\
            --b1\r\nContent-Type: text/html\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>caf=C3=A9 =\r\nau lait</p>\r\n\
            --b1--\r\n";
        assert_eq!(
            readable_mail(message),
            "From: a@example.com\n\
             Subject: échec de connexion\n\
             Content-Type: multipart/alternative; boundary=\"b1\"\n\n\
             Content-Type: text/plain; charset=utf-8\n\
             Content-Transfer-Encoding: base64\n\n\
             hello world\n\
             Content-Type: text/html\n\
             Content-Transfer-Encoding: quoted-printable\n\n\
             <p>café au lait</p>\n"
        );
    }
}
