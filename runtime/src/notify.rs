//! How often a handler is told: grouping, repeat suppression and a rate
//! limit between a handler's filter and its `handle`, so that one attack
//! makes one e-mail (or page, or SMS), not one per event.
//!
//! The policy comes from `notify = { ... }` of `[handlers.NAME]`
//! ([`PolicyRaw`], resolved to [`Policy`]) and follows Prometheus
//! Alertmanager's words, for point-in-time events:
//!
//! - **`group_by`**: events with equal values of these fields (or of
//!   `kind`, `module`, `severity`) form a group. The first event of a new
//!   group waits **`group_wait_s`** for others to join it; they go out as
//!   one message. Events that join a group after its message are sent
//!   **`group_interval_s`** after it, together.
//! - **Repeats**: an event with the kind, module and field values (times
//!   aside) of one its group sent less than **`repeat_interval_s`** ago is
//!   a repeat. It
//!   is counted, not sent; the count goes with the group's next message,
//!   or in a message of its own `repeat_interval_s` after the last.
//! - **`rate_limit = { messages, per_s }`**: at most `messages` messages in
//!   a window of `per_s` seconds; what the limit holds back is folded into
//!   one digest when the window ends (nothing is dropped).
//!
//! A group of one event, with no repeats, reaches the handler as that
//! event; anything else as a `Digest` event made here (its summary lists
//! the events, its fields say how many and why), which handlers render as
//! any other. Time is the handler stage's clock ([`NotifyClock`]): the
//! records' time in a replay, the wall clock while listening. What a
//! notifier holds is part of every checkpoint ([`Notifier::save`]); at the
//! end of a run it is sent at once ([`Notifier::flush`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::types::ValueType;
use crate::types::{Dispatched, EventDecl, FieldDecl, FieldValues, Severity, Timestamp, Value};

/// The kind of the events a notifier makes.
pub const DIGEST_KIND: &str = "Digest";

/// Groups one handler keeps at once; events of further groups join one
/// overflow group (and are still sent).
const MAX_GROUPS: usize = 10_000;

/// Sent events a group remembers for repeat suppression; past it the
/// oldest is forgotten (its next repeat is sent again).
const MAX_REMEMBERED: usize = 1_000;

/// Events (or messages) a group (or the rate limit) holds in full; the rest
/// are counted.
const MAX_DETAIL: usize = 100;

/// Bytes of held events one notifier keeps in full; past it events are
/// counted only.
const MAX_HELD_BYTES: usize = 16 << 20;

/// Lines of a digest's summary that name an event.
const DIGEST_LINES: usize = 20;

/// Longest wait a policy may set: a year.
const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// The name of the overflow group.
const OVERFLOW_GROUP: &str = "(more groups than the notifier keeps)";

/// `notify = { ... }` as written in the app file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRaw {
    group_by: Option<Vec<String>>,
    group_wait_s: Option<u64>,
    group_interval_s: Option<u64>,
    repeat_interval_s: Option<u64>,
    rate_limit: Option<RateLimitRaw>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitRaw {
    messages: u32,
    per_s: u64,
}

/// A handler's notification policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Grouping and repeat suppression, if `group_by` is set.
    pub grouping: Option<Grouping>,
    /// The rate limit, if set.
    pub rate_limit: Option<RateLimit>,
}

/// Grouping and repeat suppression, times in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Field names (or `kind`, `module`, `severity`) whose values make the
    /// group; empty puts every event in one group.
    pub group_by: Vec<String>,
    /// How long a new group waits for more events (default 30 s).
    pub wait_ms: i64,
    /// How long after a group's message the events that joined it since
    /// are sent (default 5 min).
    pub interval_ms: i64,
    /// How long an event sent suppresses its repeats (default 4 h).
    pub repeat_interval_ms: i64,
}

/// At most `messages` messages per `per_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per window.
    pub messages: u32,
    /// The window, milliseconds.
    pub per_ms: i64,
}

impl PolicyRaw {
    /// Check the values and apply the defaults (Alertmanager's: 30 s,
    /// 5 min, 4 h). The error says which key is wrong and why.
    pub fn resolve(self) -> Result<Policy, String> {
        let seconds = |key: &str, value: Option<u64>, default: u64| -> Result<i64, String> {
            let value = value.unwrap_or(default);
            if value > MAX_SECONDS {
                return Err(format!(
                    "notify.{key} is {value} s; at most {MAX_SECONDS} (a year)"
                ));
            }
            Ok(i64::try_from(value).unwrap_or(i64::MAX) * 1000)
        };
        let grouping = match self.group_by {
            Some(group_by) => {
                for (index, name) in group_by.iter().enumerate() {
                    if name.trim().is_empty() {
                        return Err("notify.group_by names an empty field".into());
                    }
                    if group_by[..index].contains(name) {
                        return Err(format!("notify.group_by names \"{name}\" twice"));
                    }
                }
                Some(Grouping {
                    group_by,
                    wait_ms: seconds("group_wait_s", self.group_wait_s, 30)?,
                    interval_ms: seconds("group_interval_s", self.group_interval_s, 300)?,
                    repeat_interval_ms: seconds(
                        "repeat_interval_s",
                        self.repeat_interval_s,
                        4 * 3600,
                    )?,
                })
            }
            None => {
                if self.group_wait_s.is_some()
                    || self.group_interval_s.is_some()
                    || self.repeat_interval_s.is_some()
                {
                    return Err("notify: group_wait_s, group_interval_s and repeat_interval_s need group_by (group_by = [] puts every event in one group)".into());
                }
                None
            }
        };
        let rate_limit = match self.rate_limit {
            Some(limit) => {
                if limit.messages == 0 {
                    return Err("notify.rate_limit.messages must be at least 1".into());
                }
                if limit.per_s == 0 {
                    return Err("notify.rate_limit.per_s must be at least 1".into());
                }
                Some(RateLimit {
                    messages: limit.messages,
                    per_ms: seconds("rate_limit.per_s", Some(limit.per_s), 0)?,
                })
            }
            None => None,
        };
        Ok(Policy {
            grouping,
            rate_limit,
        })
    }
}

