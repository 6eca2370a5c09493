//! The webhook handler: each event its filter selects becomes an HTTP POST
//! of JSON to one granted URL, handed to the host's outbox, which delivers
//! it beside the pipeline and retries until the destination accepts it.
//!
//! Presets shape the body: `json` (the event whole), `slack` (an incoming
//! webhook's `text`, which Mattermost takes too) and `pagerduty` (an
//! Events API v2 `trigger` with a dedup key, so that PagerDuty folds
//! repeats of one alert into one incident). Optional headers, an
//! `Authorization` value and an HMAC-SHA256 signature of the body
//! (`X-Correlator-Signature: sha256=HEX`) come from the configuration and
//! from granted secrets; secrets never appear in the handler's log lines.

mod body;

use body::Preset;
use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, export_handler};
use hmac::{Hmac, Mac as _};

struct Webhook {
    url: String,
    preset: Preset,
    /// Headers every request carries (besides `Content-Type`).
    headers: Vec<(String, String)>,
    /// The key that signs each body, if one is granted.
    signing_key: Option<Vec<u8>>,
    /// PagerDuty: the integration's routing key.
    routing_key: String,
    /// PagerDuty: the field whose value makes the dedup key.
    dedup_field: String,
}

impl Handler for Webhook {
    fn describe() -> Descriptor {
        Descriptor::new(
            "webhook",
            "posts each event as JSON to a granted URL, delivered with retries",
        )
        .config(ConfigItem::text(
            "url",
            "",
            "the http:// or https:// URL to post to; its HOST:PORT must be granted (grants = { network = [...] })",
        ))
        .config(ConfigItem::text(
            "preset",
            "json",
            "the body: \"json\" (the whole event), \"slack\" (Slack or Mattermost incoming webhook) or \"pagerduty\" (Events API v2)",
        ))
        .config(ConfigItem::text(
            "headers",
            "",
            "more headers, \"Name=value\" separated by \";\" (e.g. \"X-Team=secops; X-Env=prod\")",
        ))
        .config(ConfigItem::text(
            "authorization_secret",
            "",
            "the name of a granted secret whose value is sent as the Authorization header (e.g. \"Bearer ...\")",
        ))
        .config(ConfigItem::text(
            "hmac_secret",
            "",
            "the name of a granted secret that signs each body: X-Correlator-Signature: sha256=HEX",
        ))
        .config(ConfigItem::text(
            "routing_key_secret",
            "",
            "pagerduty: the name of the granted secret holding the integration's routing key",
        ))
        .config(ConfigItem::text(
            "dedup_field",
            "host",
            "pagerduty: the event field whose value, with the module and kind, makes the dedup key",
        ))
    }

    fn init() -> Result<Self, String> {
        let text = correlator_sdk::config::text;
        let url = text("url")?.trim().to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "url must be an http:// or https:// URL, not \"{}\"",
                url.escape_debug()
            ));
        }
        let preset = match text("preset")?.as_str() {
            "json" => Preset::Json,
            "slack" => Preset::Slack,
            "pagerduty" => Preset::PagerDuty,
            other => {
                return Err(format!(
                    "preset must be \"json\", \"slack\" or \"pagerduty\", not \"{}\"",
                    other.escape_debug()
                ));
            }
        };
        let mut headers = Vec::new();
        for pair in text("headers")?
            .split(';')
            .filter(|pair| !pair.trim().is_empty())
        {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                format!(
                    "headers: \"{}\" is not Name=value",
                    pair.trim().escape_debug()
                )
            })?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let authorization = text("authorization_secret")?;
        if !authorization.is_empty() {
            headers.push((
                "Authorization".to_owned(),
                correlator_sdk::secrets::named_by("authorization_secret", &authorization)?,
            ));
        }
        let signing = text("hmac_secret")?;
        let signing_key = if signing.is_empty() {
            None
        } else {
            Some(correlator_sdk::secrets::named_by("hmac_secret", &signing)?.into_bytes())
        };
        let routing = text("routing_key_secret")?;
        let routing_key = match (preset, routing.is_empty()) {
            (Preset::PagerDuty, true) => {
                return Err(
                    "the pagerduty preset needs routing_key_secret (the name of a granted secret)"
                        .into(),
                );
            }
            (_, true) => String::new(),
            (_, false) => correlator_sdk::secrets::named_by("routing_key_secret", &routing)?,
        };
        Ok(Webhook {
            url,
            preset,
            headers,
            signing_key,
            routing_key,
            dedup_field: text("dedup_field")?,
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        let body = body::render(self.preset, event, &self.routing_key, &self.dedup_field);
        let mut headers = self.headers.clone();
        if let Some(key) = &self.signing_key {
            headers.push(("X-Correlator-Signature".to_owned(), signature(key, &body)));
        }
        correlator_sdk::delivery::post_json(&self.url, &headers, body)
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`.
fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let mut text = String::from("sha256=");
    for byte in mac.finalize().into_bytes() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

export_handler!(Webhook);

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
