//! Work spread over the machine's cores, for the programs' per-file work (compressing
//! sessions, parsing files) where items differ widely in cost.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Most worker threads [`map_ordered`] starts, whatever the machine has: the work is I/O
/// and compression bound, and each worker holds one item's buffers.
pub const THREADS_MAX: usize = 8;

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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    map_ordered_on(cores, items, f)
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
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