impl Policy {
    /// Whether the policy changes anything (else no notifier is needed).
    pub fn is_active(&self) -> bool {
        self.grouping.is_some() || self.rate_limit.is_some()
    }

    /// The policy in words, for `correlator config`; `None` when inactive.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(grouping) = &self.grouping {
            parts.push(format!(
                "group by [{}], wait {} s, interval {} s, repeats suppressed for {} s",
                grouping.group_by.join(", "),
                grouping.wait_ms / 1000,
                grouping.interval_ms / 1000,
                grouping.repeat_interval_ms / 1000
            ));
        }
        if let Some(limit) = &self.rate_limit {
            parts.push(format!(
                "at most {} per {} s, the rest in a digest",
                counted(u64::from(limit.messages), "message", "messages"),
                limit.per_ms / 1000
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// What time the handler stage goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyClock {
    /// The latest event time seen (a replay): waits end when later events
    /// come, or at the end of the run.
    Records {
        /// Milliseconds since the epoch; `None` before the first event.
        latest_ms: Option<i64>,
    },
    /// The wall clock (listening): the handler thread wakes when a wait
    /// ends.
    Wall,
}

impl NotifyClock {
    /// Move a records clock to the latest of `events`.
    pub fn observe(&mut self, events: &[Dispatched]) {
        if let NotifyClock::Records { latest_ms } = self {
            for event in events {
                let ms = millis(&event.time);
                if latest_ms.is_none_or(|latest| ms > latest) {
                    *latest_ms = Some(ms);
                }
            }
        }
    }

    /// Now, in milliseconds since the epoch; `None` for a records clock
    /// before any event.
    pub fn now_ms(&self) -> Option<i64> {
        match self {
            NotifyClock::Records { latest_ms } => *latest_ms,
            NotifyClock::Wall => Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| {
                        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
                    }),
            ),
        }
    }
}

/// A timestamp in milliseconds since the epoch.
fn millis(time: &Timestamp) -> i64 {
    time.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(time.nanoseconds / 1_000_000))
}

/// Milliseconds since the epoch as a UTC timestamp.
fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanoseconds: u32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        offset_minutes: 0,
    }
}

/// An event the notifier has sent, remembered for repeat suppression.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Remembered {
    /// When it was last sent or reported as repeated, ms.
    at: i64,
    /// Whether it repeated since.
    repeated: bool,
}

/// The events of one group.
#[derive(Debug, Default)]
struct Group {
    /// The `group_by` values the group's events share (missing fields are
    /// left out).
    key: Vec<(String, Value)>,
    /// Events waiting to be sent, in arrival order, and their identities.
    held: Vec<(u64, Dispatched)>,
    /// Events waiting beyond [`MAX_DETAIL`] or the byte bound: counted.
    omitted: u64,
    /// When the first held event came.
    first_held: Option<i64>,
    /// When the group's last message went.
    last_sent: Option<i64>,
    /// Repeats counted since the group's last message.
    repeats: u64,
    /// The latest of them, for the message that reports them.
    latest_repeat: Option<Dispatched>,
    /// Sent events by identity.
    remembered: HashMap<u64, Remembered>,
}

impl Group {
    /// When the group has something to send.
    fn due_at(&self, grouping: &Grouping) -> Option<i64> {
        if !self.held.is_empty() || self.omitted > 0 {
            let first = self.first_held?;
            return Some(match self.last_sent {
                None => first.saturating_add(grouping.wait_ms),
                Some(last) => first.max(last.saturating_add(grouping.interval_ms)),
            });
        }
        if self.repeats > 0 {
            return Some(
                self.last_sent
                    .unwrap_or(i64::MIN)
                    .saturating_add(grouping.repeat_interval_ms),
            );
        }
        None
    }

    /// Forget sent events older than the repeat interval.
    fn forget_before(&mut self, cutoff: i64) {
        self.remembered.retain(|_, sent| sent.at > cutoff);
    }

    fn is_idle(&self) -> bool {
        self.held.is_empty() && self.omitted == 0 && self.repeats == 0 && self.remembered.is_empty()
    }
}

/// A message on its way to the handler, with the events it stands for.
#[derive(Debug)]
struct Message {
    event: Dispatched,
    events: u64,
}

/// The rate limit's window and what it holds back.
#[derive(Debug, Default)]
struct Limiter {
    window_start: Option<i64>,
    sent: u32,
    held: Vec<Message>,
    /// Messages held beyond [`MAX_DETAIL`]: counted, with their events.
    omitted_messages: u64,
    omitted_events: u64,
}

/// One handler's notification state: its groups, what repeats, what the
/// rate limit holds back.
#[derive(Debug)]
pub struct Notifier {
    policy: Policy,
    groups: HashMap<String, Group>,
    /// Events taken without grouping, to pass through the rate limit.
    ready: Vec<Message>,
    limiter: Limiter,
    held_bytes: usize,
    /// The earliest time something may be due; `None`: nothing waits.
    next_due: Option<i64>,
    /// Whether anything changed since the last [`Notifier::save`].
    changed: bool,
}

impl Notifier {
    /// A notifier holding nothing.
    pub fn new(policy: Policy) -> Self {
        Notifier {
            policy,
            groups: HashMap::new(),
            ready: Vec::new(),
            limiter: Limiter::default(),
            held_bytes: 0,
            next_due: None,
            changed: false,
        }
    }

    /// Take events the handler's filter selected, at `now_ms`.
    pub fn take(&mut self, events: &[&Dispatched], now_ms: i64) {
        for event in events {
            self.take_one(event, now_ms);
        }
    }

