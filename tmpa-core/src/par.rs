//! Work spread over the machine's cores: **every fan-out of the workspace** (compressing
//! sessions, parsing files, reading a day for compaction, fsyncing directories) goes
//! through this module, so that one set of rules holds for all of them: workers take the
//! next item when they finish one (a few large items do not leave a core idle), a panic
//! in a worker is propagated to the caller with its own payload, and at most
//! [`THREADS_MAX`] threads run per fan-out.
//!
//! Three shapes:
//! - [`map_ordered`] / [`map_ordered_on`]: every result, collected, in item order;
//! - [`for_each_ordered`]: results streamed to the calling thread in item order, with a
//!   bounded number of results in flight (a million files' verdicts never pile up), and
//!   a stop on the first error the consumer returns;
//! - [`fold_within_budget`]: each worker folds items into an accumulator of its own and
//!   stops taking items once the workers together hold a byte budget (a compaction's
//!   read of one chunk of a day).
//!
//! # Thread counts
//! A caller passes its own count, each with a reason: `READ_THREADS_MAX`
//! (`crate::day`'s, shared with tmpa-compact's read and tmpa-patrol's `corrupt_json`:
//! reading and parsing small files is CPU-bound and each worker holds one file, so more
//! threads than cores only add contention). Others mean something else and stay apart:
//! tmpa-patrol's `STAT_THREADS` (`stat`s that wait on cold inodes: more in flight than
//! cores pays), tmpa-archive's `STORE_THREADS` (requests that wait on a store's latency,
//! their bytes bounded elsewhere) and tmpa-maint's directory fsyncs ([`THREADS_MAX`]:
//! waits on the disk).

// Only the library's day read uses it without the "maintenance" feature.
#![cfg_attr(not(feature = "maintenance"), allow(dead_code))]

use std::collections::BTreeMap;
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

/// Most worker threads any fan-out starts, whatever the machine has: the work is I/O
/// and compression bound, and each worker holds one item's buffers.
pub const THREADS_MAX: usize = 8;

/// The machine's cores, at most `max` (and at most [`THREADS_MAX`]): how many workers a
/// CPU-bound fan-out starts.
pub fn cores_up_to(max: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(max)
        .min(THREADS_MAX)
}

/// `items.iter().map(f).collect()`, computed on up to [`THREADS_MAX`] threads (one per
/// core), results in the order of `items`. Workers take the next item when they finish
/// one, so a few large items do not leave a core idle.
///
/// # Panics
/// When `f` panics (the panic is propagated).
///
/// # Examples
/// ```
/// let squares = tmpa_core::maintenance::map_ordered(&[1, 2, 3, 4], |x| x * x);
/// assert_eq!(squares, vec![1, 4, 9, 16]);
/// ```
pub fn map_ordered<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_ordered_on(cores_up_to(THREADS_MAX), items, f)
}

