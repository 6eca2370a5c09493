//! An RFC 5322 message of a subject and a text (and HTML) body: headers
//! encoded so that no event text can add a header or a line, bodies in
//! base64. Pure, tested natively.

use std::fmt::Write as _;

/// The subject unless a template says otherwise.
pub const DEFAULT_SUBJECT: &str = "[{{ module }} :: {{ kind }}] {{ summary }}";

/// The text body unless a template says otherwise.
pub const DEFAULT_TEXT: &str = "{{ summary }}\n\nModule: {{ module }}\nEvent: {{ kind }}\nSeverity: {{ severity }}\nTime: {{ time }}\n{% for name, value in fields|items %}{{ name }}: {{ value }}\n{% endfor %}";

/// A rendered text body may start with `Subject: ...` and an empty line
/// (as the original's templates could): that line is the subject, the rest
/// the body.
pub fn split_subject(rendered: &str) -> (Option<String>, String) {
    if let Some(rest) = rendered.strip_prefix("Subject:") {
        let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
        let body = body
            .strip_prefix('\n')
            .or_else(|| body.strip_prefix("\r\n"))
            .unwrap_or(body);
        return (Some(line.trim().to_owned()), body.to_owned());
    }
    (None, rendered.to_owned())
}

/// A header value on one line: line breaks and other controls become
/// spaces, and text that is not plain ASCII is encoded (RFC 2047, UTF-8,
/// base64, in words of at most 45 bytes).
pub fn header_value(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.is_ascii() {
        return flat;
    }
    let mut words = Vec::new();
    let mut word = String::new();
    for c in flat.chars() {
        if word.len() + c.len_utf8() > 45 {
            words.push(format!(
                "=?UTF-8?B?{}?=",
                correlator_sdk::text::base64(word.as_bytes())
            ));
            word.clear();
        }
        word.push(c);
    }
    if !word.is_empty() {
        words.push(format!(
            "=?UTF-8?B?{}?=",
            correlator_sdk::text::base64(word.as_bytes())
        ));
    }
    words.join("\r\n ")
}

/// What a message is made of.
pub struct Parts<'a> {
    /// The sender.
    pub from: &'a str,
    /// The recipients.
    pub to: &'a [String],
    /// The subject, as rendered.
    pub subject: &'a str,
    /// `Date:` value (RFC 5322).
    pub date: &'a str,
    /// `Message-ID:` value, without the angle brackets.
    pub message_id: &'a str,
    /// The text body.
    pub text: &'a str,
    /// The HTML body, sent beside the text one.
    pub html: Option<&'a str>,
}

/// The message, CRLF line ends.
pub fn compose(parts: &Parts<'_>) -> Vec<u8> {
    let mut out = String::new();
    let _ = write!(out, "From: {}\r\n", header_value(parts.from));
    let _ = write!(out, "To: {}\r\n", header_value(&parts.to.join(", ")));
    let _ = write!(out, "Subject: {}\r\n", header_value(parts.subject));
    let _ = write!(out, "Date: {}\r\n", header_value(parts.date));
    let _ = write!(out, "Message-ID: <{}>\r\n", header_value(parts.message_id));
    out.push_str("MIME-Version: 1.0\r\n");
    let part = |out: &mut String, kind: &str, body: &str| {
        let _ = write!(
            out,
            "Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        );
        let encoded = correlator_sdk::text::base64(body.as_bytes());
        for line in encoded.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(line).unwrap_or(""));
            out.push_str("\r\n");
        }
    };
    match parts.html {
        None => part(&mut out, "plain", parts.text),
        Some(html) => {
            // Parts are base64, whose alphabet has no `-`: the boundary
            // cannot occur in them.
            let boundary = "--correlator-alternative--";
            let _ = write!(
                out,
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
            );
            let _ = write!(out, "--{boundary}\r\n");
            part(&mut out, "plain", parts.text);
            let _ = write!(out, "--{boundary}\r\n");
            part(&mut out, "html", html);
            let _ = write!(out, "--{boundary}--\r\n");
        }
    }
    out.into_bytes()
}

/// `Date:` of seconds since the epoch at `offset_minutes` east of UTC.
pub fn rfc5322_date(seconds: i64, offset_minutes: i16) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = seconds + i64::from(offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    let second = local.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let offset = i32::from(offset_minutes).abs();
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        second / 3600,
        second / 60 % 60,
        second % 60,
        offset / 60,
        offset % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_stay_on_their_line_and_other_scripts_are_encoded() {
        assert_eq!(
            header_value("login failed\r\nBcc: everyone@example.com"),
            "login failed  Bcc: everyone@example.com"
        );
        assert_eq!(header_value("Grüße"), "=?UTF-8?B?R3LDvMOfZQ==?=");
        let long = header_value(&"é".repeat(40));
        assert_eq!(long.lines().count(), 2, "{long}");
        assert!(
            long.lines()
                .all(|line| line.trim().starts_with("=?UTF-8?B?"))
        );
    }

    #[test]
    fn a_template_may_set_the_subject_in_its_first_line() {
        assert_eq!(
            split_subject("Subject: Brute force\n\nBlock it."),
            (Some("Brute force".to_owned()), "Block it.".to_owned())
        );
        assert_eq!(split_subject("Block it."), (None, "Block it.".to_owned()));
    }

    #[test]
    fn messages_are_composed_with_base64_parts() {
        let to = ["a@example.com".to_owned(), "b@example.com".to_owned()];
        let message = compose(&Parts {
            from: "correlator@example.com",
            to: &to,
            subject: "x\ny",
            date: &rfc5322_date(1_676_905_967, 60),
            message_id: "1.2@correlator",
            text: "hi",
            html: None,
        });
        assert_eq!(
            String::from_utf8(message).expect("ASCII"),
            "From: correlator@example.com\r\nTo: a@example.com, b@example.com\r\nSubject: x y\r\n\
             Date: Mon, 20 Feb 2023 16:12:47 +0100\r\nMessage-ID: <1.2@correlator>\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n"
        );
        assert_eq!(rfc5322_date(0, -330), "Wed, 31 Dec 1969 18:30:00 -0530");
    }
}