    fn take_one(&mut self, event: &Dispatched, now: i64) {
        self.changed = true;
        let Some(grouping) = &self.policy.grouping else {
            self.ready.push(Message {
                event: event.clone(),
                events: 1,
            });
            self.next_due = Some(self.next_due.map_or(now, |due| due.min(now)));
            return;
        };
        let key_values: Vec<(String, Value)> = grouping
            .group_by
            .iter()
            .filter_map(|name| Some((name.clone(), attribute(event, name)?)))
            .collect();
        let mut key = render_key(&grouping.group_by, &key_values);
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            key = OVERFLOW_GROUP.to_owned();
        }
        let overflow = key == OVERFLOW_GROUP;
        let group = self.groups.entry(key).or_insert_with(|| Group {
            key: if overflow { Vec::new() } else { key_values },
            ..Group::default()
        });
        group.forget_before(now.saturating_sub(grouping.repeat_interval_ms));
        let identity = identity(event);
        if let Some(sent) = group.remembered.get_mut(&identity) {
            sent.repeated = true;
            group.repeats += 1;
            group.latest_repeat = Some(event.clone());
        } else if group.held.iter().any(|(held, _)| *held == identity) {
            group.repeats += 1;
            group.latest_repeat = Some(event.clone());
        } else {
            let bytes = event.held_bytes();
            if group.held.len() < MAX_DETAIL && self.held_bytes + bytes <= MAX_HELD_BYTES {
                self.held_bytes += bytes;
                group.held.push((identity, event.clone()));
            } else {
                group.omitted += 1;
            }
            group.first_held.get_or_insert(now);
        }
        if let Some(due) = group.due_at(grouping) {
            self.next_due = Some(self.next_due.map_or(due, |next| next.min(due)));
        }
    }

    /// The earliest time something may be due, ms since the epoch.
    pub fn next_due(&self) -> Option<i64> {
        self.next_due
    }

    /// The messages due at `now_ms`, in the order to hand them over.
    pub fn due(&mut self, now_ms: i64) -> Vec<Dispatched> {
        if self.next_due.is_none_or(|due| due > now_ms) {
            return Vec::new();
        }
        self.release(now_ms, false)
    }

    /// Everything held, at once (the run ends).
    pub fn flush(&mut self, now_ms: i64) -> Vec<Dispatched> {
        self.release(now_ms, true)
    }

    fn release(&mut self, now: i64, everything: bool) -> Vec<Dispatched> {
        self.changed = true;
        let mut messages = std::mem::take(&mut self.ready);
        let mut next_due: Option<i64> = None;
        let mut earliest = |due: Option<i64>| {
            if let Some(due) = due {
                next_due = Some(next_due.map_or(due, |next: i64| next.min(due)));
            }
        };
        if let Some(grouping) = &self.policy.grouping {
            // Groups in a stable order: by when their first event came.
            let mut keys: Vec<(Option<i64>, String)> = self
                .groups
                .iter()
                .filter(|(_, group)| {
                    group
                        .due_at(grouping)
                        .is_some_and(|due| everything || due <= now)
                })
                .map(|(key, group)| (group.first_held, key.clone()))
                .collect();
            keys.sort_unstable();
            for (_, key) in keys {
                if let Some(group) = self.groups.get_mut(&key) {
                    let (message, bytes) = group_message(&key, group, now);
                    self.held_bytes = self.held_bytes.saturating_sub(bytes);
                    messages.extend(message);
                }
            }
            let cutoff = now.saturating_sub(grouping.repeat_interval_ms);
            self.groups.retain(|_, group| {
                group.forget_before(cutoff);
                !group.is_idle()
            });
            for group in self.groups.values() {
                earliest(group.due_at(grouping));
            }
        }
        let mut out = Vec::with_capacity(messages.len());
        let limit = self.policy.rate_limit;
        for message in messages {
            self.limiter.admit(limit, message, now, &mut out);
        }
        self.limiter.roll(limit, now, everything, &mut out);
        earliest(self.limiter.due_at(limit));
        self.next_due = next_due;
        out
    }

    /// The notifier's state to store with a checkpoint, if it changed since
    /// the last call.
    pub fn save(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let saved = Saved {
            group_by: self
                .policy
                .grouping
                .as_ref()
                .map(|grouping| grouping.group_by.clone()),
            groups: self
                .groups
                .iter()
                .map(|(name, group)| SavedGroup {
                    name: name.clone(),
                    key: group
                        .key
                        .iter()
                        .map(|(name, value)| (name.clone(), SavedValue::from(value)))
                        .collect(),
                    held: group
                        .held
                        .iter()
                        .map(|(_, event)| SavedEvent::from(event))
                        .collect(),
                    omitted: group.omitted,
                    first_held: group.first_held,
                    last_sent: group.last_sent,
                    repeats: group.repeats,
                    latest_repeat: group.latest_repeat.as_ref().map(SavedEvent::from),
                    remembered: group
                        .remembered
                        .iter()
                        .map(|(identity, sent)| (*identity, *sent))
                        .collect(),
                })
                .collect(),
            ready: self
                .ready
                .iter()
                .map(|message| SavedEvent::from(&message.event))
                .collect(),
            window_start: self.limiter.window_start,
            window_sent: self.limiter.sent,
            limited: self
                .limiter
                .held
                .iter()
                .map(|message| (SavedEvent::from(&message.event), message.events))
                .collect(),
            limited_omitted: (self.limiter.omitted_messages, self.limiter.omitted_events),
        };
        match serde_json::to_vec(&saved) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::error!("cannot store what the notifier holds: {error}");
                None
            }
        }
    }

    /// Take back what a checkpoint stored. Held events of a grouping that
    /// changed since are grouped anew (what was sent is forgotten).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let saved: Saved = serde_json::from_slice(bytes)
            .map_err(|error| format!("the stored notification state is damaged: {error}"))?;
        let same_grouping = saved.group_by.as_ref()
            == self
                .policy
                .grouping
                .as_ref()
                .map(|grouping| &grouping.group_by);
        let mut regroup = Vec::new();
        let mut groups = saved.groups;
        // Regrouped events come back in the order they first came.
        groups.sort_by(|a, b| (a.first_held, &a.name).cmp(&(b.first_held, &b.name)));
        for group in groups {
            let first_held = group.first_held.unwrap_or(i64::MIN);
            let held: Vec<Dispatched> = group.held.into_iter().map(Dispatched::from).collect();
            if !same_grouping || self.policy.grouping.is_none() {
                regroup.extend(held.into_iter().map(|event| (first_held, event)));
                continue;
            }
            self.held_bytes += held.iter().map(Dispatched::held_bytes).sum::<usize>();
            self.groups.insert(
                group.name,
                Group {
                    key: group
                        .key
                        .into_iter()
                        .map(|(name, value)| (name, Value::from(value)))
                        .collect(),
                    held: held
                        .into_iter()
                        .map(|event| (identity(&event), event))
                        .collect(),
                    omitted: group.omitted,
                    first_held: group.first_held,
                    last_sent: group.last_sent,
                    repeats: group.repeats,
                    latest_repeat: group.latest_repeat.map(Dispatched::from),
                    remembered: group.remembered.into_iter().collect(),
                },
            );
        }
        for (time, event) in regroup {
            self.take_one(&event, time);
        }
        for event in saved.ready {
            self.take_one(&Dispatched::from(event), i64::MIN);
        }
        self.limiter.window_start = saved.window_start;
        self.limiter.sent = saved.window_sent;
        self.limiter.held = saved
            .limited
            .into_iter()
            .map(|(event, events)| Message {
                event: Dispatched::from(event),
                events,
            })
            .collect();
        (self.limiter.omitted_messages, self.limiter.omitted_events) = saved.limited_omitted;
        self.next_due = Some(i64::MIN);
        self.changed = false;
        Ok(())
    }
}

