use super::*;

const DEFAULTS: TraditionalDefaults = TraditionalDefaults {
    year: 2023,
    offset_minutes: 0,
};

fn ok(line: &str) -> Parsed<'_> {
    match parse(line, &DEFAULTS) {
        Ok(parsed) => parsed,
        Err(error) => panic!("{line:?} should parse: {error}"),
    }
}

#[test]
fn parses_rfc5424_from_the_sample_capture() {
    let parsed = ok(
        "<86>1 2023-02-20T15:12:47.757250-05:00 giganode1 sshd 2540460 - - Accepted publickey for timp from 192.168.1.85 port 60116 ssh2: RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A",
    );
    assert_eq!(parsed.facility, 10);
    assert_eq!(parsed.severity, 6);
    assert_eq!(parsed.timestamp.seconds, 1_676_923_967);
    assert_eq!(parsed.timestamp.nanoseconds, 757_250_000);
    assert_eq!(parsed.timestamp.offset_minutes, -300);
    assert_eq!(parsed.hostname, "giganode1");
    assert_eq!(parsed.app_name, "sshd");
    assert_eq!(parsed.proc_id, "2540460");
    assert_eq!(parsed.msg_id, "");
    assert_eq!(parsed.structured_data, "");
    assert_eq!(
        parsed.message,
        "Accepted publickey for timp from 192.168.1.85 port 60116 ssh2: RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A"
    );
}

#[test]
fn parses_rfc5424_nil_fields() {
    let parsed = ok("<13>1 - - - - - -");
    assert_eq!(parsed.timestamp.seconds, 0);
    assert_eq!(
        (
            parsed.hostname,
            parsed.app_name,
            parsed.proc_id,
            parsed.msg_id,
            parsed.structured_data,
            parsed.message
        ),
        ("", "", "", "", "", "")
    );
}

#[test]
fn parses_rfc5424_structured_data_with_escapes_and_several_elements() {
    let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high" note="a \"quoted\] \\ value"] An application event"#;
    let parsed = ok(line);
    assert_eq!(parsed.msg_id, "ID47");
    assert_eq!(
        parsed.structured_data,
        r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high" note="a \"quoted\] \\ value"]"#
    );
    assert_eq!(parsed.message, "An application event");
    assert_eq!(parsed.timestamp.nanoseconds, 3_000_000);
}

#[test]
fn strips_the_bom_before_msg() {
    let parsed = ok(
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8",
    );
    assert_eq!(parsed.message, "'su root' failed for lonvick on /dev/pts/8");
    assert_eq!(parsed.facility, 4);
    assert_eq!(parsed.severity, 2);
}

