//! One e-mail, sent over a connection of its own to an SMTP server (RFC
//! 5321): EHLO, STARTTLS or TLS from the start, AUTH PLAIN (only over TLS),
//! MAIL FROM, RCPT TO for each recipient, DATA (dot-stuffed), QUIT. A 4xx
//! reply may pass (tried again), a 5xx is a refusal for good.

use super::http::Outcome;
use super::{MailRequest, MailSecurity};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole session.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest reply line read.
const MAX_LINE: usize = 4096;

/// Send `mail` once; `password` is the granted secret's value, if it
/// authenticates.
pub async fn send(
    mail: &MailRequest,
    password: Option<&str>,
    tls: &Arc<rustls::ClientConfig>,
) -> Outcome {
    match tokio::time::timeout(SESSION_TIMEOUT, session(mail, password, tls)).await {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(outcome)) => outcome,
        Err(_) => Outcome::Failed {
            reason: format!(
                "the SMTP session took longer than {} s",
                SESSION_TIMEOUT.as_secs()
            ),
            retry_after: None,
        },
    }
}

fn failed(reason: String) -> Outcome {
    Outcome::Failed {
        reason,
        retry_after: None,
    }
}

async fn session(
    mail: &MailRequest,
    password: Option<&str>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(), Outcome> {
    let (host, _) = mail
        .server
        .rsplit_once(':')
        .ok_or_else(|| Outcome::Refused(format!("\"{}\" is not HOST:PORT", mail.server)))?;
    let host = host.trim_matches(['[', ']']).to_owned();
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&mail.server),
    )
    .await
    .map_err(|_| {
        failed(format!(
            "cannot connect to {} within {} s",
            mail.server,
            CONNECT_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|error| failed(format!("cannot connect to {}: {error}", mail.server)))?;
    let _ = stream.set_nodelay(true);
    match mail.security {
        MailSecurity::Tls => {
            let stream = upgrade(stream, &host, tls).await?;
            let mut smtp = Smtp { stream };
            smtp.expect("greeting", 220).await?;
            smtp.ehlo().await?;
            smtp.deliver(mail, password, true).await
        }
        MailSecurity::Starttls => {
            let mut smtp = Smtp { stream };
            smtp.expect("greeting", 220).await?;
            let offers = smtp.ehlo().await?;
            if !offers
                .iter()
                .any(|line| line.eq_ignore_ascii_case("STARTTLS"))
            {
                return Err(Outcome::Refused(format!(
                    "{} does not offer STARTTLS (tls = \"starttls\")",
                    mail.server
                )));
            }
            smtp.command("STARTTLS", 220).await?;
            let stream = upgrade(smtp.stream, &host, tls).await?;
            let mut smtp = Smtp { stream };
            smtp.ehlo().await?;
            smtp.deliver(mail, password, true).await
        }
        MailSecurity::None => {
            let mut smtp = Smtp { stream };
            smtp.expect("greeting", 220).await?;
            smtp.ehlo().await?;
            smtp.deliver(mail, password, false).await
        }
    }
}

async fn upgrade(
    stream: tokio::net::TcpStream,
    host: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Outcome> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|error| {
        Outcome::Refused(format!("\"{host}\" is not a TLS server name: {error}"))
    })?;
    tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, stream)
        .await
        .map_err(|error| failed(format!("TLS with {host} failed: {error}")))
}

/// An SMTP session over a stream.
struct Smtp<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp<S> {
    /// Read one reply (all its lines); its code and the text of its lines.
    async fn reply(&mut self) -> Result<(u16, Vec<String>), Outcome> {
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            loop {
                let byte = self.stream.read_u8().await.map_err(|error| {
                    failed(format!("the SMTP server closed the session: {error}"))
                })?;
                if byte == b'\n' {
                    break;
                }
                if line.len() < MAX_LINE {
                    line.push(byte);
                }
            }
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned();
            let code: u16 = line
                .get(..3)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| failed(format!("not an SMTP reply: {line:?}")))?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if last {
                return Ok((code, lines));
            }
        }
    }

    /// Read a reply that must have code `wanted` (for `what`).
    async fn expect(&mut self, what: &str, wanted: u16) -> Result<Vec<String>, Outcome> {
        let (code, lines) = self.reply().await?;
        if code == wanted || (wanted == 250 && code == 251) {
            return Ok(lines);
        }
        let said = format!(
            "{what}: the SMTP server answered {code} {}",
            lines.join(" ")
        );
        Err(if (400..500).contains(&code) {
            failed(said)
        } else {
            Outcome::Refused(said)
        })
    }

    /// Send `line` and read a reply that must have code `wanted`. What is
    /// logged of the command is its verb only (AUTH carries credentials).
    async fn command(&mut self, line: &str, wanted: u16) -> Result<Vec<String>, Outcome> {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|error| failed(format!("the SMTP session broke: {error}")))?;
        let verb = line.split(' ').next().unwrap_or(line);
        self.expect(verb, wanted).await
    }

    /// EHLO; the extensions the server offers.
    async fn ehlo(&mut self) -> Result<Vec<String>, Outcome> {
        self.command("EHLO correlator", 250).await
    }

    /// Authenticate if asked, then the envelope and the message.
    async fn deliver(
        &mut self,
        mail: &MailRequest,
        password: Option<&str>,
        secure: bool,
    ) -> Result<(), Outcome> {
        if !mail.username.is_empty() {
            if !secure {
                return Err(Outcome::Refused(
                    "a password is sent over TLS only: set tls = \"starttls\" or \"tls\"".into(),
                ));
            }
            let password = password.unwrap_or("");
            let token = base64(format!("\0{}\0{password}", mail.username).as_bytes());
            self.command(&format!("AUTH PLAIN {token}"), 235).await?;
        }
        self.command(&format!("MAIL FROM:<{}>", mail.sender), 250)
            .await?;
        for recipient in &mail.recipients {
            self.command(&format!("RCPT TO:<{recipient}>"), 250).await?;
        }
        self.command("DATA", 354).await?;
        let data = dot_stuffed(&mail.message);
        self.stream
            .write_all(&data)
            .await
            .map_err(|error| failed(format!("the SMTP session broke: {error}")))?;
        self.expect("the message", 250).await?;
        // The mail is accepted; how the session ends does not matter.
        let _ = self.stream.write_all(b"QUIT\r\n").await;
        Ok(())
    }
}

/// The message as DATA carries it: CRLF line ends, a line starting with
/// `.` doubled, and the final `.` line.
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let text = String::from_utf8_lossy(message);
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // `split` gave an empty last line for a message ending in LF.
    if message.ends_with(b"\n") {
        out.truncate(out.len() - 2);
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let group = u32::from(chunk[0]) << 16
            | u32::from(chunk.get(1).copied().unwrap_or(0)) << 8
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(group >> (18 - 6 * index) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_dot_stuffed_with_crlf_line_ends() {
        assert_eq!(
            dot_stuffed(b"Subject: x\n\n.hidden\nend\n"),
            b"Subject: x\r\n\r\n..hidden\r\nend\r\n.\r\n"
        );
        assert_eq!(dot_stuffed(b"a\r\nb"), b"a\r\nb\r\n.\r\n");
    }

    #[test]
    fn auth_plain_is_base64_of_the_nul_separated_credentials() {
        // RFC 4616's example ("\0tim\0tanstaaftanstaaf").
        assert_eq!(
            base64(b"\0tim\0tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
    }
}