/// What stored notifier state holds, in words for `correlator outbox
/// list`; `None` when it holds nothing to send.
pub fn describe(stored: &[u8]) -> Option<String> {
    let saved: Saved = match serde_json::from_slice(stored) {
        Ok(saved) => saved,
        Err(error) => return Some(format!("damaged notification state ({error})")),
    };
    let waiting: Vec<&SavedGroup> = saved
        .groups
        .iter()
        .filter(|group| !group.held.is_empty() || group.omitted > 0 || group.repeats > 0)
        .collect();
    let events: u64 = waiting
        .iter()
        .map(|group| group.held.len() as u64 + group.omitted)
        .sum::<u64>()
        + saved.ready.len() as u64;
    let repeats: u64 = waiting.iter().map(|group| group.repeats).sum();
    let limited = saved.limited.len() as u64 + saved.limited_omitted.0;
    if events == 0 && repeats == 0 && limited == 0 {
        return None;
    }
    Some(format!(
        "{} and {} wait in {}; {} held by the rate limit",
        counted(events, "event", "events"),
        counted(repeats, "repeat", "repeats"),
        counted(waiting.len() as u64, "group", "groups"),
        counted(limited, "message", "messages"),
    ))
}

/// `count` and the noun that goes with it.
fn counted(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// The group's message (if it has one to send) and the held bytes it lets
/// go of; the group remembers what it sent.
fn group_message(name: &str, group: &mut Group, now: i64) -> (Option<Message>, usize) {
    let held = std::mem::take(&mut group.held);
    let bytes = held.iter().map(|(_, event)| event.held_bytes()).sum();
    let omitted = std::mem::take(&mut group.omitted);
    let repeats = std::mem::take(&mut group.repeats);
    let latest_repeat = group.latest_repeat.take();
    group.first_held = None;
    if held.is_empty() && omitted == 0 && repeats == 0 {
        return (None, bytes);
    }
    group.last_sent = Some(now);
    for sent in group.remembered.values_mut() {
        if sent.repeated {
            *sent = Remembered {
                at: now,
                repeated: false,
            };
        }
    }
    if group.remembered.len() + held.len() > MAX_REMEMBERED {
        let mut ages: Vec<(i64, u64)> = group
            .remembered
            .iter()
            .map(|(identity, sent)| (sent.at, *identity))
            .collect();
        ages.sort_unstable();
        let excess = group.remembered.len() + held.len() - MAX_REMEMBERED;
        for (_, identity) in ages.into_iter().take(excess) {
            group.remembered.remove(&identity);
        }
    }
    for (identity, _) in &held {
        group.remembered.insert(
            *identity,
            Remembered {
                at: now,
                repeated: false,
            },
        );
    }
    let mut events: Vec<Dispatched> = held.into_iter().map(|(_, event)| event).collect();
    if events.len() == 1 && omitted == 0 && repeats == 0 {
        let message = events.pop().map(|event| Message { event, events: 1 });
        return (message, bytes);
    }
    let reason = if events.is_empty() && omitted == 0 {
        Reason::Repeat
    } else {
        Reason::Group
    };
    let lines: Vec<&Dispatched> = events.iter().collect();
    let digest = Digest {
        reason,
        name,
        key: &group.key,
        lines: &lines,
        events: events.len() as u64 + omitted,
        repeats,
        latest_repeat: latest_repeat.as_ref(),
        now,
    };
    let message = Message {
        event: digest.event(),
        events: match reason {
            Reason::Repeat => repeats,
            _ => digest.events,
        },
    };
    (Some(message), bytes)
}

impl Limiter {
    /// Send `message` now if the window has room, else hold it.
    fn admit(
        &mut self,
        limit: Option<RateLimit>,
        message: Message,
        now: i64,
        out: &mut Vec<Dispatched>,
    ) {
        let Some(rate) = limit else {
            out.push(message.event);
            return;
        };
        self.roll(limit, now, false, out);
        if self.sent < rate.messages {
            self.sent += 1;
            out.push(message.event);
        } else if self.held.len() < MAX_DETAIL {
            self.held.push(message);
        } else {
            self.omitted_messages += 1;
            self.omitted_events += message.events;
        }
    }

    /// Start a new window if the current one ended (or `everything`), with
    /// the digest of what the last held back as its first message.
    fn roll(
        &mut self,
        limit: Option<RateLimit>,
        now: i64,
        everything: bool,
        out: &mut Vec<Dispatched>,
    ) {
        let Some(rate) = limit else {
            return;
        };
        let ended = self
            .window_start
            .is_none_or(|start| now >= start.saturating_add(rate.per_ms));
        let flushing = everything && self.has_held();
        if !ended && !flushing {
            return;
        }
        if ended {
            self.window_start = Some(now);
            self.sent = 0;
        }
        if self.has_held() {
            let held = std::mem::take(&mut self.held);
            let events = held.iter().map(|message| message.events).sum::<u64>()
                + std::mem::take(&mut self.omitted_events);
            let omitted = std::mem::take(&mut self.omitted_messages);
            let lines: Vec<&Dispatched> = held.iter().map(|message| &message.event).collect();
            let digest = Digest {
                reason: Reason::RateLimit {
                    messages: lines.len() as u64 + omitted,
                    limit: rate,
                },
                name: "",
                key: &[],
                lines: &lines,
                events,
                repeats: 0,
                latest_repeat: None,
                now,
            };
            out.push(digest.event());
            self.sent += 1;
        }
    }

    fn has_held(&self) -> bool {
        !self.held.is_empty() || self.omitted_messages > 0
    }

    fn due_at(&self, limit: Option<RateLimit>) -> Option<i64> {
        let rate = limit?;
        if !self.has_held() {
            return None;
        }
        Some(self.window_start?.saturating_add(rate.per_ms))
    }
}

/// Why a digest is sent.
#[derive(Debug, Clone, Copy)]
enum Reason {
    /// A group's events (with its repeats, if any).
    Group,
    /// Only repeats of events already sent, `repeat_interval_s` after the
    /// group's last message.
    Repeat,
    /// What the rate limit held back.
    RateLimit { messages: u64, limit: RateLimit },
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Group => "group",
            Reason::Repeat => "repeat",
            Reason::RateLimit { .. } => "rate-limit",
        }
    }
}

