//! Timer ticks: ask for them in `init`, receive them in [`Module::tick`].
//!
//! ```no_run
//! # use correlator_sdk::{Descriptor, Module, Record, Tick, TickKind};
//! struct Sessions;
//!
//! impl Module for Sessions {
//!     # fn describe() -> Descriptor { Descriptor::new("sessions", "example") }
//!     fn init() -> Result<Self, String> {
//!         correlator_sdk::timers::every(TickKind::Hour)?;
//!         correlator_sdk::timers::daily_at(0, 0)?;
//!         Ok(Sessions)
//!     }
//!     # fn process(&mut self, _record: &Record<'_>) {}
//!     fn tick(&mut self, tick: &Tick) {
//!         match tick.kind {
//!             TickKind::Hour => { /* expire what is old at tick.time */ }
//!             TickKind::Daily => { /* midnight: statistics, reset */ }
//!             _ => {}
//!         }
//!     }
//! }
//! ```
//!
//! [`Module::tick`]: crate::Module::tick

use crate::TickKind;
use crate::sys::timers as host;

/// Ask for a tick of `kind` on every boundary (every minute, 5, 10, 15 or
/// 30 minutes, or every hour). `TickKind::Daily` is refused: use
/// [`daily_at`].
pub fn every(kind: TickKind) -> Result<(), String> {
    host::every(kind)
}

/// Ask for a `Daily` tick at `hour`:`minute` every day (in the host's
/// `timers.utc_offset`, UTC by default).
pub fn daily_at(hour: u8, minute: u8) -> Result<(), String> {
    host::daily_at(hour, minute)
}
