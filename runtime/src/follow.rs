//! Following log files as they grow (`run --follow FILE`), the way
//! fail2ban reads `/var/log/auth.log`: each file is read to its end, then
//! polled for more, through rotations.
//!
//! A file is known by its device and inode, not its path:
//!
//! - **Rename and create** (logrotate's default): the path names a new
//!   file. The old one (the writer may still hold it for a moment) is read
//!   to its end until it has been quiet for [`ROTATED_QUIET`], then the
//!   new one from its start.
//! - **Copy and truncate**: the file shrinks under the position read. It
//!   is read again from its start; what was written between the last read
//!   and the truncation is only in the copy (copytruncate loses it for
//!   every reader).
//!
//! Each batch carries how far every file is read once its records are
//! processed ([`FileMark`]), and the checkpoint after it stores that with
//! the modules' state, in one commit. A restart therefore resumes each
//! file at the byte after the last line the state covers, nothing read
//! twice and nothing skipped: at the same inode if the path still names
//! it, else at the rotated file that has that inode (found in the same
//! directory), and then the path's new file from its start.

use crate::pipeline::{BatchSink, Counters, HandlerStage, ModuleStage, StageError, TickTime};
use crate::record::{Origin, ParseCounts, TraditionalDefaults};
use crate::state_store::{FileMark, InputMarks};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often files are looked at once everything was read.
const POLL: Duration = Duration::from_millis(100);

/// A rotated file is read until it has been quiet this long.
const ROTATED_QUIET: Duration = Duration::from_secs(2);

/// How often glob patterns are expanded again for new files.
const RESCAN: Duration = Duration::from_secs(5);

/// The longest line taken whole; a longer one is cut (and counted).
const MAX_LINE_BYTES: usize = 64 << 10;

/// How a follow reads.
#[derive(Debug, Clone)]
pub struct FollowSettings {
    /// Files, or patterns with `*` and `?` in their last component.
    pub paths: Vec<PathBuf>,
    /// Records per call into modules.
    pub batch_size: usize,
    /// Year and offset for RFC 3164 lines.
    pub defaults: TraditionalDefaults,
}

/// What a follow saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FollowStats {
    /// Records taken, and what could not be.
    pub parsed: ParseCounts,
    /// Rotations seen: renamed away, or truncated.
    pub rotations: u64,
    /// Lines longer than [`MAX_LINE_BYTES`], cut.
    pub cut_lines: u64,
}

/// Follow `settings.paths` from where `restored` says each was read,
/// through the modules and handlers, until `stop` is set (SIGINT,
/// SIGTERM). Ticks follow the wall clock, as while listening.
pub fn follow(
    settings: &FollowSettings,
    restored: &[FileMark],
    modules: &mut ModuleStage,
    handlers: HandlerStage,
    stop: &AtomicBool,
) -> Result<(FollowStats, Counters), StageError> {
    modules.set_tick_time(TickTime::WallClock);
    crate::service::tell("READY=1\nSTATUS=following files");
    crate::pipeline::run_stages(
        modules,
        handlers,
        settings.batch_size,
        |sink| read_files(settings, restored, &sink, stop),
        || stop.store(true, Ordering::Relaxed),
    )
}

/// A line read, with where its file stands once it is handed on.
struct ReadLine {
    bytes: Vec<u8>,
    device: u64,
    inode: u64,
    /// The byte after it in its file.
    end: u64,
}

/// One generation of a followed file, open.
struct Generation {
    file: File,
    device: u64,
    inode: u64,
    /// Bytes handed on: through the end of the last complete line.
    offset: u64,
    /// Bytes read past `offset`: the start of a line not ended yet.
    partial: Vec<u8>,
    /// Its first bytes (up to [`HEAD_BYTES`]): a file truncated and
    /// written again past the position read has other first bytes.
    head: Vec<u8>,
}

/// How many first bytes of a file tell whether it was written anew.
const HEAD_BYTES: usize = 128;

