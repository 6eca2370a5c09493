//! The e-mail handler: each event its filter selects becomes a message to
//! every recipient, with a subject and a text (optionally HTML) body
//! rendered from templates, sent through an SMTP server (STARTTLS, TLS or
//! plain; AUTH PLAIN with a password from a granted secret, over TLS only)
//! by the host's courier, which retries until the server accepts it.
//!
//! Templates are minijinja over the event's module, kind, severity, time,
//! summary and fields, inline in the app file or in a file of the granted
//! directory; a text template may set the subject in its first line
//! (`Subject: ...`), as the original's could. Headers are encoded so that
//! no event text adds a header or a line; bodies go in base64.

mod message;

use correlator_sdk::delivery::{Mail, MailSecurity};
use correlator_sdk::template::Template;
use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, export_handler};
use message::{DEFAULT_SUBJECT, DEFAULT_TEXT, Parts, compose, rfc5322_date, split_subject};

/// Longest subject rendered, in characters.
const MAX_SUBJECT: usize = 500;

/// Longest body rendered, in characters.
const MAX_BODY: usize = 100_000;

struct Email {
    server: String,
    security: MailSecurity,
    username: String,
    password_secret: String,
    from: String,
    to: Vec<String>,
    subject: Template,
    text: Template,
    html: Option<Template>,
    /// Messages made so far, for unique Message-IDs.
    sent: u64,
}

/// A template from `inline` or, when `file` is set, from that file (in the
/// granted directory); `default` when both are empty.
fn template(
    key: &str,
    inline: &str,
    file: &str,
    default: Option<&str>,
) -> Result<Option<Template>, String> {
    let source = match (inline.is_empty(), file.is_empty()) {
        (false, false) => return Err(format!("give {key} or {key}_file, not both")),
        (true, false) => std::fs::read_to_string(file).map_err(|error| {
            format!("cannot read {key}_file \"{file}\": {error} (is it in the granted directory?)")
        })?,
        (false, true) => inline.to_owned(),
        (true, true) => match default {
            Some(default) => default.to_owned(),
            None => return Ok(None),
        },
    };
    Template::new(&source)
        .map(Some)
        .map_err(|error| format!("{key}: {error}"))
}

impl Handler for Email {
    fn describe() -> Descriptor {
        Descriptor::new(
            "email",
            "sends each event as an e-mail through an SMTP server, delivered with retries",
        )
        .config(ConfigItem::text(
            "smtp_server",
            "",
            "HOST:PORT of the SMTP server; it must be granted (grants = { network = [...] })",
        ))
        .config(ConfigItem::text(
            "tls",
            "starttls",
            "\"starttls\", \"tls\" (from the first byte) or \"none\"",
        ))
        .config(ConfigItem::text(
            "username",
            "",
            "the user to authenticate as; empty: no authentication",
        ))
        .config(ConfigItem::text(
            "password_secret",
            "",
            "the name of the granted secret holding the password",
        ))
        .config(ConfigItem::text("from", "", "the sender's address"))
        .config(ConfigItem::text(
            "to",
            "",
            "the recipients' addresses, a list or comma-separated",
        ))
        .config(ConfigItem::text(
            "subject",
            "",
            "the subject template; empty: [module :: kind] summary",
        ))
        .config(ConfigItem::text(
            "template",
            "",
            "the text body template (its first line may be \"Subject: ...\"); empty: the summary and every field",
        ))
        .config(ConfigItem::text(
            "template_file",
            "",
            "a file in the granted directory holding the text body template",
        ))
        .config(ConfigItem::text(
            "html_template",
            "",
            "an HTML body template, sent beside the text one; empty: text only",
        ))
        .config(ConfigItem::text(
            "html_template_file",
            "",
            "a file in the granted directory holding the HTML body template",
        ))
    }

    fn init() -> Result<Self, String> {
        let text = correlator_sdk::config::text;
        let required = correlator_sdk::config::required_text;
        let security = match text("tls")?.as_str() {
            "starttls" => MailSecurity::Starttls,
            "tls" => MailSecurity::Tls,
            "none" => MailSecurity::None,
            other => {
                return Err(format!(
                    "tls must be \"starttls\", \"tls\" or \"none\", not \"{}\"",
                    other.escape_debug()
                ));
            }
        };
        let username = text("username")?;
        let password_secret = text("password_secret")?;
        if !username.is_empty() {
            if password_secret.is_empty() {
                return Err("username is set: password_secret must name a granted secret".into());
            }
            correlator_sdk::secrets::named_by("password_secret", &password_secret)?;
            if security == MailSecurity::None {
                return Err(
                    "a password is sent over TLS only: set tls = \"starttls\" or \"tls\"".into(),
                );
            }
        }
        let to = correlator_sdk::config::text_list("to")?;
        if to.is_empty() {
            return Err("to must name at least one address".into());
        }
        let subject = template("subject", &text("subject")?, "", Some(DEFAULT_SUBJECT))?;
        let body = template(
            "template",
            &text("template")?,
            &text("template_file")?,
            Some(DEFAULT_TEXT),
        )?;
        let html = template(
            "html_template",
            &text("html_template")?,
            &text("html_template_file")?,
            None,
        )?;
        let (Some(subject), Some(text_body)) = (subject, body) else {
            return Err("a subject and a text template are needed".into());
        };
        Ok(Email {
            server: required("smtp_server")?,
            security,
            username,
            password_secret,
            from: required("from")?,
            to,
            subject,
            text: text_body,
            html,
            sent: 0,
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        let rendered = self.text.render(event, MAX_BODY)?;
        let (set_subject, text) = split_subject(&rendered);
        let subject = match set_subject {
            Some(subject) => subject,
            None => self.subject.render(event, MAX_SUBJECT)?,
        };
        let html = self
            .html
            .as_ref()
            .map(|html| html.render(event, MAX_BODY))
            .transpose()?;
        self.sent += 1;
        let message_id = format!(
            "{}.{}.{}@correlator",
            event.time.seconds, event.time.nanoseconds, self.sent
        );
        let message = compose(&Parts {
            from: &self.from,
            to: &self.to,
            subject: &subject,
            date: &rfc5322_date(event.time.seconds, event.time.offset_minutes),
            message_id: &message_id,
            text: &text,
            html: html.as_deref(),
        });
        correlator_sdk::delivery::send_mail(Mail {
            server: &self.server,
            security: self.security,
            username: &self.username,
            password_secret: &self.password_secret,
            sender: &self.from,
            recipients: &self.to,
            message,
        })
    }
}

export_handler!(Email);
