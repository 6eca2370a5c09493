//! The failure policy of one instance: what a trap or a limit hit means for
//! it (restart, disable, or abort the run), with back-off on repeated
//! failures.

use crate::app::OnFailure;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Failures within this window count towards disabling an instance.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Failures within [`FAILURE_WINDOW`] after which a restarting instance is
/// disabled.
pub const FAILURES_BEFORE_DISABLE: usize = 5;

/// Back-off after the second failure in the window; it doubles with each
/// further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What the policy says after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Make a fresh instance and go on (after `backoff`, if any).
    Restart {
        /// How long the fresh instance takes nothing before it may run.
        backoff: Option<Duration>,
    },
    /// Stop the instance for the rest of the run, for this reason.
    Disable(String),
    /// Stop the whole runtime.
    Abort,
}

/// Counts an instance's failures and applies its policy.
#[derive(Debug)]
pub struct Supervisor {
    policy: OnFailure,
    failures: VecDeque<Instant>,
    resume_at: Option<Instant>,
    disabled: bool,
}

impl Supervisor {
    /// A supervisor for `policy`, with no failures yet.
    pub fn new(policy: OnFailure) -> Self {
        Supervisor {
            policy,
            failures: VecDeque::new(),
            resume_at: None,
            disabled: false,
        }
    }

    /// Whether the instance may take a call at `now` (not disabled, not
    /// backing off).
    pub fn may_run(&mut self, now: Instant) -> bool {
        if self.disabled {
            return false;
        }
        match self.resume_at {
            Some(resume) if now < resume => false,
            _ => {
                self.resume_at = None;
                true
            }
        }
    }

    /// Whether the instance may take a call, once a back-off it is in is
    /// over: the back-off is waited out here, so that no record or event
    /// is skipped because an instance backs off (a back-off lasts at most
    /// four times [`FIRST_BACKOFF`], and the instance is disabled at its
    /// [`FAILURES_BEFORE_DISABLE`]th failure in a window, so one instance
    /// can hold the pipeline back a bounded time). Only a disabled instance
    /// takes nothing.
    pub fn wait_until_ready(&mut self) -> bool {
        if let Some(resume) = self.resume_at
            && !self.disabled
        {
            let now = Instant::now();
            if resume > now {
                std::thread::sleep(resume - now);
            }
        }
        self.may_run(Instant::now())
    }

    /// When a back-off the instance is in at `now` ends; `None` when it is
    /// not backing off (or is disabled, which no waiting mends).
    pub fn backing_off(&self, now: Instant) -> Option<Instant> {
        self.resume_at
            .filter(|&resume| resume > now && !self.disabled)
    }

    /// Whether a failure ends in a fresh instance (the `restart` policy),
    /// rather than in disabling it or aborting the run.
    pub fn restarts(&self) -> bool {
        self.policy == OnFailure::Restart
    }

    /// Whether the instance was disabled.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Disable the instance (for a failure the policy cannot mend, such as
    /// a fresh instance that will not start).
    pub fn disable(&mut self) {
        self.disabled = true;
    }

    /// Failures within the window before `now`.
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }

    /// A failure at `now`: what to do.
    pub fn failed(&mut self, now: Instant) -> Verdict {
        match self.policy {
            OnFailure::Abort => Verdict::Abort,
            OnFailure::Disable => {
                self.disabled = true;
                Verdict::Disable("its policy is to disable it at the first failure".into())
            }
            OnFailure::Restart => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|&at| now.duration_since(at) > FAILURE_WINDOW)
                {
                    self.failures.pop_front();
                }
                let count = self.failures.len();
                if count >= FAILURES_BEFORE_DISABLE {
                    self.disabled = true;
                    return Verdict::Disable(format!(
                        "it failed {count} times within {} s",
                        FAILURE_WINDOW.as_secs()
                    ));
                }
                let backoff = (count >= 2)
                    .then(|| FIRST_BACKOFF * 2u32.pow(u32::try_from(count - 2).unwrap_or(0)));
                self.resume_at = backoff.map(|backoff| now + backoff);
                Verdict::Restart { backoff }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backs_off_exponentially_then_disables() {
        let start = Instant::now();
        let mut supervisor = Supervisor::new(OnFailure::Restart);
        assert!(supervisor.may_run(start));
        assert_eq!(supervisor.failed(start), Verdict::Restart { backoff: None });
        assert!(supervisor.may_run(start));
        let second = start + Duration::from_secs(1);
        assert_eq!(
            supervisor.failed(second),
            Verdict::Restart {
                backoff: Some(Duration::from_millis(100))
            }
        );
        assert!(!supervisor.may_run(second + Duration::from_millis(99)));
        assert_eq!(
            supervisor.backing_off(second + Duration::from_millis(99)),
            Some(second + Duration::from_millis(100))
        );
        assert_eq!(
            supervisor.backing_off(second + Duration::from_millis(100)),
            None
        );
        assert!(supervisor.may_run(second + Duration::from_millis(100)));
        assert_eq!(
            supervisor.failed(second),
            Verdict::Restart {
                backoff: Some(Duration::from_millis(200))
            }
        );
        assert_eq!(
            supervisor.failed(second),
            Verdict::Restart {
                backoff: Some(Duration::from_millis(400))
            }
        );
        assert_eq!(
            supervisor.failed(second),
            Verdict::Disable("it failed 5 times within 60 s".into())
        );
        assert!(!supervisor.may_run(second + Duration::from_secs(3600)));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let start = Instant::now();
        let mut supervisor = Supervisor::new(OnFailure::Restart);
        for minute in 0..10u64 {
            let verdict = supervisor.failed(start + Duration::from_secs(61 * minute));
            assert_eq!(verdict, Verdict::Restart { backoff: None });
        }
    }

    #[test]
    fn disable_and_abort_act_at_the_first_failure() {
        let now = Instant::now();
        let mut supervisor = Supervisor::new(OnFailure::Disable);
        assert!(matches!(supervisor.failed(now), Verdict::Disable(_)));
        assert!(supervisor.is_disabled());
        assert_eq!(
            Supervisor::new(OnFailure::Abort).failed(now),
            Verdict::Abort
        );
    }
}
