//! The process's allocator: jemalloc, how long-running commands tune it, and its figures for
//! `/metrics`.
//!
//! Records, deltas and rows are many small allocations, which glibc's malloc serves markedly
//! slower (scripts/bench-process). mimalloc served them until 2026-12-03: under
//! `scripts/soak`'s stream churn its RSS kept rising for 30 minutes while the live heap fell
//! (README, "Soak"). jemalloc gives freed pages back on a decay timer and reports what the
//! program holds next to what it keeps resident, so the two can be told apart on a live server.
//! Built unprefixed, it also serves librdkafka's and the other C code's `malloc`: one allocator,
//! one set of figures, and `MALLOC_CONF` tunes it.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a long run keeps freed pages resident before the background threads give them
/// back. jemalloc's default (10 s) can keep a checkpoint's encoded parts (about 8 MiB under the
/// soak's load, made every `checkpoint_interval`, 10 s) resident for most of the interval, so
/// RSS rises and falls with each checkpoint and samples taken every 10 s drift through that
/// cycle (README, "Soak"). A second returns them about as soon as they are freed for good; what that costs in
/// CPU is measured by the soak (README, "Soak").
#[cfg(feature = "jemalloc")]
const LONG_RUN_DIRTY_DECAY_MS: isize = 1_000;

/// Lets a long-running process (`run`, `demo`) give memory back as it goes: jemalloc's
/// background threads purge freed pages on their decay timers ([`LONG_RUN_DIRTY_DECAY_MS`]),
/// whether or not the threads that freed them allocate again. Without them a page is purged
/// only when its arena is next used, and a quiet arena keeps what it has (small blocks cached
/// by a thread stay until it allocates again). Bounded commands keep jemalloc's defaults: they
/// end within minutes, and their speed and peak memory were measured so (scripts/bench-process).
/// A `background_thread` or `dirty_decay_ms` setting in `MALLOC_CONF` wins.
pub fn release_memory_as_it_goes() {
    #[cfg(feature = "jemalloc")]
    {
        let operator_chose = |setting: &str| {
            std::env::var("MALLOC_CONF").is_ok_and(|conf| {
                conf.split(',')
                    .any(|option| option.split(':').next() == Some(setting))
            })
        };
        if !operator_chose("background_thread") {
            if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
                tracing::warn!(%error, "jemalloc's background threads did not start");
            }
        }
        if !operator_chose("dirty_decay_ms") {
            if let Err(error) = set_dirty_decay(LONG_RUN_DIRTY_DECAY_MS) {
                tracing::warn!(%error, "jemalloc's decay time was not shortened");
            }
        }
    }
}

/// Shortens how long freed pages stay resident to `ms` at most, for the arenas in use and those
/// made later (an arena that already gives them back sooner, such as jemalloc's arena for huge
/// blocks, keeps its setting).
#[cfg(feature = "jemalloc")]
fn set_dirty_decay(ms: isize) -> tikv_jemalloc_ctl::Result<()> {
    use tikv_jemalloc_ctl::raw;
    let longer = |current: isize| !(0..=ms).contains(&current);
    // SAFETY (every read and write below): the names end in a NUL and the types are those of
    // jemalloc's mallctl manual: `initialized` a bool, the decay times an ssize_t (isize).
    if longer(unsafe { raw::read::<isize>(b"arenas.dirty_decay_ms\0")? }) {
        unsafe { raw::write(b"arenas.dirty_decay_ms\0", ms)? };
    }
    for arena in 0..tikv_jemalloc_ctl::arenas::narenas::read()? {
        let setting = |name: &str| format!("arena.{arena}.{name}\0");
        // An arena not made yet takes the default set above when it is.
        if !unsafe { raw::read::<bool>(setting("initialized").as_bytes())? } {
            continue;
        }
        let decay = setting("dirty_decay_ms");
        if longer(unsafe { raw::read::<isize>(decay.as_bytes())? }) {
            unsafe { raw::write(decay.as_bytes(), ms)? };
        }
    }
    Ok(())
}

/// Lets `/metrics` report the allocator's figures (nothing to report without jemalloc).
pub fn report_to_metrics() {
    #[cfg(feature = "jemalloc")]
    crowdpulse_api::metrics::report_allocator(figures);
}

/// What the program holds and what jemalloc keeps resident, as of now.
#[cfg(feature = "jemalloc")]
fn figures() -> Option<crowdpulse_api::metrics::AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc's totals are a snapshot taken at each epoch.
    epoch::advance().ok()?;
    Some(crowdpulse_api::metrics::AllocatorStats {
        allocated: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::*;

    /// jemalloc serves the process's allocations: 64 MiB held shows in its figures, and goes
    /// again once freed. The figures are the whole process's: the other tests of this binary
    /// allocate far less than the 1 MiB allowed.
    #[test]
    fn the_figures_follow_what_the_program_holds() {
        const HELD: u64 = 64 << 20;
        let before = figures().expect("jemalloc's figures");
        let block = vec![1u8; HELD as usize];
        let holding = figures().expect("jemalloc's figures");
        assert!(
            holding.allocated >= before.allocated + HELD - (1 << 20),
            "{before:?} -> {holding:?}"
        );
        // jemalloc's own order: pages holding the heap, then those resident.
        assert!(holding.active >= holding.allocated, "{holding:?}");
        assert!(holding.resident >= holding.active, "{holding:?}");
        drop(std::hint::black_box(block));
        let after = figures().expect("jemalloc's figures");
        assert!(
            after.allocated + HELD - (1 << 20) <= holding.allocated,
            "{holding:?} -> {after:?}"
        );
    }

    /// Background threads are off by default and on for long runs, whose freed pages go back
    /// after a second instead of ten (unless the environment chose).
    #[test]
    fn long_runs_start_jemallocs_background_threads() {
        if std::env::var_os("MALLOC_CONF").is_some() {
            return;
        }
        let decay = |name: &[u8]| {
            // SAFETY: an ssize_t setting, named with its NUL.
            unsafe { tikv_jemalloc_ctl::raw::read::<isize>(name) }
        };
        assert_eq!(tikv_jemalloc_ctl::background_thread::read(), Ok(false));
        assert_eq!(decay(b"arenas.dirty_decay_ms\0"), Ok(10_000));
        release_memory_as_it_goes();
        assert_eq!(tikv_jemalloc_ctl::background_thread::read(), Ok(true));
        for name in [&b"arenas.dirty_decay_ms\0"[..], b"arena.0.dirty_decay_ms\0"] {
            assert_eq!(decay(name), Ok(LONG_RUN_DIRTY_DECAY_MS));
        }
    }
}
