//! The blocklist handler: fail2ban's answer without a shell. It keeps the
//! set of addresses to block, taken from a field of the events its filter
//! selects (`host` of `SSHDAttemptsExceeded`), each for `ban_time_s` of
//! record time, never one inside an `ignore`d range, and writes it into the
//! directory the app file grants it, as a plain list, an nftables file
//! (`nft -f`, each element with the time its ban has left) or an ipset
//! restore file. Nothing is executed: loading the file into the firewall
//! is the operator's (a systemd path unit does it when the file changes;
//! see `apps/systemd/`).
//!
//! Every file is replaced whole (written beside, synced, renamed), so a
//! reader sees the old file or the new one, never half. Bans outlive the
//! process: `<file>.state` holds them (and the record time last seen), and
//! is read back at start. Bans end by record time: at each batch, those
//! whose time has passed by the stream clock are lifted.

mod bans;

use bans::{BanTime, Bans, Cidr, valid_set_name};
use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, Value, export_handler};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What the file is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    List,
    Nftables,
    Ipset,
}

struct Blocklist {
    field: String,
    ban_time: BanTime,
    ignore: Vec<Cidr>,
    format: Format,
    file: PathBuf,
    state_file: PathBuf,
    table: String,
    set: String,
    drop_chain: bool,
    bans: Bans,
    /// The latest record time seen (events' and the stream clock's).
    now: i64,
    /// Bans changed since the files were written.
    changed: bool,
}

impl Handler for Blocklist {
    fn describe() -> Descriptor {
        Descriptor::new(
            "blocklist",
            "keeps the addresses to block, from a field of the events it gets, and writes them for a firewall",
        )
        .config(ConfigItem::text(
            "field",
            "host",
            "the event field that holds the address to ban",
        ))
        .config(ConfigItem::integer(
            "ban_time_s",
            600,
            "seconds of record time an address stays banned (a new event extends it); -1 bans for ever",
        ))
        .config(ConfigItem::text(
            "ignore",
            "",
            "addresses and ranges never banned, comma-separated (10.0.0.0/8, 2001:db8::/32, 192.0.2.7)",
        ))
        .config(ConfigItem::text(
            "format",
            "list",
            "\"list\" (one address a line), \"nftables\" (for nft -f) or \"ipset\" (for ipset restore)",
        ))
        .config(ConfigItem::text(
            "file",
            "",
            "the file, inside the granted directory; empty: blocklist.txt, blocklist.nft or blocklist.ipset by format",
        ))
        .config(ConfigItem::text(
            "nft_table",
            "correlator",
            "nftables: the table (family inet) the file replaces whole",
        ))
        .config(ConfigItem::text(
            "set_name",
            "blocklist",
            "nftables and ipset: the sets are SET_v4 and SET_v6",
        ))
        .config(ConfigItem::boolean(
            "nft_drop_chain",
            true,
            "nftables: add an input chain that drops what comes from the sets (false: only the sets, for your own rules)",
        ))
    }