impl Generation {
    /// `file` (at `path`), to be read from `offset`.
    fn open(path: &Path, offset: u64) -> std::io::Result<Generation> {
        let mut file = File::open(path)?;
        let metadata = file.metadata()?;
        file.seek(SeekFrom::Start(offset))?;
        let mut generation = Generation {
            file,
            device: metadata.dev(),
            inode: metadata.ino(),
            offset,
            partial: Vec::new(),
            head: Vec::new(),
        };
        generation.head = generation.first_bytes().unwrap_or_default();
        Ok(generation)
    }

    /// The file's first bytes as they are now.
    fn first_bytes(&self) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt as _;
        let mut head = vec![0u8; HEAD_BYTES];
        let mut filled = 0;
        while filled < HEAD_BYTES {
            match self.file.read_at(&mut head[filled..], filled as u64)? {
                0 => break,
                count => filled += count,
            }
        }
        head.truncate(filled);
        Ok(head)
    }

    /// Whether the file was truncated under the position read: it is
    /// shorter, or its first bytes changed (truncated and written past
    /// the position again before this look).
    fn truncated(&mut self, size: u64) -> bool {
        if size < self.offset + self.partial.len() as u64 {
            return true;
        }
        let Ok(now) = self.first_bytes() else {
            return false;
        };
        let known = self.head.len().min(now.len());
        if now[..known] != self.head[..known] {
            return true;
        }
        if now.len() > self.head.len() {
            self.head = now;
        }
        false
    }

    fn mark(&self, path: &Path) -> FileMark {
        FileMark {
            path: path.display().to_string(),
            device: self.device,
            inode: self.inode,
            offset: self.offset,
        }
    }

    /// Read what was added; the complete lines go to `lines`. `Ok(false)`
    /// when nothing was added.
    fn read(
        &mut self,
        lines: &mut Vec<ReadLine>,
        stats: &mut FollowStats,
    ) -> std::io::Result<bool> {
        let mut chunk = [0u8; 64 << 10];
        let mut any = false;
        loop {
            let count = match self.file.read(&mut chunk) {
                Ok(0) => return Ok(any),
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            any = true;
            let mut rest = &chunk[..count];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&rest[..end]);
                self.offset += self.partial.len() as u64 + 1;
                let mut line = std::mem::take(&mut self.partial);
                if line.len() > MAX_LINE_BYTES {
                    line.truncate(MAX_LINE_BYTES);
                    stats.cut_lines += 1;
                }
                lines.push(ReadLine {
                    bytes: line,
                    device: self.device,
                    inode: self.inode,
                    end: self.offset,
                });
                rest = &rest[end + 1..];
            }
            self.partial.extend_from_slice(rest);
            if lines.len() >= 1024 {
                return Ok(true);
            }
        }
    }

    /// The line a finished file ends with when its last byte is no line
    /// break.
    fn finish(&mut self, lines: &mut Vec<ReadLine>) {
        if !self.partial.is_empty() {
            self.offset += self.partial.len() as u64;
            lines.push(ReadLine {
                bytes: std::mem::take(&mut self.partial),
                device: self.device,
                inode: self.inode,
                end: self.offset,
            });
        }
    }
}

/// A followed path: the file it names now, and one rotated away that is
/// still read.
struct Followed {
    path: PathBuf,
    current: Option<Generation>,
    rotated: Option<(Generation, Instant)>,
}

impl Followed {
    /// Every mark: the rotated generation's first (it is older).
    fn marks(&self, out: &mut Vec<FileMark>) {
        if let Some((generation, _)) = &self.rotated {
            out.push(generation.mark(&self.path));
        }
        if let Some(generation) = &self.current {
            out.push(generation.mark(&self.path));
        }
    }

