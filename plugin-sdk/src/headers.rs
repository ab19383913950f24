//! Header lists as the WIT carries them (`list<tuple<string, string>>`, names lower-case on
//! the way in, a name may repeat), and the case-insensitive operations plugins need on
//! them. [`Request`](crate::Request) and [`Response`](crate::Response) have methods that
//! call these; use the functions directly to apply one rule to either.

/// Header fields in order, as (name, value) pairs.
pub type Headers = Vec<(String, String)>;

/// The first value of `name` (compared case-insensitively), if any.
pub fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of `name` (compared case-insensitively), in order.
pub fn get_all<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Replaces every value of `name` with one `value`, where the first one was (or at the
/// end). The name is stored lower-case.
pub fn set(headers: &mut Headers, name: &str, value: impl Into<String>) {
    let value = value.into();
    match headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(first) => {
            headers[first] = (name.to_ascii_lowercase(), value);
            let mut index = 0;
            headers.retain(|(n, _)| {
                let keep = index <= first || !n.eq_ignore_ascii_case(name);
                index += 1;
                keep
            });
        }
        None => headers.push((name.to_ascii_lowercase(), value)),
    }
}

/// Adds a value of `name` after the existing ones. The name is stored lower-case.
pub fn append(headers: &mut Headers, name: &str, value: impl Into<String>) {
    headers.push((name.to_ascii_lowercase(), value.into()));
}

/// Removes every value of `name`; says whether there was one.
pub fn remove(headers: &mut Headers, name: &str) -> bool {
    let before = headers.len();
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.len() != before
}

/// Renames every field `from` to `to` (lower-case), keeping values and positions; fields
/// already named `to` are replaced. Says whether there was a field `from`.
pub fn rename(headers: &mut Headers, from: &str, to: &str) -> bool {
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(from)) {
        return false;
    }
    if !from.eq_ignore_ascii_case(to) {
        remove(headers, to);
    }
    let to = to.to_ascii_lowercase();
    for (name, _) in headers.iter_mut() {
        if name.eq_ignore_ascii_case(from) {
            name.clone_from(&to);
        }
    }
    true
}

/// Whether `name` is a valid HTTP field name (RFC 9110 `token`), as the gateway requires of
/// what a plugin returns.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` is a valid HTTP field value (visible ASCII, spaces and tabs, and
/// obs-text; no control characters, no CR or LF).
pub fn is_valid_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn lookups_ignore_case_and_keep_order() {
        let headers = list(&[("accept", "a"), ("x-one", "1"), ("Accept", "b")]);
        assert_eq!(get(&headers, "ACCEPT"), Some("a"));
        assert_eq!(get_all(&headers, "accept").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(get(&headers, "missing"), None);
    }

    #[test]
    fn set_replaces_every_value_in_place_of_the_first() {
        let mut headers = list(&[("a", "1"), ("x-v", "old"), ("b", "2"), ("X-V", "older")]);
        set(&mut headers, "X-V", "new");
        assert_eq!(headers, list(&[("a", "1"), ("x-v", "new"), ("b", "2")]));
        set(&mut headers, "c", "3");
        assert_eq!(headers.last(), Some(&("c".to_owned(), "3".to_owned())));
    }

    #[test]
    fn append_remove_and_rename() {
        let mut headers = list(&[("x-old", "1"), ("x-new", "stale"), ("x-old", "2")]);
        append(&mut headers, "X-Old", "3");
        assert!(rename(&mut headers, "x-old", "X-New"));
        assert_eq!(
            headers,
            list(&[("x-new", "1"), ("x-new", "2"), ("x-new", "3")])
        );
        assert!(!rename(&mut headers, "x-absent", "x-new"));
        assert!(remove(&mut headers, "X-NEW"));
        assert!(headers.is_empty());
        assert!(!remove(&mut headers, "x-new"));
    }

    #[test]
    fn validity_follows_rfc_9110() {
        assert!(is_valid_name("x-api-token"));
        assert!(!is_valid_name("bad name"));
        assert!(!is_valid_name(""));
        assert!(is_valid_value("Bearer abc\tdef"));
        assert!(!is_valid_value("evil\r\nx-injected: 1"));
    }
}