    fn init() -> Result<Self, String> {
        let text = correlator_sdk::config::text;
        let ban_time = match correlator_sdk::config::integer("ban_time_s")? {
            -1 => BanTime::Forever,
            seconds @ 1.. => BanTime::Seconds(seconds),
            other => {
                return Err(format!(
                    "ban_time_s must be -1 (for ever) or at least 1, not {other}"
                ));
            }
        };
        let ignore = text("ignore")?
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| Cidr::parse(part).map_err(|error| format!("ignore: {error}")))
            .collect::<Result<Vec<_>, _>>()?;
        let (format, default_file) = match text("format")?.as_str() {
            "list" => (Format::List, "blocklist.txt"),
            "nftables" => (Format::Nftables, "blocklist.nft"),
            "ipset" => (Format::Ipset, "blocklist.ipset"),
            other => {
                return Err(format!(
                    "format must be \"list\", \"nftables\" or \"ipset\", not \"{other}\""
                ));
            }
        };
        let file = match text("file")?.trim() {
            "" => PathBuf::from(default_file),
            name => PathBuf::from(name),
        };
        if file.file_name().is_none() {
            return Err(format!("file \"{}\" names no file", file.display()));
        }
        let (table, set) = (text("nft_table")?, text("set_name")?);
        for (key, name) in [("nft_table", &table), ("set_name", &set)] {
            if !valid_set_name(name) {
                return Err(format!(
                    "{key} \"{name}\" must be 1 to 24 letters, digits and _, starting with a letter"
                ));
            }
        }
        let state_file = with_suffix(&file, ".state");
        let (bans, now) = match std::fs::read_to_string(&state_file) {
            Ok(saved) => {
                let (bans, now, bad) = Bans::parse_state(&saved);
                for line in bad {
                    correlator_sdk::log::warn(&format!(
                        "{}: ignoring a line that is not a ban: {line:?}",
                        state_file.display()
                    ));
                }
                (bans, now)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                (Bans::default(), i64::MIN)
            }
            Err(error) => {
                return Err(format!(
                    "cannot read {}: {error} (does the app file grant a directory?)",
                    state_file.display()
                ));
            }
        };
        let mut blocklist = Blocklist {
            field: text("field")?,
            ban_time,
            ignore,
            format,
            file,
            state_file,
            table,
            set,
            drop_chain: correlator_sdk::config::boolean("nft_drop_chain")?,
            bans,
            now,
            changed: true,
        };
        // The file says what the state holds from the start (and the
        // directory is known to be writable before any event comes).
        blocklist.write()?;
        Ok(blocklist)
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        let Some(field) = event.fields.iter().find(|field| field.name == self.field) else {
            return Err(format!(
                "{} events have no field \"{}\" (select the events to ban from with the handler's filter)",
                event.kind, self.field
            ));
        };
        let (Value::Text(text) | Value::Email(text)) = &field.value else {
            return Err(format!("field \"{}\" is not text", self.field));
        };
        // Only an address passes: nothing of the event's text reaches the
        // file but what `IpAddr` prints.
        let address: IpAddr = text.trim().parse().map_err(|_| {
            let mut shown = String::new();
            correlator_sdk::text::push_escaped(&mut shown, text);
            format!(
                "\"{shown}\" in field \"{}\" is not an IP address",
                self.field
            )
        })?;
        self.now = self.now.max(event.time.seconds);
        if self.ignore.iter().any(|range| range.contains(address)) {
            return Ok(());
        }
        if self.bans.ban(address, event.time.seconds, self.ban_time) {
            self.changed = true;
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.now = self.now.max(correlator_sdk::now().seconds);
        if self.bans.expire(self.now) {
            self.changed = true;
        }
        if let Err(error) = self.write() {
            correlator_sdk::log::error(&error);
        }
    }
}

impl Blocklist {
    /// Write the state, then the file, if the bans changed.
    fn write(&mut self) -> Result<(), String> {
        if !self.changed {
            return Ok(());
        }
        let now = if self.now == i64::MIN { 0 } else { self.now };
        replace(&self.state_file, &self.bans.render_state(now))?;
        let text = match self.format {
            Format::List => self.bans.render_list(),
            Format::Nftables => {
                self.bans
                    .render_nftables(now, &self.table, &self.set, self.drop_chain)
            }
            Format::Ipset => self.bans.render_ipset(now, &self.set),
        };
        replace(&self.file, &text)?;
        self.changed = false;
        Ok(())
    }
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replace `path` with `text` whole: written beside it, synced, renamed
/// over it, so that a reader sees the old file or the new one.
fn replace(path: &Path, text: &str) -> Result<(), String> {
    let temporary = with_suffix(path, ".new");
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(|error| {
        format!(
            "cannot write {}: {error} (does the app file grant a writable directory?)",
            path.display()
        )
    })
}

export_handler!(Blocklist);