#[test]
fn parses_structured_data_without_message() {
    let parsed = ok(r#"<13>1 2003-10-11T22:14:15Z h a p m [id k="v"]"#);
    assert_eq!(parsed.structured_data, r#"[id k="v"]"#);
    assert_eq!(parsed.message, "");
}

#[test]
fn rejects_bad_pri() {
    assert_eq!(
        parse("<192>1 - - - - - -", &DEFAULTS),
        Err(ParseError::BadPri("<192>".into()))
    );
    assert_eq!(
        parse("<>1 - - - - - -", &DEFAULTS),
        Err(ParseError::BadPri("<>".into()))
    );
    assert_eq!(
        parse("<1a>1 - - - - - -", &DEFAULTS),
        Err(ParseError::BadPri("<1a>".into()))
    );
    assert_eq!(
        parse("<13", &DEFAULTS),
        Err(ParseError::BadPri("<13".into()))
    );
}

#[test]
fn rejects_truncated_lines() {
    assert_eq!(
        parse("<13>1 2003-10-11T22:14:15Z host app", &DEFAULTS),
        Err(ParseError::Truncated("the app-name"))
    );
    assert_eq!(
        parse("<13>1 2003-10-11T22:14:15Z host app 1 ID ", &DEFAULTS),
        Err(ParseError::Truncated("the structured data"))
    );
    assert_eq!(
        parse("<13>1 2003-10-11T22:14:15Z h a p m [id k=\"v", &DEFAULTS),
        Err(ParseError::BadStructuredData(0))
    );
    assert_eq!(
        parse("Feb 20 15:12", &DEFAULTS),
        Err(ParseError::BadTraditionalTimestamp("Feb 20 15:12".into()))
    );
    assert_eq!(parse("   ", &DEFAULTS), Err(ParseError::Empty));
    assert_eq!(
        parse("<13>1 2023-02-30T00:00:00Z h a p m -", &DEFAULTS),
        Err(ParseError::ImpossibleDate {
            date: "Feb 30".into(),
            year: 2023,
            days: 28
        })
    );
    assert_eq!(
        parse("<13>1 2023-02-20T25:00:00Z h a p m -", &DEFAULTS),
        Err(ParseError::BadTimestamp("2023-02-20T25:00:00Z".into()))
    );
}

#[test]
fn an_impossible_date_says_so() {
    let error = parse("Nov 31 10:00:01 host sshd[1]: hello", &DEFAULTS).map(|_| ());
    assert_eq!(
        error,
        Err(ParseError::ImpossibleDate {
            date: "Nov 31".into(),
            year: 2023,
            days: 30
        })
    );
    assert_eq!(
        error.map_err(|error| error.to_string()),
        Err("impossible date Nov 31 2023: the month has 30 days".into())
    );
    assert_eq!(
        parse("Feb 29 10:00:01 host sshd[1]: hello", &DEFAULTS),
        Err(ParseError::ImpossibleDate {
            date: "Feb 29".into(),
            year: 2023,
            days: 28
        })
    );
    assert_eq!(
        parse("Nov 31 25:00:01 host sshd[1]: hello", &DEFAULTS),
        Err(ParseError::ImpossibleDate {
            date: "Nov 31".into(),
            year: 2023,
            days: 30
        })
    );
    assert_eq!(
        parse("Nov 30 25:00:01 host sshd[1]: hello", &DEFAULTS),
        Err(ParseError::BadTraditionalTimestamp(
            "Nov 30 25:00:01 host".into()
        ))
    );
}

#[test]
fn parses_the_timestamps_real_senders_and_journalctl_write() {
    let time = |line: &str| {
        let parsed = ok(line);
        assert_eq!(
            (
                parsed.hostname,
                parsed.app_name,
                parsed.proc_id,
                parsed.message
            ),
            ("host", "sshd", "1", "hello"),
            "{line}"
        );
        (
            parsed.timestamp.seconds,
            parsed.timestamp.nanoseconds,
            parsed.timestamp.offset_minutes,
        )
    };
    // 2023-02-07T16:01:07Z; the day unpadded, padded by a space or a zero.
    for line in [
        "Feb 7 16:01:07 host sshd[1]: hello",
        "Feb  7 16:01:07 host sshd[1]: hello",
        "Feb 07 16:01:07 host sshd[1]: hello",
        "<38>Feb 7 16:01:07 host sshd[1]: hello",
    ] {
        assert_eq!(time(line), (1_675_785_667, 0, 0));
    }
    // A year before the date, where senders add one: it wins over the
    // configured year.
    assert_eq!(
        time("2026 Nov 29 10:00:01 host sshd[1]: hello"),
        (1_795_946_401, 0, 0)
    );
    assert_eq!(
        time("2026 Nov  9 10:00:01 host sshd[1]: hello"),
        (1_794_218_401, 0, 0)
    );
    // journalctl -o short-iso and short-iso-precise: offsets without a colon.
    assert_eq!(
        time("2026-11-29T10:00:01+0000 host sshd[1]: hello"),
        (1_795_946_401, 0, 0)
    );
    assert_eq!(
        time("2026-11-29T11:00:01.123456+0100 host sshd[1]: hello"),
        (1_795_946_401, 123_456_000, 60)
    );
    assert_eq!(
        time("2026-11-29T05:00:01-0500 host sshd[1]: hello"),
        (1_795_946_401, 0, -300)
    );
    // RFC 5424 lines may drop the colon too.
    assert_eq!(
        ok("<13>1 2026-11-29T10:00:01.5+0000 host sshd 1 - - hello")
            .timestamp
            .seconds,
        1_795_946_401
    );
    // What still is not a timestamp.
    for line in [
        "Feb 123 16:01:07 host sshd[1]: hello",
        "Feb 7 16:01 host sshd[1]: hello",
        "Feb7 16:01:07 host sshd[1]: hello",
        "2026 Foo 29 10:00:01 host sshd[1]: hello",
    ] {
        assert!(
            matches!(
                parse(line, &DEFAULTS),
                Err(ParseError::BadTraditionalTimestamp(_))
            ),
            "{line}: {:?}",
            parse(line, &DEFAULTS)
        );
    }
    assert_eq!(
        parse("2026-11-29T10:00:01+000 host sshd[1]: hello", &DEFAULTS),
        Err(ParseError::BadTimestamp("2026-11-29T10:00:01+000".into()))
    );
}

#[test]
fn parses_non_utf8_bytes_after_lossy_conversion() {
    let bytes = b"<13>1 2003-10-11T22:14:15Z host app - - - caf\xe9 ok";
    let line = String::from_utf8_lossy(bytes);
    let parsed = ok(&line);
    assert_eq!(parsed.message, "caf\u{fffd} ok");
}

#[test]
fn parses_traditional_auth_log_lines() {
    let parsed = ok(
        "Feb 20 15:12:47 giganode1 sshd[2540460]: Accepted password for testguy from 192.168.1.85 port 60138 ssh2",
    );
    assert_eq!(parsed.timestamp.seconds, 1_676_905_967);
    assert_eq!(parsed.timestamp.offset_minutes, 0);
    assert_eq!((parsed.facility, parsed.severity), (1, 5));
    assert_eq!(
        (parsed.hostname, parsed.app_name, parsed.proc_id),
        ("giganode1", "sshd", "2540460")
    );
    assert_eq!(
        parsed.message,
        "Accepted password for testguy from 192.168.1.85 port 60138 ssh2"
    );
}

#[test]
fn parses_rfc3164_with_pri_and_padded_day() {
    let parsed = ok("<38>Feb  5 01:02:03 host CRON: session opened");
    assert_eq!((parsed.facility, parsed.severity), (4, 6));
    assert_eq!(parsed.timestamp.seconds, 1_675_558_923);
    assert_eq!(
        (parsed.app_name, parsed.proc_id, parsed.message),
        ("CRON", "", "session opened")
    );
}

#[test]
fn applies_the_configured_year_and_offset_to_rfc3164() {
    let defaults = TraditionalDefaults {
        year: 2024,
        offset_minutes: 120,
    };
    let parsed = parse("Feb 29 02:00:00 h p: m", &defaults).expect("valid in a leap year");
    assert_eq!(parsed.timestamp.seconds, 1_709_164_800);
    assert_eq!(parsed.timestamp.offset_minutes, 120);
}

#[test]
fn parses_rsyslog_high_precision_traditional_lines() {
    let parsed = ok("<86>2023-02-20T15:12:47.757250-05:00 giganode1 sshd[42]: hello");
    assert_eq!(parsed.timestamp.seconds, 1_676_923_967);
    assert_eq!(
        (parsed.app_name, parsed.proc_id, parsed.message),
        ("sshd", "42", "hello")
    );
}

#[test]
fn takes_traditional_lines_without_a_hostname() {
    // As some auth.log writers and BSD/Solaris syslogs write them.
    for (line, program, pid, message) in [
        (
            "Nov 23 21:50:19 sshd[8148]: Disconnecting: Too many authentication failures [preauth]",
            "sshd",
            "8148",
            "Disconnecting: Too many authentication failures [preauth]",
        ),
        (
            "Mar  3 00:17:22 [sshd]: User root from 211.188.220.49 not allowed",
            "sshd",
            "",
            "User root from 211.188.220.49 not allowed",
        ),
        (
            "Jun 25 23:53:34 [sshd] User root from 1.2.3.4 not allowed",
            "sshd",
            "",
            "User root from 1.2.3.4 not allowed",
        ),
        (
            "Feb  5 01:02:03 CRON: session opened",
            "CRON",
            "",
            "session opened",
        ),
    ] {
        let parsed = ok(line);
        assert_eq!(
            (
                parsed.hostname,
                parsed.app_name,
                parsed.proc_id,
                parsed.message
            ),
            ("", program, pid, message),
            "{line}"
        );
    }
    // A hostname is still a hostname, IPv6 addresses included.
    let parsed = ok("Feb  5 01:02:03 2001:db8::1 sshd[7]: x");
    assert_eq!((parsed.hostname, parsed.app_name), ("2001:db8::1", "sshd"));
}

#[test]
fn keeps_an_untagged_traditional_message_whole() {
    let parsed = ok("Feb 20 15:12:47 host just some text");
    assert_eq!((parsed.app_name, parsed.message), ("", "just some text"));
}

#[test]
fn batches_store_each_line_once_with_spans() {
    let line = "<86>1 2023-02-20T15:12:47Z host sshd 7 - - hello";
    let parsed = ok(line);
    let mut builder = BatchBuilder::new(2);
    builder.push(1, line, &parsed, "127.0.0.1:5");
    let batch = builder.batch();
    let text = batch.text.as_str();
    let field = |index: usize| {
        let start = batch.spans[index * 2] as usize;
        &text[start..start + batch.spans[index * 2 + 1] as usize]
    };
    let fields: Vec<&str> = (0..batch::SPANS_PER_RECORD).map(field).collect();
    assert_eq!(
        fields,
        ["host", "sshd", "7", "", "", "hello", "127.0.0.1:5"]
    );
    assert_eq!(batch.priorities, [86]);
    assert_eq!(batch.seconds, [1_676_905_967]);
    assert_eq!(batch.positions, [1]);
    assert!(!builder.is_full());
}

#[test]
fn a_packed_record_keeps_every_field() {
    let lines = [
        (
            "<86>1 2023-02-20T15:12:47Z host sshd 7 - - hello",
            "127.0.0.1:5",
        ),
        (
            "<13>1 2023-02-20T15:12:48.5+01:00 other app - ID9 [a b=\"c\"] world",
            "",
        ),
        ("Feb 20 15:12:49 third cron[12]: tick", "[::1]:7"),
    ];
    let fields_of = |batch: &crate::types::RecordBatch, record: usize| -> Vec<String> {
        (0..batch::SPANS_PER_RECORD)
            .map(|field| {
                let at = (record * batch::SPANS_PER_RECORD + field) * 2;
                let start = batch.spans[at] as usize;
                batch.text[start..start + batch.spans[at + 1] as usize].to_owned()
            })
            .collect()
    };
    // Each record pushed at once, and the same records packed and taken
    // out into a batch that already holds one.
    let mut direct = BatchBuilder::new(4);
    let mut packed = crate::record::PackedRecords::with_capacity(64);
    let mut taken = BatchBuilder::new(4);
    let first = crate::record::parse(lines[0].0, &DEFAULTS).expect("parses");
    taken.push(9, lines[0].0, &first, lines[0].1);
    for (position, (line, peer)) in (1..).zip(lines) {
        let parsed = crate::record::parse(line, &DEFAULTS).expect("parses");
        direct.push(position, line, &parsed, peer);
        let bytes = packed.push(position, line, &parsed, peer);
        assert_eq!(bytes, packed::HEADER_BYTES + line.len() + peer.len());
    }
    assert_eq!(packed.front_time(), Some((1_676_905_967, 0)));
    while packed.take_into(&mut taken).is_some() {}
    assert!(packed.is_drained());
    let (direct, taken) = (direct.batch(), taken.batch());
    for record in 0..3 {
        assert_eq!(fields_of(taken, record + 1), fields_of(direct, record));
    }
    assert_eq!(fields_of(taken, 3)[6], "[::1]:7");
    assert_eq!(fields_of(taken, 2)[4], "[a b=\"c\"]");
    assert_eq!(taken.positions, [9, 1, 2, 3]);
    assert_eq!(taken.priorities, [86, 86, 13, 13]);
    assert_eq!(taken.seconds[1..], direct.seconds);
    assert_eq!(taken.nanoseconds[1..], direct.nanoseconds);
    assert_eq!(taken.offset_minutes, [0, 0, 60, 0]);
}

/// Every field of a parsed record borrows from its line (the batch relies on
/// it) and the message is the line's tail.
fn assert_fields_borrow_from(line: &str, parsed: &Parsed<'_>) {
    let range = line.as_ptr() as usize..=line.as_ptr() as usize + line.len();
    for field in parsed.text_fields() {
        if !field.is_empty() {
            assert!(
                range.contains(&(field.as_ptr() as usize)),
                "{field:?} is not in {line:?}"
            );
            assert!(
                range.contains(&(field.as_ptr() as usize + field.len())),
                "{field:?} overruns {line:?}"
            );
        }
    }
    assert!(
        line.trim_end_matches(['\n', '\r'])
            .ends_with(parsed.message)
    );
}

#[test]
fn every_prefix_and_mutation_of_real_lines_parses_or_fails_cleanly() {
    let lines = [
        "<86>1 2023-02-20T15:12:47.757250-05:00 giganode1 sshd 2540460 - - Accepted publickey for timp from 192.168.1.85 port 60116 ssh2",
        r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application"][x@1 a="\]\"\\"] An application event"#,
        "<38>Feb  5 01:02:03 host CRON[77]: session opened",
        "Feb 20 15:12:47 giganode1 sshd[2540460]: Failed password for root from ::1 port 22 ssh2",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut parsed_ok = 0;
    for line in lines {
        for end in (0..=line.len()).filter(|&end| line.is_char_boundary(end)) {
            let prefix = &line[..end];
            if let Ok(parsed) = parse(prefix, &DEFAULTS) {
                assert_fields_borrow_from(prefix, &parsed);
                parsed_ok += 1;
            }
        }
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = line.as_bytes().to_vec();
            let at = (seed % bytes.len() as u64) as usize;
            let replacements = b" <>[]\"\\-:T0Z9";
            bytes[at] = replacements[(seed >> 32) as usize % replacements.len()];
            let mutated = String::from_utf8_lossy(&bytes);
            if let Ok(parsed) = parse(&mutated, &DEFAULTS) {
                assert_fields_borrow_from(&mutated, &parsed);
            }
        }
    }
    // The full lines and their longer prefixes parse.
    assert!(parsed_ok > 100, "{parsed_ok}");
}
