//! One HTTP request, sent on a connection of its own (HTTP/1.1, TLS for
//! `https` with the web's root certificates), and what its answer means
//! for the delivery.

use super::HttpRequest;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::io::TokioIo;

/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole exchange, from the connection to the answer's end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most of an answer's body read (only to end the exchange cleanly).
const ANSWER_BYTES: usize = 64 * 1024;

/// What became of one try.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Accepted,
    /// A refusal that trying again would not change (a 4xx other than 408
    /// and 429, a redirect, a request the client cannot make).
    Refused(String),
    /// A failure that may pass; `retry_after` when the destination said
    /// when to come back.
    Failed {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// Send `request` once, trusting `tls` for `https`.
pub async fn send(request: &HttpRequest, tls: &Arc<rustls::ClientConfig>) -> Outcome {
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(request, tls)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed {
            reason: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
            retry_after: None,
        },
    }
}

async fn exchange(request: &HttpRequest, tls: &Arc<rustls::ClientConfig>) -> Outcome {
    let failed = |reason: String| Outcome::Failed {
        reason,
        retry_after: None,
    };
    let uri: http::Uri = match request.url.parse() {
        Ok(uri) => uri,
        Err(error) => return Outcome::Refused(format!("not a URL: {error}")),
    };
    let https = uri.scheme_str() == Some("https");
    let Some(host) = uri
        .host()
        .map(|host| host.trim_matches(['[', ']']).to_owned())
    else {
        return Outcome::Refused("the URL names no host".into());
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await;
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return failed(format!("cannot connect to {host}:{port}: {error}")),
        Err(_) => {
            return failed(format!(
                "cannot connect to {host}:{port} within {} s",
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(path_of(&uri))
        .header(http::header::HOST, authority_of(&uri));
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let outgoing = match builder.body(Full::new(Bytes::from(request.body.clone()))) {
        Ok(outgoing) => outgoing,
        Err(error) => return Outcome::Refused(format!("cannot make the request: {error}")),
    };
    let answer = if https {
        let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
            Ok(name) => name,
            Err(error) => {
                return Outcome::Refused(format!("\"{host}\" is not a TLS server name: {error}"));
            }
        };
        match tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, stream)
            .await
        {
            Ok(stream) => round_trip(TokioIo::new(stream), outgoing).await,
            Err(error) => return failed(format!("TLS with {host}:{port} failed: {error}")),
        }
    } else {
        round_trip(TokioIo::new(stream), outgoing).await
    };
    match answer {
        Ok((status, retry_after)) => judge(status, retry_after),
        Err(reason) => failed(reason),
    }
}

/// Send `outgoing` over `io`; the answer's status and `Retry-After`.
async fn round_trip<T>(
    io: T,
    outgoing: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Option<Duration>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    let driver = tokio::spawn(connection);
    let answer = sender
        .send_request(outgoing)
        .await
        .map_err(|error| format!("the request failed: {error}"));
    let result = match answer {
        Ok(answer) => {
            let status = answer.status();
            let retry_after = answer
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            // Read (a bounded part of) the body, so that the exchange ends.
            let mut body = answer.into_body();
            let mut read = 0;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > ANSWER_BYTES {
                    break;
                }
            }
            Ok((status, retry_after))
        }
        Err(error) => Err(error),
    };
    driver.abort();
    result
}

/// What an answer's status means for the delivery.
fn judge(status: http::StatusCode, retry_after: Option<Duration>) -> Outcome {
    if status.is_success() {
        Outcome::Accepted
    } else if status == http::StatusCode::REQUEST_TIMEOUT
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Outcome::Failed {
            reason: format!("the destination answered {status}"),
            retry_after,
        }
    } else {
        Outcome::Refused(format!("the destination answered {status}"))
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (from now).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn path_of(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned())
}

fn authority_of(uri: &http::Uri) -> String {
    uri.authority()
        .map_or_else(String::new, |authority| authority.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_accepted_retried_or_refused_for_good() {
        let retry = Some(Duration::from_secs(7));
        assert_eq!(judge(http::StatusCode::NO_CONTENT, None), Outcome::Accepted);
        for status in [408, 429, 500, 502, 503] {
            let status = http::StatusCode::from_u16(status).expect("status");
            assert_eq!(
                judge(status, retry),
                Outcome::Failed {
                    reason: format!("the destination answered {status}"),
                    retry_after: retry
                }
            );
        }
        for status in [301, 400, 401, 403, 404, 413] {
            let status = http::StatusCode::from_u16(status).expect("status");
            assert_eq!(
                judge(status, None),
                Outcome::Refused(format!("the destination answered {status}"))
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: now"
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        let waited = parse_retry_after(&httpdate::fmt_http_date(later)).expect("a date");
        assert!(waited > Duration::from_secs(3500) && waited <= Duration::from_secs(3600));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
