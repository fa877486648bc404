//! One arena of bytes for a day's events: their canonical JSON and ids, copied end to end
//! into a few large chunks, so that a day costs its bytes and a fixed-size record per
//! event instead of several heap allocations per event.

/// Largest size of a chunk; an event larger than its arena's chunks gets a chunk of its
/// own size.
pub(crate) const CHUNK_BYTES_MAX: usize = 1 << 20;
/// Smallest size of a chunk.
const CHUNK_BYTES_MIN: usize = 4 << 10;

/// Where some bytes are in an [`Arena`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    chunk: u32,
    offset: u32,
    len: u32,
}

/// Chunks of bytes, appended to and never moved: a [`Span`] stays valid until
/// [`Arena::clear`].
#[derive(Debug)]
pub(crate) struct Arena {
    /// Size of a new chunk.
    chunk_bytes: usize,
    chunks: Vec<Vec<u8>>,
    /// Chunks emptied by `clear`, reused before new ones are allocated.
    spare: Vec<Vec<u8>>,
    /// Capacity of all chunks, in use and spare.
    held: usize,
    /// Capacity of the chunks in use.
    in_use: usize,
}

impl Default for Arena {
    fn default() -> Arena {
        Arena::with_chunk_bytes(CHUNK_BYTES_MAX)
    }
}

impl Arena {
    /// An arena allocating chunks of about `chunk_bytes` (clamped to 4 KiB..1 MiB): small
    /// ones when the whole arena must stay small.
    pub(crate) fn with_chunk_bytes(chunk_bytes: usize) -> Arena {
        Arena {
            chunk_bytes: chunk_bytes.clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX),
            chunks: Vec::new(),
            spare: Vec::new(),
            held: 0,
            in_use: 0,
        }
    }

    /// Copies `a` then `b` next to each other; returns where.
    ///
    /// # Panics
    /// When the two together are 4 GiB or more (an event is at most 1 MiB).
    pub(crate) fn push(&mut self, a: &[u8], b: &[u8]) -> Span {
        let len = a.len() + b.len();
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= len);
        if !fits {
            let chunk = match self.spare.pop() {
                Some(c) if c.capacity() >= len => c,
                other => {
                    self.held -= other.map_or(0, |c| c.capacity());
                    let c = Vec::with_capacity(len.max(self.chunk_bytes));
                    self.held += c.capacity();
                    c
                }
            };
            self.in_use += chunk.capacity();
            self.chunks.push(chunk);
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let offset = chunk.len();
        chunk.extend_from_slice(a);
        chunk.extend_from_slice(b);
        Span {
            chunk: u32::try_from(index).expect("fewer than 4G chunks"),
            offset: u32::try_from(offset).expect("a chunk is smaller than 4 GiB"),
            len: u32::try_from(len).expect("an event is smaller than 4 GiB"),
        }
    }

    /// The bytes at `span`.
    pub(crate) fn get(&self, span: Span) -> &[u8] {
        let start = span.offset as usize;
        &self.chunks[span.chunk as usize][start..start + span.len as usize]
    }

    /// Memory held, in bytes (chunks in use and spare).
    pub(crate) fn bytes(&self) -> usize {
        self.held
    }

    /// Memory of the chunks in use, in bytes: what the spans take, rounded up to chunks.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Forgets every span; keeps the chunks for reuse (a run spilled to disk is followed
    /// by the next one of about the same size).
    pub(crate) fn clear(&mut self) {
        for mut c in self.chunks.drain(..) {
            c.clear();
            self.spare.push(c);
        }
        self.in_use = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_survive_new_chunks_and_large_items() {
        let mut a = Arena::default();
        let small = a.push(b"{\"id\":\"x\"}", b"x");
        let big_bytes = vec![b'y'; CHUNK_BYTES_MAX + 10];
        let big = a.push(&big_bytes, b"id");
        let after = a.push(b"z", b"");
        assert_eq!(a.get(small), b"{\"id\":\"x\"}x");
        assert_eq!(a.get(big).len(), CHUNK_BYTES_MAX + 12);
        assert_eq!(a.get(after), b"z");
        let held = a.bytes();
        assert_eq!(a.in_use(), held);
        a.clear();
        assert_eq!(a.in_use(), 0);
        let again = a.push(b"q", b"r");
        assert_eq!(a.get(again), b"qr");
        assert_eq!(a.bytes(), held, "chunks are reused, not reallocated");
        let counted: usize = a.chunks.iter().chain(&a.spare).map(Vec::capacity).sum();
        assert_eq!(a.bytes(), counted);
    }
}
