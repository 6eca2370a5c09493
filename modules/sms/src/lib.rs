//! The SMS handler: each event its filter selects becomes a text message to
//! every recipient, sent through a Twilio-compatible REST API (a form POST
//! to `{api_base}/2010-04-01/Accounts/{account_sid}/Messages.json` with
//! Basic authorization from a granted secret), handed to the host's outbox,
//! which delivers it beside the pipeline and retries until the API accepts
//! it. The text is the original's (`On <time> the event <kind> occurred.
//! The message is: <summary>`) unless a template (inline, or a file in the
//! granted directory) says otherwise.

mod message;

use correlator_sdk::template::Template;
use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, export_handler};
use message::{DEFAULT_TEMPLATE, MAX_CHARACTERS, basic_authorization, form};

struct Sms {
    url: String,
    authorization: String,
    from: String,
    to: Vec<String>,
    template: Template,
}

impl Handler for Sms {
    fn describe() -> Descriptor {
        Descriptor::new(
            "sms",
            "sends each event as a text message through a Twilio-compatible API, delivered with retries",
        )
        .config(ConfigItem::text(
            "api_base",
            "https://api.twilio.com",
            "the API's base URL; its HOST:PORT must be granted (grants = { network = [...] })",
        ))
        .config(ConfigItem::text(
            "account_sid",
            "",
            "the account the messages are sent from",
        ))
        .config(ConfigItem::text(
            "token_secret",
            "",
            "the name of the granted secret holding the account's auth token",
        ))
        .config(ConfigItem::text("from", "", "the sending number (E.164)"))
        .config(ConfigItem::text(
            "to",
            "",
            "the recipients' numbers (E.164), a list or comma-separated",
        ))
        .config(ConfigItem::text(
            "template",
            "",
            "the text, a minijinja template over module, kind, severity, time, summary and fields; empty: the original's text",
        ))
        .config(ConfigItem::text(
            "template_file",
            "",
            "a file in the granted directory holding the template (instead of template)",
        ))
    }

    fn init() -> Result<Self, String> {
        let text = correlator_sdk::config::text;
        let required = correlator_sdk::config::required_text;
        let api_base = required("api_base")?;
        let account_sid = required("account_sid")?;
        if !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "account_sid must be letters and digits, not \"{}\"",
                account_sid.escape_debug()
            ));
        }
        let token = correlator_sdk::secrets::named_by("token_secret", &required("token_secret")?)?;
        let to = correlator_sdk::config::text_list("to")?;
        if to.is_empty() {
            return Err("to must name at least one number".into());
        }
        let source = match (text("template")?, text("template_file")?) {
            (inline, file) if !inline.is_empty() && !file.is_empty() => {
                return Err("give template or template_file, not both".into());
            }
            (_, file) if !file.is_empty() => std::fs::read_to_string(&file).map_err(|error| {
                format!("cannot read template_file \"{file}\": {error} (is it in the granted directory?)")
            })?,
            (inline, _) if !inline.is_empty() => inline,
            _ => DEFAULT_TEMPLATE.to_owned(),
        };
        Ok(Sms {
            url: format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                api_base.trim_end_matches('/')
            ),
            authorization: basic_authorization(&account_sid, &token),
            from: required("from")?,
            to,
            template: Template::new(&source)?,
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        let body = self.template.render(event, MAX_CHARACTERS)?;
        let headers = [
            ("Authorization".to_owned(), self.authorization.clone()),
            (
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ];
        for to in &self.to {
            let form = form(&[("To", to), ("From", &self.from), ("Body", &body)]);
            correlator_sdk::delivery::send_http("POST", &self.url, &headers, form.into_bytes())?;
        }
        Ok(())
    }
}

export_handler!(Sms);