/// The parts of a `Digest` event.
struct Digest<'a> {
    reason: Reason,
    /// The group's name (`NAME=VALUE ...`), empty for no group.
    name: &'a str,
    key: &'a [(String, Value)],
    /// The events (or messages) it lists.
    lines: &'a [&'a Dispatched],
    /// Events it stands for (listed or not).
    events: u64,
    repeats: u64,
    latest_repeat: Option<&'a Dispatched>,
    now: i64,
}

/// The digest's own fields; `group_by` fields with other names follow.
const DIGEST_FIELDS: [&str; 6] = ["reason", "group", "events", "repeats", "first", "kinds"];

impl Digest<'_> {
    fn event(&self) -> Dispatched {
        let all: Vec<&Dispatched> = self
            .lines
            .iter()
            .copied()
            .chain(self.latest_repeat)
            .collect();
        let group = self.name.to_owned();
        let mut kinds: Vec<&str> = Vec::new();
        for event in &all {
            if !kinds.contains(&event.decl.kind.as_str()) {
                kinds.push(&event.decl.kind);
            }
        }
        let latest = all.iter().map(|event| event.time).max_by_key(millis);
        let first = all
            .iter()
            .map(|event| event.time)
            .min_by_key(millis)
            .unwrap_or_else(|| timestamp(self.now));
        let severity = all
            .iter()
            .map(|event| event.decl.severity)
            .max_by_key(|severity| match severity {
                Severity::Info => 0,
                Severity::Warning => 1,
                Severity::Error => 2,
            })
            .unwrap_or(Severity::Info);
        let module = match all.first() {
            Some(first) if all.iter().all(|event| event.module == first.module) => {
                first.module.clone()
            }
            _ => Arc::from("correlator"),
        };
        let for_group = if group.is_empty() {
            String::new()
        } else {
            format!(" for {group}")
        };
        let mut summary = match self.reason {
            Reason::Group if self.repeats > 0 => format!(
                "{}{for_group}, and {} already sent",
                counted(self.events, "event", "events"),
                counted(self.repeats, "repeat of an event", "repeats of events")
            ),
            Reason::Group => format!("{}{for_group}", counted(self.events, "event", "events")),
            Reason::Repeat => format!(
                "{}{for_group}",
                counted(
                    self.repeats,
                    "repeat of an event already sent",
                    "repeats of events already sent"
                )
            ),
            Reason::RateLimit { messages, limit } => format!(
                "{} ({}) held back by the rate limit of {} per {} s",
                counted(messages, "message", "messages"),
                counted(self.events, "event", "events"),
                counted(u64::from(limit.messages), "message", "messages"),
                limit.per_ms / 1000
            ),
        };
        for event in self.lines.iter().take(DIGEST_LINES) {
            let first_line = event.summary.lines().next().unwrap_or("");
            summary.push_str(&format!("\n- {}: {first_line}", event.decl.kind));
        }
        if self.lines.len() > DIGEST_LINES || (self.events as usize) > self.lines.len() {
            let listed = self.lines.len().min(DIGEST_LINES) as u64;
            let more = match self.reason {
                Reason::RateLimit { messages, .. } => messages.saturating_sub(listed),
                _ => self.events.saturating_sub(listed),
            };
            if more > 0 {
                summary.push_str(&format!("\n- and {more} more"));
            }
        }
        if let Some(event) = self.latest_repeat {
            let first_line = event.summary.lines().next().unwrap_or("");
            summary.push_str(&format!(
                "\n- latest repeat: {}: {first_line}",
                event.decl.kind
            ));
        }
        let field = |name: &str, value_type, description: &str| FieldDecl {
            name: name.into(),
            value_type,
            description: description.into(),
        };
        let mut fields = vec![
            field(
                "reason",
                ValueType::Text,
                "why: group, repeat or rate-limit",
            ),
            field("group", ValueType::Text, "the group_by values, NAME=VALUE"),
            field(
                "events",
                ValueType::Integer,
                "events the message stands for",
            ),
            field(
                "repeats",
                ValueType::Integer,
                "repeats of events already sent, counted since the group's last message",
            ),
            field("first", ValueType::Timestamp, "the earliest event's time"),
            field(
                "kinds",
                ValueType::Text,
                "the events' kinds, comma-separated",
            ),
        ];
        let mut values = vec![
            Value::Text(self.reason.name().into()),
            Value::Text(group),
            Value::Integer(i64::try_from(self.events).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(self.repeats).unwrap_or(i64::MAX)),
            Value::Timestamp(first),
            Value::Text(kinds.join(", ")),
        ];
        for (name, value) in self.key {
            if DIGEST_FIELDS.contains(&name.as_str()) || fields.iter().any(|f| f.name == *name) {
                continue;
            }
            fields.push(field(name, value.value_type(), "the group's value"));
            values.push(value.clone());
        }
        let decl = EventDecl {
            kind: DIGEST_KIND.into(),
            severity,
            description: "several events, or their repeats, in one message".into(),
            fields,
        };
        Dispatched {
            module,
            decl: Arc::new(decl),
            time: latest.unwrap_or_else(|| timestamp(self.now)),
            summary,
            values: FieldValues::Values(values),
            record: Dispatched::AFTER_BATCH,
        }
    }
}

