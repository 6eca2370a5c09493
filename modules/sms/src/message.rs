//! The text of a message and the request that carries it: pure, tested
//! natively.

/// The original's text: `On <time> the event <id> occurred. The message
/// is: <summary>`.
pub const DEFAULT_TEMPLATE: &str =
    "On {{ time }} the event {{ kind }} occurred. The message is: {{ summary }}";

/// Longest text sent (Twilio's limit for one message, in characters).
pub const MAX_CHARACTERS: usize = 1600;

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        push_encoded(&mut out, name);
        out.push('=');
        push_encoded(&mut out, value);
    }
    out
}

fn push_encoded(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

/// `Basic` authorization for `user` and `password` (RFC 7617).
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        correlator_sdk::text::base64(format!("{user}:{password}").as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use correlator_sdk::template::Template;
    use correlator_sdk::{DeliveredEvent, Field, Severity, Timestamp, Value};

    fn event() -> DeliveredEvent {
        DeliveredEvent {
            module: "OpenSSH".into(),
            kind: "SSHDAttemptsExceeded".into(),
            severity: Severity::Error,
            time: Timestamp {
                seconds: 1_676_905_967,
                nanoseconds: 0,
                offset_minutes: 60,
            },
            summary: "192.0.2.7 tried too often".into(),
            fields: vec![Field {
                name: "host".into(),
                value: Value::Text("192.0.2.7".into()),
            }],
        }
    }

    #[test]
    fn the_default_text_is_the_originals() {
        let template = Template::new(DEFAULT_TEMPLATE).expect("compiles");
        assert_eq!(
            template.render(&event(), MAX_CHARACTERS).expect("renders"),
            "On 2023-02-20T16:12:47+01:00 the event SSHDAttemptsExceeded occurred. The message is: 192.0.2.7 tried too often"
        );
    }

    #[test]
    fn forms_and_basic_authorization_are_encoded_as_their_rfcs_say() {
        assert_eq!(
            form(&[("To", "+15551234567"), ("Body", "a b&c=d/é")]),
            "To=%2B15551234567&Body=a+b%26c%3Dd%2F%C3%A9"
        );
        // RFC 7617's example.
        assert_eq!(
            basic_authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_authorization("a", "b"), "Basic YTpi");
    }
}
