//! A hand-made RELP client for the tests (the network's and the stream's
//! front-ends).

/// A hand-made RELP client: frames out, answers in (over TCP or TLS).
pub struct RelpClient<S: std::io::Read + std::io::Write> {
    stream: S,
    received: Vec<u8>,
    next_txnr: u64,
}

impl<S: std::io::Read + std::io::Write> RelpClient<S> {
    /// Open a session over `stream`; returns the client and the server's
    /// answer to `open`.
    pub fn open(stream: S) -> (Self, String) {
        let mut client = RelpClient {
            stream,
            received: Vec::new(),
            next_txnr: 1,
        };
        client.send(
            "open",
            "relp_version=0\nrelp_software=test\ncommands=syslog",
        );
        let (txnr, offers) = client.answer().expect("an answer to open");
        assert_eq!(txnr, 1);
        (client, offers)
    }

    /// Send a command; returns its transaction number.
    pub fn send(&mut self, command: &str, data: &str) -> u64 {
        let txnr = self.next_txnr;
        self.next_txnr += 1;
        let frame = if data.is_empty() {
            format!("{txnr} {command} 0\n")
        } else {
            format!("{txnr} {command} {} {data}\n", data.len())
        };
        self.stream
            .write_all(frame.as_bytes())
            .and_then(|()| self.stream.flush())
            .expect("send a frame");
        txnr
    }

    /// The next frame from the server as (txnr, data) when it is an
    /// answer (`rsp`), (0, command) for a hint; `None` once the server has
    /// closed.
    pub fn answer(&mut self) -> Option<(u64, String)> {
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            let mut buffer = [0u8; 4096];
            match std::io::Read::read(&mut self.stream, &mut buffer) {
                Ok(0) => return None,
                Ok(count) => self.received.extend_from_slice(&buffer[..count]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return None;
                }
                Err(error) => panic!("reading answers: {error}"),
            }
        }
    }

    fn take_frame(&mut self) -> Option<(u64, String)> {
        let text = &self.received;
        let mut parts = text.splitn(4, |&byte| byte == b' ' || byte == b'\n');
        let txnr: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let command = std::str::from_utf8(parts.next()?).ok()?.to_owned();
        let length_text = parts.next()?;
        let length: usize = std::str::from_utf8(length_text).ok()?.parse().ok()?;
        let header = txnr.to_string().len() + 1 + command.len() + 1 + length_text.len();
        let (data, end) = if length == 0 {
            (String::new(), header + 1)
        } else {
            let start = header + 1;
            let data = text.get(start..start + length)?;
            (
                String::from_utf8_lossy(data).into_owned(),
                start + length + 1,
            )
        };
        if text.len() < end {
            return None;
        }
        assert_eq!(text[end - 1], b'\n', "a frame ends with a line feed");
        self.received.drain(..end);
        Some(match command.as_str() {
            "rsp" => (txnr, data),
            _ => (txnr, command),
        })
    }
}