/// The value of `name` for grouping: `kind`, `module`, `severity`, or a
/// field; `None` when the event has no such field.
fn attribute(event: &Dispatched, name: &str) -> Option<Value> {
    match name {
        "kind" => Some(Value::Text(event.decl.kind.clone())),
        "module" => Some(Value::Text(event.module.to_string())),
        "severity" => Some(Value::Text(event.decl.severity.name().into())),
        _ => {
            let index = event.decl.fields.iter().position(|f| f.name == name)?;
            event.values().get(index).cloned()
        }
    }
}

/// The group's name: `NAME=VALUE` for each `group_by` name, `-` for a
/// missing one.
fn render_key(group_by: &[String], values: &[(String, Value)]) -> String {
    group_by
        .iter()
        .map(|name| match values.iter().find(|(n, _)| n == name) {
            Some((_, value)) => format!("{name}={value}"),
            None => format!("{name}=-"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What makes two events the same for repeat suppression: module, kind and
/// every field value but times (not the time or the summary), hashed with 64-bit
/// FNV-1a, which is stable across builds (the hashes are stored).
fn identity(event: &Dispatched) -> u64 {
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    hash.write(event.module.as_bytes());
    hash.write(&[0xff]);
    hash.write(event.decl.kind.as_bytes());
    for value in event.values().iter() {
        hash.write(&[0xfe]);
        match value {
            Value::Integer(number) => hash.write(&number.to_le_bytes()),
            Value::Float(number) => hash.write(&number.to_bits().to_le_bytes()),
            Value::Text(text) | Value::Email(text) => hash.write(text.as_bytes()),
            Value::Boolean(flag) => hash.write(&[u8::from(*flag)]),
            // When it happened is no part of what happened: a lockout of
            // the same host, its first and last attempt later, repeats.
            Value::Timestamp(_) => {}
        }
    }
    hash.0
}

struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A notifier's state as stored.
#[derive(Serialize, Deserialize)]
struct Saved {
    group_by: Option<Vec<String>>,
    groups: Vec<SavedGroup>,
    ready: Vec<SavedEvent>,
    window_start: Option<i64>,
    window_sent: u32,
    limited: Vec<(SavedEvent, u64)>,
    limited_omitted: (u64, u64),
}

#[derive(Serialize, Deserialize)]
struct SavedGroup {
    name: String,
    key: Vec<(String, SavedValue)>,
    held: Vec<SavedEvent>,
    omitted: u64,
    first_held: Option<i64>,
    last_sent: Option<i64>,
    repeats: u64,
    latest_repeat: Option<SavedEvent>,
    remembered: Vec<(u64, Remembered)>,
}

/// An event as stored: everything a handler sees of it.
#[derive(Serialize, Deserialize)]
struct SavedEvent {
    module: String,
    kind: String,
    severity: String,
    description: String,
    fields: Vec<(String, String, String)>,
    values: Vec<SavedValue>,
    time: (i64, u32, i16),
    summary: String,
}

/// A value as stored (floats by their bits: JSON has no NaN).
#[derive(Serialize, Deserialize)]
enum SavedValue {
    Integer(i64),
    Float(u64),
    Text(String),
    Boolean(bool),
    Email(String),
    Timestamp(i64, u32, i16),
}

impl From<&Value> for SavedValue {
    fn from(value: &Value) -> Self {
        match value {
            Value::Integer(number) => SavedValue::Integer(*number),
            Value::Float(number) => SavedValue::Float(number.to_bits()),
            Value::Text(text) => SavedValue::Text(text.clone()),
            Value::Boolean(flag) => SavedValue::Boolean(*flag),
            Value::Email(text) => SavedValue::Email(text.clone()),
            Value::Timestamp(time) => {
                SavedValue::Timestamp(time.seconds, time.nanoseconds, time.offset_minutes)
            }
        }
    }
}

impl From<SavedValue> for Value {
    fn from(value: SavedValue) -> Self {
        match value {
            SavedValue::Integer(number) => Value::Integer(number),
            SavedValue::Float(bits) => Value::Float(f64::from_bits(bits)),
            SavedValue::Text(text) => Value::Text(text),
            SavedValue::Boolean(flag) => Value::Boolean(flag),
            SavedValue::Email(text) => Value::Email(text),
            SavedValue::Timestamp(seconds, nanoseconds, offset_minutes) => {
                Value::Timestamp(Timestamp {
                    seconds,
                    nanoseconds,
                    offset_minutes,
                })
            }
        }
    }
}

impl From<&Dispatched> for SavedEvent {
    fn from(event: &Dispatched) -> Self {
        SavedEvent {
            module: event.module.to_string(),
            kind: event.decl.kind.clone(),
            severity: event.decl.severity.name().into(),
            description: event.decl.description.clone(),
            fields: event
                .decl
                .fields
                .iter()
                .map(|field| {
                    (
                        field.name.clone(),
                        field.value_type.name().into(),
                        field.description.clone(),
                    )
                })
                .collect(),
            values: event.values().iter().map(SavedValue::from).collect(),
            time: (
                event.time.seconds,
                event.time.nanoseconds,
                event.time.offset_minutes,
            ),
            summary: event.summary.clone(),
        }
    }
}

impl From<SavedEvent> for Dispatched {
    fn from(event: SavedEvent) -> Self {
        let severity = match event.severity.as_str() {
            "error" => Severity::Error,
            "warning" => Severity::Warning,
            _ => Severity::Info,
        };
        let value_type = |name: &str| match name {
            "integer" => ValueType::Integer,
            "float" => ValueType::Float,
            "boolean" => ValueType::Boolean,
            "email" => ValueType::Email,
            "timestamp" => ValueType::Timestamp,
            _ => ValueType::Text,
        };
        Dispatched {
            module: Arc::from(event.module),
            decl: Arc::new(EventDecl {
                kind: event.kind,
                severity,
                description: event.description,
                fields: event
                    .fields
                    .into_iter()
                    .map(|(name, kind, description)| FieldDecl {
                        value_type: value_type(&kind),
                        name,
                        description,
                    })
                    .collect(),
            }),
            time: Timestamp {
                seconds: event.time.0,
                nanoseconds: event.time.1,
                offset_minutes: event.time.2,
            },
            summary: event.summary,
            values: FieldValues::Values(event.values.into_iter().map(Value::from).collect()),
            record: Dispatched::AFTER_BATCH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::undescribed_field;

    fn policy(text: &str) -> Result<Policy, String> {
        let raw: PolicyRaw = toml::from_str(text).map_err(|error| error.to_string())?;
        raw.resolve()
    }

    fn grouping() -> Policy {
        policy(
            "group_by = [\"host\"]\ngroup_wait_s = 30\ngroup_interval_s = 300\nrepeat_interval_s = 3600",
        )
        .expect("valid policy")
    }

    /// A login failure of `user` from `host` at second `at`.
    fn failure(host: &str, user: &str, at: i64) -> Dispatched {
        let decl = EventDecl {
            kind: "LoginFailed".into(),
            severity: Severity::Warning,
            description: String::new(),
            fields: vec![
                undescribed_field("host", ValueType::Text),
                undescribed_field("user", ValueType::Text),
            ],
        };
        Dispatched {
            module: Arc::from("ssh"),
            decl: Arc::new(decl),
            time: timestamp(at * 1000),
            summary: format!("{user} failed from {host}"),
            values: FieldValues::Values(vec![Value::Text(host.into()), Value::Text(user.into())]),
            record: 0,
        }
    }

    fn take(notifier: &mut Notifier, event: Dispatched) {
        let at = millis(&event.time);
        notifier.take(&[&event], at);
    }

    fn summaries(messages: &[Dispatched]) -> Vec<String> {
        messages
            .iter()
            .map(|m| format!("{} {}", m.decl.kind, m.summary))
            .collect()
    }

    fn field(message: &Dispatched, name: &str) -> Option<Value> {
        attribute(message, name)
    }

    #[test]
    fn a_group_waits_then_goes_out_as_one_digest() {
        let mut notifier = Notifier::new(grouping());
        take(&mut notifier, failure("a", "x", 0));
        assert!(notifier.due(0).is_empty());
        take(&mut notifier, failure("a", "y", 10));
        take(&mut notifier, failure("b", "x", 10));
        assert_eq!(notifier.next_due(), Some(30_000));
        assert!(notifier.due(29_999).is_empty());
        let first = notifier.due(30_000);
        assert_eq!(
            summaries(&first),
            [
                "Digest 2 events for host=\"a\"\n- LoginFailed: x failed from a\n- LoginFailed: y failed from a"
            ]
        );
        assert_eq!(
            field(&first[0], "reason"),
            Some(Value::Text("group".into()))
        );
        assert_eq!(field(&first[0], "events"), Some(Value::Integer(2)));
        assert_eq!(field(&first[0], "host"), Some(Value::Text("a".into())));
        assert_eq!(first[0].module.as_ref(), "ssh");
        assert_eq!(first[0].decl.severity, Severity::Warning);
        assert_eq!(first[0].time, timestamp(10_000));
        // A group of one goes out as the event itself.
        assert_eq!(
            summaries(&notifier.due(40_000)),
            ["LoginFailed x failed from b"]
        );
        assert_eq!(notifier.next_due(), None);
    }

    #[test]
    fn repeats_are_counted_and_reported_with_the_next_message_or_alone() {
        let mut notifier = Notifier::new(grouping());
        take(&mut notifier, failure("a", "x", 0));
        assert_eq!(notifier.due(30_000).len(), 1);
        // The same event again: a repeat. A new one waits for the interval.
        take(&mut notifier, failure("a", "x", 50));
        take(&mut notifier, failure("a", "z", 60));
        assert!(notifier.due(329_999).is_empty());
        assert_eq!(
            summaries(&notifier.due(330_000)),
            [
                "Digest 1 event for host=\"a\", and 1 repeat of an event already sent\n- LoginFailed: z failed from a\n- latest repeat: LoginFailed: x failed from a"
            ]
        );
        // Repeats alone are reported a repeat interval after the last message.
        take(&mut notifier, failure("a", "z", 400));
        take(&mut notifier, failure("a", "z", 500));
        assert!(notifier.due(3_929_999).is_empty());
        let report = notifier.due(3_930_000);
        assert_eq!(
            summaries(&report),
            [
                "Digest 2 repeats of events already sent for host=\"a\"\n- latest repeat: LoginFailed: z failed from a"
            ]
        );
        assert_eq!(
            field(&report[0], "reason"),
            Some(Value::Text("repeat".into()))
        );
        assert_eq!(field(&report[0], "repeats"), Some(Value::Integer(2)));
        // Reported repeats stay suppressed for another interval; the
        // others are forgotten after theirs: x is new again.
        take(&mut notifier, failure("a", "z", 4_000));
        take(&mut notifier, failure("a", "x", 4_000));
        assert_eq!(
            summaries(&notifier.due(4_230_000)),
            [
                "Digest 1 event for host=\"a\", and 1 repeat of an event already sent\n- LoginFailed: x failed from a\n- latest repeat: LoginFailed: z failed from a"
            ]
        );
    }

    #[test]
    fn the_rate_limit_folds_what_it_holds_back_into_one_digest() {
        let mut notifier = Notifier::new(
            policy("rate_limit = { messages = 2, per_s = 60 }").expect("valid policy"),
        );
        let mut sent = Vec::new();
        for (second, user) in [(0, "u0"), (1, "u1"), (2, "u2"), (3, "u3")] {
            take(&mut notifier, failure("a", user, second));
            sent.extend(notifier.due(second * 1000));
        }
        assert_eq!(
            summaries(&sent),
            [
                "LoginFailed u0 failed from a",
                "LoginFailed u1 failed from a"
            ]
        );
        assert_eq!(notifier.next_due(), Some(60_000));
        let digest = notifier.due(60_000);
        assert_eq!(
            summaries(&digest),
            [
                "Digest 2 messages (2 events) held back by the rate limit of 2 messages per 60 s\n- LoginFailed: u2 failed from a\n- LoginFailed: u3 failed from a"
            ]
        );
        assert_eq!(
            field(&digest[0], "reason"),
            Some(Value::Text("rate-limit".into()))
        );
        // The digest is the new window's first message: one more fits.
        take(&mut notifier, failure("a", "u4", 61));
        take(&mut notifier, failure("a", "u5", 62));
        assert_eq!(
            summaries(&notifier.due(62_000)),
            ["LoginFailed u4 failed from a"]
        );
        assert_eq!(
            summaries(&notifier.flush(62_000)),
            [
                "Digest 1 message (1 event) held back by the rate limit of 2 messages per 60 s\n- LoginFailed: u5 failed from a"
            ]
        );
    }

    #[test]
    fn what_a_notifier_holds_survives_a_save_and_a_restore() {
        let mut before = Notifier::new(grouping());
        take(&mut before, failure("a", "x", 0));
        assert_eq!(before.due(30_000).len(), 1);
        take(&mut before, failure("a", "x", 40));
        take(&mut before, failure("a", "y", 50));
        take(&mut before, failure("b", "x", 50));
        let stored = before.save().expect("changed");
        assert_eq!(before.save(), None, "nothing changed since");
        let mut after = Notifier::new(grouping());
        after.restore(&stored).expect("restores");
        assert_eq!(
            summaries(&after.due(330_000)),
            summaries(&before.due(330_000))
        );
        // What was sent is remembered: x from a is still a repeat.
        take(&mut after, failure("a", "x", 400));
        take(&mut before, failure("a", "x", 400));
        assert_eq!(
            summaries(&after.flush(400_000)),
            summaries(&before.flush(400_000))
        );
        // A changed grouping takes the held events into its own groups.
        let mut held = Notifier::new(grouping());
        take(&mut held, failure("a", "x", 0));
        take(&mut held, failure("b", "y", 0));
        let stored = held.save().expect("changed");
        let mut regrouped = Notifier::new(policy("group_by = []").expect("valid policy"));
        regrouped.restore(&stored).expect("restores");
        let mut out = summaries(&regrouped.flush(0));
        out.sort();
        assert_eq!(
            out,
            ["Digest 2 events\n- LoginFailed: x failed from a\n- LoginFailed: y failed from b"]
        );
        assert!(Notifier::new(grouping()).restore(b"{").is_err());
    }

    #[test]
    fn policies_that_will_not_do_are_refused_by_name() {
        assert_eq!(
            policy("group_wait_s = 10"),
            Err("notify: group_wait_s, group_interval_s and repeat_interval_s need group_by (group_by = [] puts every event in one group)".into())
        );
        assert_eq!(
            policy("group_by = [\"host\", \"host\"]"),
            Err("notify.group_by names \"host\" twice".into())
        );
        assert_eq!(
            policy("rate_limit = { messages = 0, per_s = 60 }"),
            Err("notify.rate_limit.messages must be at least 1".into())
        );
        assert_eq!(
            policy("group_by = []\ngroup_wait_s = 99999999"),
            Err("notify.group_wait_s is 99999999 s; at most 31622400 (a year)".into())
        );
        assert!(
            policy("group_by = []\ngroup_wiat_s = 1")
                .is_err_and(|error| error.contains("unknown field `group_wiat_s`"))
        );
        assert_eq!(
            policy("group_by = []"),
            Ok(Policy {
                grouping: Some(Grouping {
                    group_by: Vec::new(),
                    wait_ms: 30_000,
                    interval_ms: 300_000,
                    repeat_interval_ms: 14_400_000,
                }),
                rate_limit: None,
            })
        );
    }

    #[test]
    fn events_past_the_group_bound_join_one_overflow_group() {
        let mut notifier = Notifier::new(grouping());
        for index in 0..=MAX_GROUPS {
            take(&mut notifier, failure(&format!("h{index}"), "x", 0));
        }
        take(&mut notifier, failure("late", "y", 0));
        let messages = notifier.flush(0);
        assert_eq!(messages.len(), MAX_GROUPS + 1);
        let overflow: Vec<&Dispatched> = messages
            .iter()
            .filter(|m| m.decl.kind == DIGEST_KIND)
            .collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(
            overflow[0].summary,
            "2 events for (more groups than the notifier keeps)\n- LoginFailed: x failed from h10000\n- LoginFailed: y failed from late"
        );
    }
}
