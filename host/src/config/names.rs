//! Names the route file uses and how they are checked: host names (routes, SNI), upstream
//! names, and the "did you mean" suggestion for a misspelt key, reference or choice.

/// How far (in edits, per three characters) a name may be from a known one to be
/// suggested with "did you mean".
const SUGGESTION_CHARS_PER_EDIT: usize = 3;

/// `" (did you mean \"x\"?)"` for the known name closest to `name`, if one is close.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean_text(suggest(name, known))
}

/// The known name closest to `name`, if one is close enough to be a typo of it.
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let most_edits = (name.chars().count() / SUGGESTION_CHARS_PER_EDIT).max(1);
    known
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(edits, _)| *edits <= most_edits)
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, candidate)| candidate)
}

/// `" (did you mean \"x\"?)"` for a suggestion, `""` for none.
pub fn did_you_mean_text(suggestion: Option<&str>) -> String {
    suggestion
        .map(|meant| format!(" (did you mean {meant:?}?)"))
        .unwrap_or_default()
}

/// Upstream names are `[A-Za-z0-9_-]+`.
pub fn is_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks a lower-case host name: dot-separated labels of letters, digits, `-` and `_`,
/// optionally starting with the wildcard label `*.`.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let invalid = || {
        format!(
            "invalid host name {name:?}, expected e.g. \"api.example.com\" or \"*.example.com\""
        )
    };
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if rest.contains('*') {
        return Err(format!(
            "invalid host name {name:?}, a wildcard is only allowed as a leading \"*.\""
        ));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if rest.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for ok in [
            "example.com",
            "*.example.com",
            "localhost",
            "a-b_c.d1",
            "10.0.0.1",
        ] {
            assert_eq!(check_host_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "*",
            "a.*.com",
            "ex*.com",
            "a..b",
            "a.b.",
            "host:8080",
            "a b",
        ] {
            assert!(check_host_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("lisen", ["listen", "admin"]),
            " (did you mean \"listen\"?)"
        );
        assert_eq!(
            did_you_mean("usres", ["orders", "users"]),
            " (did you mean \"users\"?)"
        );
        assert_eq!(did_you_mean("completely", ["listen"]), "");
    }
}
