//! A logic module that, at its first record, sends `GET /` over `wasi:http`
//! to the `authority` its configuration names, reporting the try as a
//! `Probe` event: `status N`, or `denied: ERROR`.

use correlator_sdk::{
    ConfigItem, Descriptor, Event, EventType, Module, Record, Severity, config, export_module,
};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

struct HostileHttp {
    authority: String,
    probed: bool,
}

/// One GET; the status, or why there is none.
fn get(authority: &str) -> Result<u16, String> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "method")?;
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request
        .set_path_with_query(Some("/"))
        .map_err(|()| "path")?;
    let response = outgoing_handler::handle(request, None).map_err(|error| format!("{error:?}"))?;
    response.subscribe().block();
    match response.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        Some(Ok(Err(error))) => Err(format!("{error:?}")),
        Some(Err(())) | None => Err("no response".into()),
    }
}

impl Module for HostileHttp {
    fn describe() -> Descriptor {
        Descriptor::new(
            "hostile-http",
            "sends an HTTP request where it is told, for tests",
        )
        .config(ConfigItem::text(
            "authority",
            "127.0.0.1:9",
            "HOST:PORT to send GET / to",
        ))
        .event(
            EventType::new("Probe", Severity::Info, "one try")
                .text("probe", "what was tried")
                .text("outcome", "status N, or denied and why"),
        )
    }

    fn init() -> Result<Self, String> {
        Ok(HostileHttp {
            authority: config::text("authority")?,
            probed: false,
        })
    }

    fn process(&mut self, _record: &Record<'_>) {
        if std::mem::replace(&mut self.probed, true) {
            return;
        }
        let outcome = match get(&self.authority) {
            Ok(status) => format!("status {status}"),
            Err(error) => format!("denied: {error}"),
        };
        let _ = Event::new(
            "Probe",
            format!("GET http://{}/: {outcome}", self.authority),
        )
        .text("probe", format!("GET http://{}/", self.authority))
        .text("outcome", outcome)
        .dispatch();
    }
}

export_module!(HostileHttp);
