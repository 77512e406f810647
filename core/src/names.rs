//! The server's rule for stream and consumer names, in one place: the
//! topology validator, the client (before it builds an API subject from a
//! name) and the bindings all ask here.

/// Longest name the server takes.
pub const MAX_NAME_LEN: usize = 255;

/// What is wrong with `name` as a stream or consumer name, if anything.
///
/// The server refuses whitespace, `.`, `*` and `>` (they would change the
/// API subject the name goes into), and `\` and `/` (names become file
/// names in file storage). Control characters (a NUL, say) pass the server's
/// own check and then fail stream creation with a generic 10049, or make
/// names nobody can type: they are refused here too.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name can not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "the name is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '\\' | '/'))
    {
        return Some(format!(
            "{name:?} contains {c:?}: names can not contain whitespace, '.', '*', '>', '\\' or '/' (try '_' or '-')"
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!(
            "{name:?} contains the control character {c:?}: names can only contain printable characters"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_rules_and_control_characters() {
        assert_eq!(name_problem("ORDERS_v2-eu"), None);
        for bad in [
            "", "a b", "a.b", "a*", "a>", "a/b", "a\\b", "a\tb", "a\0b", "a\u{7f}b", "a\u{85}b",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem(&"x".repeat(256))
            .unwrap()
            .contains("at most 255"));
        assert!(name_problem("a\0b").unwrap().contains("control character"));
    }
}
