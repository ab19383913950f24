//! What weir's HTTP/1.1 server (`server/h1.rs`) and its upstream client (`upstream/h1.rs`)
//! share of the codec: how a head parsed by `httparse` becomes a header map without
//! copying its fields.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The most fields a head may have.
pub const MAX_FIELDS: usize = 100;

/// A field `http` does not take (`httparse` is laxer about names and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadField {
    Name,
    Value,
}

/// Where a parsed head's parts are in its buffer. `httparse`'s fields borrow the buffer,
/// which is then split off and frozen; the parts are found again in the frozen head by
/// these offsets (name start, name end, value start, value end), as slices of it: shared,
/// not copied. A head is at most a few hundred KiB, so offsets fit in `u32`. The table is
/// the caller's (a local array: returned by value, its 1.6 KB were copied once more per
/// head).
pub struct Offsets<'t> {
    start: usize,
    fields: &'t [(u32, u32, u32, u32)],
}

/// Room for a head's field offsets.
pub type Table = [(u32, u32, u32, u32); MAX_FIELDS];

/// An empty [`Table`].
pub const TABLE: Table = [(0, 0, 0, 0); MAX_FIELDS];

impl<'t> Offsets<'t> {
    /// The offsets of `fields` (at most [`MAX_FIELDS`]) in `buf`, which they borrow,
    /// written into `table`.
    pub fn new(buf: &[u8], fields: &[httparse::Header<'_>], table: &'t mut Table) -> Offsets<'t> {
        let start = buf.as_ptr() as usize;
        let count = fields.len().min(MAX_FIELDS);
        for (field, range) in fields.iter().zip(table.iter_mut()) {
            let (name_from, name_to) = span(start, field.name.as_bytes());
            let (from, to) = span(start, field.value);
            *range = (name_from, name_to, from, to);
        }
        Offsets {
            start,
            fields: &table[..count],
        }
    }

    /// Where `part`, a slice of the buffer, is in it: (start, end).
    pub fn of(&self, part: &[u8]) -> (u32, u32) {
        span(self.start, part)
    }

    /// The fields into `map`, emptied first (its allocation is reused), from `head`: the
    /// buffer the offsets were taken in, frozen.
    pub fn fill(&self, head: &Bytes, map: &mut HeaderMap) -> Result<(), BadField> {
        map.clear();
        map.reserve(self.fields.len());
        for &(name_from, name_to, from, to) in self.fields {
            let name = HeaderName::from_bytes(&head[name_from as usize..name_to as usize])
                .map_err(|_| BadField::Name)?;
            let value = HeaderValue::from_maybe_shared(head.slice(from as usize..to as usize))
                .map_err(|_| BadField::Value)?;
            map.append(name, value);
        }
        Ok(())
    }
}

/// Where `part` is in the buffer starting at address `start`.
fn span(start: usize, part: &[u8]) -> (u32, u32) {
    let from = (part.as_ptr() as usize - start) as u32;
    (from, from + part.len() as u32)
}
