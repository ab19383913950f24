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
/// the connection's, kept from head to head (a fresh array per head was 1.6 KB zeroed, or
/// copied when returned by value).
pub struct Offsets<'t> {
    start: usize,
    fields: &'t [(u32, u32, u32, u32)],
}

/// Room for a head's field offsets, kept by a connection.
pub type Table = Vec<(u32, u32, u32, u32)>;

impl<'t> Offsets<'t> {
    /// The offsets of `fields` (at most [`MAX_FIELDS`]) in `buf`, which they borrow,
    /// written into `table` (emptied first).
    pub fn new(buf: &[u8], fields: &[httparse::Header<'_>], table: &'t mut Table) -> Offsets<'t> {
        let start = buf.as_ptr() as usize;
        table.clear();
        table.extend(fields.iter().take(MAX_FIELDS).map(|field| {
            let (name_from, name_to) = span(start, field.name.as_bytes());
            let (from, to) = span(start, field.value);
            (name_from, name_to, from, to)
        }));
        Offsets {
            start,
            fields: table,
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
            let value = parsed_value(head.slice(from as usize..to as usize))?;
            map.append(name, value);
        }
        Ok(())
    }
}

/// A field value `httparse` parsed, taken without checking its bytes once more when it is
/// ASCII (as hyper's server takes them): that check cost ~150 instructions a field.
#[allow(unsafe_code)]
fn parsed_value(bytes: Bytes) -> Result<HeaderValue, BadField> {
    if !bytes.is_ascii() {
        return HeaderValue::from_maybe_shared(bytes).map_err(|_| BadField::Value);
    }
    // SAFETY: the function asks for UTF-8, which ASCII is. (And its value is one `http`
    // takes: `httparse` lets through HTAB, SP and visible ASCII in a value — and obs-text,
    // not ASCII, checked above — exactly the bytes `HeaderValue::from_bytes` accepts. A
    // debug build checks them anyway.)
    Ok(unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) })
}

/// Whether a `Connection` field's value holds `close` (a comma-separated list of tokens,
/// RFC 9110 §7.6.1; any case).
pub fn has_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Where `part` is in the buffer starting at address `start`.
fn span(start: usize, part: &[u8]) -> (u32, u32) {
    let from = (part.as_ptr() as usize - start) as u32;
    (from, from + part.len() as u32)
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use bytes::BytesMut;

    use super::*;

    /// The fields of `head` (a complete request head) through `Offsets`, as the server
    /// and the upstream client take them.
    fn fields_of(head: &[u8]) -> Result<HeaderMap, BadField> {
        let mut buf = BytesMut::from(head);
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut parsed = httparse::Request::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut parsed, &buf, &mut slots)
            .expect("a head httparse takes");
        let httparse::Status::Complete(len) = status else {
            panic!("incomplete head");
        };
        let mut table = Table::new();
        let offsets = Offsets::new(&buf, parsed.headers, &mut table);
        let head = buf.split_to(len).freeze();
        let mut map = HeaderMap::new();
        map.insert("x-left-over", HeaderValue::from_static("from before"));
        offsets.fill(&head, &mut map).map(|()| map)
    }

    #[test]
    fn fields_are_taken_in_order_as_their_bytes() {
        let map = fields_of(
            b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Tab: a\tb\r\nx-tab: c \r\nEmpty:\r\n\r\n",
        )
        .expect("fields");
        assert_eq!(map.len(), 4, "the map was emptied first: {map:?}");
        assert_eq!(map["host"], "a.example");
        let tabs: Vec<_> = map.get_all("x-tab").iter().collect();
        assert_eq!(tabs, ["a\tb", "c"]);
        assert_eq!(map["empty"], "");
    }

    #[test]
    fn a_value_beyond_ascii_is_checked_and_kept() {
        // obs-text (RFC 9110 §5.5): taken by httparse and http, not UTF-8 here.
        let map = fields_of(b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n").expect("fields");
        assert_eq!(map["x-name"].as_bytes(), b"caf\xe9");
        assert!(map["x-name"].to_str().is_err());
    }
}