    /// Lines added since the last look, the rotated generation's first;
    /// notices a rotation.
    fn poll(&mut self, lines: &mut Vec<ReadLine>, stats: &mut FollowStats) {
        if let Some((generation, quiet_since)) = &mut self.rotated {
            match generation.read(lines, stats) {
                Ok(true) => *quiet_since = Instant::now(),
                Ok(false) if quiet_since.elapsed() >= ROTATED_QUIET => {
                    generation.finish(lines);
                    self.rotated = None;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(path = %self.path.display(), "the rotated file cannot be read further: {error}");
                    self.rotated = None;
                }
            }
            if !lines.is_empty() {
                return;
            }
        }
        let named = std::fs::metadata(&self.path).ok();
        if let Some(generation) = &mut self.current {
            match &named {
                Some(now) if (now.dev(), now.ino()) != (generation.device, generation.inode) => {
                    // Renamed away: read the rest of the old one beside
                    // the new one.
                    stats.rotations += 1;
                    tracing::info!(path = %self.path.display(), "rotated: the path names a new file; the old one is read to its end");
                    if let Some(mut old) = self.current.take() {
                        // What it holds comes before the new file's lines.
                        let read = old.read(lines, stats);
                        self.rotated = Some((old, Instant::now()));
                        if let Err(error) = read {
                            tracing::warn!(path = %self.path.display(), "the rotated file cannot be read further: {error}");
                        }
                        if !lines.is_empty() {
                            return;
                        }
                    }
                }
                Some(now) if generation.truncated(now.len()) => {
                    stats.rotations += 1;
                    tracing::info!(path = %self.path.display(), "truncated (copytruncate): read again from its start");
                    generation.offset = 0;
                    generation.partial.clear();
                    generation.head.clear();
                    if let Err(error) = generation.file.seek(SeekFrom::Start(0)) {
                        tracing::warn!(path = %self.path.display(), "cannot read it again: {error}");
                    }
                }
                _ => {}
            }
        }
        if self.current.is_none() && named.is_some() {
            match Generation::open(&self.path, 0) {
                Ok(generation) => self.current = Some(generation),
                Err(error) => {
                    tracing::debug!(path = %self.path.display(), "not readable yet: {error}");
                }
            }
        }
        if let Some(generation) = &mut self.current
            && let Err(error) = generation.read(lines, stats)
        {
            tracing::warn!(path = %self.path.display(), "cannot read: {error}");
        }
    }
}

/// Start following `path` where `marks` (of the checkpoint) left it.
fn resume(path: &Path, marks: &[FileMark]) -> Followed {
    let shown = path.display().to_string();
    let mut followed = Followed {
        path: path.to_owned(),
        current: None,
        rotated: None,
    };
    let named = std::fs::metadata(path).ok();
    let mine: Vec<&FileMark> = marks.iter().filter(|mark| mark.path == shown).collect();
    for mark in mine {
        let same = named
            .as_ref()
            .is_some_and(|now| (now.dev(), now.ino()) == (mark.device, mark.inode));
        if same {
            let size = named.as_ref().map_or(0, std::fs::Metadata::len);
            let offset = if size < mark.offset {
                tracing::warn!(path = %shown, "truncated while stopped: read from its start");
                0
            } else {
                mark.offset
            };
            match Generation::open(path, offset) {
                Ok(generation) => followed.current = Some(generation),
                Err(error) => tracing::warn!(path = %shown, "cannot open: {error}"),
            }
            continue;
        }
        // Rotated while stopped: the file with that inode, beside it.
        match rotated_sibling(path, mark) {
            Some(old) => match Generation::open(&old, mark.offset) {
                Ok(generation) => {
                    tracing::info!(path = %shown, rotated = %old.display(), "rotated while stopped: the rest of the old file is read first");
                    followed.rotated = Some((generation, Instant::now()));
                }
                Err(error) => tracing::warn!(path = %old.display(), "cannot open: {error}"),
            },
            None => tracing::warn!(
                path = %shown,
                "rotated while stopped, and the old file is gone: what was written to it after byte {} is lost",
                mark.offset
            ),
        }
    }
    if followed.current.is_none() && named.is_some() {
        match Generation::open(path, 0) {
            Ok(generation) => followed.current = Some(generation),
            Err(error) => tracing::warn!(path = %shown, "cannot open: {error}"),
        }
    }
    if named.is_none() {
        tracing::warn!(path = %shown, "does not exist (yet): it is read once it does");
    }
    followed
}

