//! One arena of bytes for a day's events: their canonical JSON and ids, copied end to end
//! into a few large chunks, so that a day costs its bytes and a fixed-size record per
//! event instead of several heap allocations per event.

/// Size of a chunk; an event larger than this gets a chunk of its own size.
const CHUNK_BYTES: usize = 1 << 20;

/// Where some bytes are in an [`Arena`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    chunk: u32,
    offset: u32,
    len: u32,
}

/// Chunks of bytes, appended to and never moved: a [`Span`] stays valid until
/// [`Arena::clear`].
#[derive(Debug, Default)]
pub(crate) struct Arena {
    chunks: Vec<Vec<u8>>,
    /// Chunks emptied by `clear`, reused before new ones are allocated.
    spare: Vec<Vec<u8>>,
}

impl Arena {
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
                _ => Vec::with_capacity(len.max(CHUNK_BYTES)),
            };
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
        self.chunks
            .iter()
            .chain(&self.spare)
            .map(Vec::capacity)
            .sum()
    }

    /// Forgets every span; keeps the chunks for reuse (a run spilled to disk is followed
    /// by the next one of about the same size).
    pub(crate) fn clear(&mut self) {
        for mut c in self.chunks.drain(..) {
            c.clear();
            self.spare.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_survive_new_chunks_and_large_items() {
        let mut a = Arena::default();
        let small = a.push(b"{\"id\":\"x\"}", b"x");
        let big_bytes = vec![b'y'; CHUNK_BYTES + 10];
        let big = a.push(&big_bytes, b"id");
        let after = a.push(b"z", b"");
        assert_eq!(a.get(small), b"{\"id\":\"x\"}x");
        assert_eq!(a.get(big).len(), CHUNK_BYTES + 12);
        assert_eq!(a.get(after), b"z");
        let held = a.bytes();
        a.clear();
        let again = a.push(b"q", b"r");
        assert_eq!(a.get(again), b"qr");
        assert_eq!(a.bytes(), held, "chunks are reused, not reallocated");
    }
}