/// [`map_ordered`] on up to `threads` threads (at most [`THREADS_MAX`]): for work that
/// mostly waits on the disk (`stat` of cold inodes), where more requests in flight than
/// cores pays.
///
/// # Panics
/// When `f` panics (the panic is propagated).
pub fn map_ordered_on<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(THREADS_MAX).min(items.len());
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break out };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        join_all(workers).into_iter().flatten().collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Joins every worker, then propagates the first panic with its own payload (after all
/// have ended: no worker outlives the call).
fn join_all<R>(workers: Vec<std::thread::ScopedJoinHandle<'_, R>>) -> Vec<R> {
    let mut out = Vec::with_capacity(workers.len());
    let mut panic = None;
    for w in workers {
        match w.join() {
            Ok(r) => out.push(r),
            Err(p) => {
                panic.get_or_insert(p);
            }
        }
    }
    if let Some(p) = panic {
        resume_unwind(p);
    }
    out
}

/// How [`for_each_ordered`] spreads its items.
#[derive(Clone, Copy, Debug)]
pub struct Streamed {
    /// Workers (at most [`THREADS_MAX`]); fewer than 2, or fewer items than
    /// `sequential_below`, runs on the calling thread.
    pub threads: usize,
    /// Items a worker takes at a time (at least 1): amortises the hand-over.
    pub chunk: usize,
    /// Below this many items, the work runs on the calling thread (threads would cost more
    /// than they save).
    pub sequential_below: usize,
}

/// Computes `f` for every item on up to `how.threads` workers and hands each result to
/// `sink` **on the calling thread, in the order of `items`**, as soon as it and every
/// earlier one are done. Each worker makes its own state with `init` once (a held
/// directory, a buffer) and passes it to `f`.
///
/// Memory is bounded whatever the items cost: workers take a chunk only while fewer than
/// four chunks per worker are taken and not yet handed to `sink`, so a slow item holds
/// back at most that many results, and a slow `sink` holds back the workers.
///
/// # Errors
/// The first error `sink` returns (in item order): workers then take no more items, and
/// the rest of the results are dropped.
///
/// # Panics
/// When `f`, `init` or `sink` panics (the panic is propagated, after every worker ended).
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::{Streamed, for_each_ordered};
/// let how = Streamed { threads: 4, chunk: 2, sequential_below: 0 };
/// let mut seen = Vec::new();
/// let r: Result<(), String> = for_each_ordered(how, &[1, 2, 3, 4, 5], || (), |(), x| x * 10, |i, r| {
///     seen.push((i, r));
///     Ok(())
/// });
/// assert!(r.is_ok());
/// assert_eq!(seen, vec![(0, 10), (1, 20), (2, 30), (3, 40), (4, 50)]);
/// ```
pub fn for_each_ordered<T, S, R, E>(
    how: Streamed,
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
    mut sink: impl FnMut(usize, R) -> Result<(), E>,
) -> Result<(), E>
where
    T: Sync,
    R: Send,
{
    let threads = how.threads.min(THREADS_MAX);
    let chunk = how.chunk.max(1);
    if threads < 2 || items.len() < how.sequential_below.max(2) {
        let mut state = init();
        for (i, item) in items.iter().enumerate() {
            sink(i, f(&mut state, item))?;
        }
        return Ok(());
    }
    let chunks = items.len().div_ceil(chunk);
    let window = threads * 4;
    // Chunks taken, and chunks handed to `sink`; workers wait while `window` are between.
    let gate = Gate {
        counts: Mutex::new((0, 0)),
        moved: Condvar::new(),
        stop: AtomicBool::new(false),
    };
    let (tx, rx) = mpsc::channel::<(usize, Vec<R>)>();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let tx = tx.clone();
                let (gate, init, f) = (&gate, &init, &f);
                s.spawn(move || {
                    // A worker that panics stops the others (they could otherwise wait
                    // for a chunk that never comes).
                    let _stop = StopOnPanic(gate);
                    let mut state = init();
                    while let Some(c) = gate.take(chunks, window) {
                        let part = &items[c * chunk..((c + 1) * chunk).min(items.len())];
                        let out = part.iter().map(|item| f(&mut state, item)).collect();
                        if tx.send((c, out)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let _stop = StopOnPanic(&gate);
        let mut pending = BTreeMap::new();
        let mut expected = 0;
        let mut result = Ok(());
        for (c, out) in &rx {
            pending.insert(c, out);
            while let Some(out) = pending.remove(&expected) {
                for (k, r) in out.into_iter().enumerate() {
                    if result.is_ok() {
                        result = sink(expected * chunk + k, r);
                    }
                }
                expected += 1;
                gate.handed(result.is_err());
            }
            if result.is_err() {
                break;
            }
        }
        // Workers blocked on a full window or a closed channel end now.
        gate.stop();
        drop(rx);
        join_all(workers);
        result
    })
}

/// The window of [`for_each_ordered`]: chunks taken and chunks handed to the sink.
struct Gate {
    counts: Mutex<(usize, usize)>,
    moved: Condvar,
    stop: AtomicBool,
}

impl Gate {
    /// The next chunk to compute, once fewer than `window` are waiting to be handed on;
    /// `None` when all are taken or the fan-out stops.
    fn take(&self, chunks: usize, window: usize) -> Option<usize> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stop.load(Ordering::Relaxed) || counts.0 >= chunks {
                return None;
            }
            if counts.0 < counts.1 + window {
                counts.0 += 1;
                return Some(counts.0 - 1);
            }
            counts = self.moved.wait(counts).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn handed(&self, stop: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.1 += 1;
        if stop {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.moved.notify_all();
    }

    fn stop(&self) {
        let _counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.stop.store(true, Ordering::Relaxed);
        self.moved.notify_all();
    }
}

/// Stops the fan-out when dropped during a panic.
struct StopOnPanic<'a>(&'a Gate);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// Folds items `0..len` into one accumulator per worker (`init`, then `step` per item,
/// which returns the bytes the item added), on up to `threads` workers, and stops taking
/// items once the workers together added `budget_bytes` or more: every item taken is
/// folded, so the items done are exactly `0..taken`, and what is held is at most the
/// budget plus one item per worker.
///
/// Returns the accumulators (one per worker that started, in no particular order: an
/// item's accumulator depends on which worker took it) and `taken`.
///
/// # Panics
/// When `init` or `step` panics (the panic is propagated, after every worker ended).
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::fold_within_budget;
/// let sizes = [4usize, 4, 4, 4, 4];
/// let (accs, taken) = fold_within_budget(1, sizes.len(), 8, Vec::new, |acc, i| {
///     acc.push(i);
///     sizes[i]
/// });
/// assert_eq!(taken, 2);
/// assert_eq!(accs, vec![vec![0, 1]]);
/// ```
pub fn fold_within_budget<A: Send>(
    threads: usize,
    len: usize,
    budget_bytes: usize,
    init: impl Fn() -> A + Sync,
    step: impl Fn(&mut A, usize) -> usize + Sync,
) -> (Vec<A>, usize) {
    let next = AtomicUsize::new(0);
    let held = AtomicUsize::new(0);
    let work = || {
        let mut acc = init();
        // Checked before an item is taken: every item taken is folded.
        while held.load(Ordering::Relaxed) < budget_bytes {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= len {
                break;
            }
            held.fetch_add(step(&mut acc, i), Ordering::Relaxed);
        }
        acc
    };
    let threads = threads.min(THREADS_MAX).min(len);
    let accs = if threads < 2 {
        vec![work()]
    } else {
        std::thread::scope(|s| join_all((0..threads).map(|_| s.spawn(work)).collect()))
    };
    (accs, next.load(Ordering::Relaxed).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::time::Duration;

    fn streamed(threads: usize, chunk: usize) -> Streamed {
        Streamed {
            threads,
            chunk,
            sequential_below: 0,
        }
    }

    #[test]
    fn streamed_results_come_in_item_order_whatever_each_costs() {
        let items: Vec<u64> = (0..500).collect();
        for (threads, chunk) in [(1, 1), (2, 1), (4, 3), (8, 32), (3, 1000)] {
            let mut seen = Vec::new();
            let r: Result<(), ()> = for_each_ordered(
                streamed(threads, chunk),
                &items,
                || 0u64,
                |calls, &x| {
                    *calls += 1;
                    // Early items cost most: later ones finish first.
                    if x % 97 == 0 {
                        std::thread::sleep(Duration::from_millis(3));
                    }
                    x * 2
                },
                |i, r| {
                    seen.push((i, r));
                    Ok(())
                },
            );
            assert_eq!(r, Ok(()));
            let want: Vec<(usize, u64)> = items.iter().map(|&x| (x as usize, x * 2)).collect();
            assert_eq!(seen, want, "threads {threads}, chunk {chunk}");
        }
    }

    #[test]
    fn streamed_results_in_flight_stay_within_the_window() {
        let items: Vec<usize> = (0..2000).collect();
        let computed = AtomicUsize::new(0);
        let mut most_ahead = 0;
        let mut handed = 0;
        let r: Result<(), ()> = for_each_ordered(
            streamed(2, 1),
            &items,
            || (),
            |(), _| computed.fetch_add(1, Ordering::SeqCst),
            |_, _| {
                handed += 1;
                // A slow consumer: the workers must wait for it.
                if handed % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                most_ahead = most_ahead.max(computed.load(Ordering::SeqCst) - handed);
                Ok(())
            },
        );
        assert_eq!(r, Ok(()));
        assert_eq!(handed, items.len());
        // 4 chunks per worker waiting, and one chunk in each worker's hands.
        assert!(
            most_ahead <= 2 * 4 + 2,
            "{most_ahead} computed ahead of the sink"
        );
    }

    #[test]
    fn the_first_error_in_item_order_stops_the_work() {
        let items: Vec<usize> = (0..10_000).collect();
        let computed = AtomicUsize::new(0);
        let mut handed = Vec::new();
        let r = for_each_ordered(
            streamed(4, 8),
            &items,
            || (),
            |(), &x| {
                computed.fetch_add(1, Ordering::SeqCst);
                x
            },
            |i, x| {
                if x >= 100 && x % 50 == 0 {
                    return Err(format!("item {i}"));
                }
                handed.push(x);
                Ok(())
            },
        );
        assert_eq!(r, Err("item 100".to_owned()));
        assert_eq!(handed, (0..100).collect::<Vec<_>>());
        // Stopped well before the end: the window bounds what was computed after it.
        assert!(computed.load(Ordering::SeqCst) < 1000);
        // On the calling thread too.
        let r = for_each_ordered(
            streamed(1, 1),
            &items,
            || (),
            |(), &x| x,
            |_, x| {
                if x == 3 { Err(x) } else { Ok(()) }
            },
        );
        assert_eq!(r, Err(3));
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_with_its_message() {
        let items: Vec<usize> = (0..1000).collect();
        let streamed_panic = catch_unwind(AssertUnwindSafe(|| {
            let _: Result<(), ()> = for_each_ordered(
                streamed(4, 4),
                &items,
                || (),
                |(), &x| assert!(x != 517, "item 517 is bad"),
                |_, ()| Ok(()),
            );
        }))
        .expect_err("the panic is propagated");
        assert_eq!(message(&*streamed_panic), "item 517 is bad");
        let sink_panic = catch_unwind(AssertUnwindSafe(|| {
            let _: Result<(), ()> = for_each_ordered(
                streamed(4, 1),
                &items,
                || (),
                |(), &x| x,
                |_, x| {
                    assert!(x != 40, "sink fails at 40");
                    Ok(())
                },
            );
        }))
        .expect_err("the panic is propagated");
        assert_eq!(message(&*sink_panic), "sink fails at 40");
        let fold_panic = catch_unwind(AssertUnwindSafe(|| {
            fold_within_budget(
                4,
                1000,
                usize::MAX,
                || (),
                |(), i| {
                    assert!(i != 900, "fold fails at 900");
                    1
                },
            )
        }))
        .expect_err("the panic is propagated");
        assert_eq!(message(&*fold_panic), "fold fails at 900");
        let map_panic = catch_unwind(AssertUnwindSafe(|| {
            map_ordered_on(4, &items, |&x| assert!(x != 3, "map fails at 3"))
        }))
        .expect_err("the panic is propagated");
        assert_eq!(message(&*map_panic), "map fails at 3");
    }

    fn message(p: &(dyn std::any::Any + Send)) -> String {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    #[test]
    fn a_fold_stops_taking_items_once_the_budget_is_held() {
        for threads in [1, 2, 4] {
            let (accs, taken) = fold_within_budget(threads, 1000, 100, Vec::new, |acc, i| {
                acc.push(i);
                10
            });
            let mut done: Vec<usize> = accs.into_iter().flatten().collect();
            done.sort_unstable();
            // Every item taken is folded: a prefix, nothing twice.
            assert_eq!(done, (0..taken).collect::<Vec<_>>(), "threads {threads}");
            // The budget (10 items) plus at most one item per worker.
            assert!(
                (10..=10 + threads).contains(&taken),
                "{taken} of threads {threads}"
            );
        }
        // A budget never reached: every item, each once.
        let (accs, taken) = fold_within_budget(
            3,
            50,
            usize::MAX,
            || 0usize,
            |n, _| {
                *n += 1;
                0
            },
        );
        assert_eq!(taken, 50);
        assert_eq!(accs.iter().sum::<usize>(), 50);
        // No items: one empty accumulator.
        let (accs, taken) = fold_within_budget(4, 0, 10, || 7, |_, _| 1);
        assert_eq!((accs, taken), (vec![7], 0));
    }

    #[test]
    fn maps_keep_item_order() {
        let items: Vec<usize> = (0..300).collect();
        assert_eq!(
            map_ordered_on(5, &items, |&x| x + 1),
            (1..301).collect::<Vec<_>>()
        );
        assert_eq!(map_ordered(&items[..1], |&x| x), vec![0]);
    }
}