/// The file in `path`'s directory with `mark`'s device and inode.
fn rotated_sibling(path: &Path, mark: &FileMark) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| (m.dev(), m.ino()) == (mark.device, mark.inode))
        })
}

/// The paths `pattern` names: itself, or, with `*` or `?` in its last
/// component, the files of its directory that match (sorted).
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let dir = match pattern.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .filter(|entry| matches(&name, &entry.file_name().to_string_lossy()))
        .map(|entry| dir.join(entry.file_name()))
        .collect();
    found.sort();
    found
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: one character).
fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Read every followed file into batches until `stop`.
fn read_files(
    settings: &FollowSettings,
    restored: &[FileMark],
    sink: &BatchSink,
    stop: &AtomicBool,
) -> FollowStats {
    let mut stats = FollowStats::default();
    let mut followed: Vec<Followed> = Vec::new();
    let known = |followed: &mut Vec<Followed>| {
        for pattern in &settings.paths {
            for path in expand(pattern) {
                if !followed.iter().any(|f| f.path == path) {
                    tracing::info!(path = %path.display(), "following");
                    followed.push(resume(&path, restored));
                }
            }
        }
    };
    known(&mut followed);
    let mut last_scan = Instant::now();
    let mut builder = sink.empty_builder();
    let mut position = 0u64;
    let mut lines = Vec::new();
    let files = |followed: &[Followed]| {
        let mut all = Vec::new();
        for f in followed {
            f.marks(&mut all);
        }
        all
    };
    let marks = |followed: &[Followed]| InputMarks {
        files: files(followed),
        journal_cursor: None,
        exchange: None,
    };
    while !stop.load(Ordering::Relaxed) {
        if last_scan.elapsed() >= RESCAN {
            known(&mut followed);
            last_scan = Instant::now();
        }
        let mut any = false;
        for index in 0..followed.len() {
            lines.clear();
            followed[index].poll(&mut lines, &mut stats);
            any |= !lines.is_empty();
            for line in lines.drain(..) {
                let text = stats.parsed.decode(&line.bytes);
                if text.trim().is_empty() {
                    continue;
                }
                position += 1;
                stats.parsed.take(
                    &mut builder,
                    position,
                    &text,
                    Origin::File,
                    &settings.defaults,
                );
                if builder.is_full() {
                    // The marks say where the lines of this batch end:
                    // those after it in `lines` are not in it.
                    let mut at = files(&followed);
                    for mark in &mut at {
                        if (mark.device, mark.inode) == (line.device, line.inode) {
                            mark.offset = line.end;
                        }
                    }
                    builder.set_marks(InputMarks {
                        files: at,
                        journal_cursor: None,
                        exchange: None,
                    });
                    crate::metrics::registry().parsed(&stats.parsed);
                    if !sink.pass_on(&mut builder) {
                        return stats;
                    }
                }
            }
        }
        if !any {
            builder.set_marks(marks(&followed));
            crate::metrics::registry().parsed(&stats.parsed);
            if !builder.is_empty() && !sink.pass_on(&mut builder) {
                return stats;
            }
            std::thread::sleep(POLL);
        }
    }
    builder.set_marks(marks(&followed));
    crate::metrics::registry().parsed(&stats.parsed);
    sink.pass_on(&mut builder);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        assert!(matches("auth.log*", "auth.log"));
        assert!(matches("auth.log*", "auth.log.1"));
        assert!(matches("*.log", "syslog.log"));
        assert!(!matches("*.log", "syslog.log.1"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
    }
}
