//! Subject validity and overlap, answered the way nats-server answers them.
//!
//! Offline validation has to predict which topologies the server will refuse
//! (10065 "subjects overlap with an existing stream", 10052 for a stream whose
//! own subjects overlap, 10100/10138 for consumer filters). A "cleaner" rule
//! than the server's would either let through files the server refuses or
//! refuse files it accepts, so [`collide`] reproduces the server's
//! `SubjectsCollide` including its quirks: a token counts as a wildcard only
//! when it is exactly `*` or `>`, except that in the token-by-token comparison
//! of two wildcard subjects the server looks only at a token's first byte, so
//! `*x` there behaves like `*`. The integration tests check these answers
//! against a real server.

/// Why a subject is not valid, in words a user can act on.
pub fn subject_problem(subject: &str) -> Option<String> {
    if subject.is_empty() {
        return Some("a subject can not be empty".into());
    }
    let mut seen_fwc = false;
    for token in subject.split('.') {
        if seen_fwc {
            return Some(format!(
                "{subject:?}: '>' must be the last token (it matches one or more trailing tokens)"
            ));
        }
        if token.is_empty() {
            return Some(format!(
                "{subject:?}: empty token (no leading, trailing or doubled '.')"
            ));
        }
        if token
            .chars()
            .any(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c'))
        {
            return Some(format!("{subject:?}: subjects can not contain whitespace"));
        }
        if token == ">" {
            seen_fwc = true;
        }
    }
    None
}

/// True when the server would accept `subject` as a stream subject or filter.
pub fn is_valid(subject: &str) -> bool {
    subject_problem(subject).is_none()
}

/// True when `subject` has no wildcard token (`*` or `>` as a whole token).
pub fn is_literal(subject: &str) -> bool {
    subject.split('.').all(|t| t != "*" && t != ">")
}

fn is_wildcard_token(t: &str) -> (bool, bool) {
    (t == "*", t == ">")
}

/// The server's `SubjectsCollide`: could one literal subject match both?
pub fn collide(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let ta: Vec<&str> = a.split('.').collect();
    let tb: Vec<&str> = b.split('.').collect();
    let (pwc1, fwc1) = analyze(&ta);
    let (pwc2, fwc2) = analyze(&tb);
    let lit1 = !(pwc1 || fwc1);
    let lit2 = !(pwc2 || fwc2);
    if lit1 && lit2 {
        return a == b;
    }
    if lit1 && !lit2 {
        return subset_tokens(&ta, &tb);
    }
    if lit2 && !lit1 {
        return subset_tokens(&tb, &ta);
    }
    if !fwc1 && !fwc2 && ta.len() != tb.len() {
        return false;
    }
    if ta.len() != tb.len() && ((ta.len() < tb.len() && !fwc1) || (tb.len() < ta.len() && !fwc2)) {
        return false;
    }
    ta.iter()
        .zip(tb.iter())
        .all(|(x, y)| tokens_can_match(x, y))
}

fn analyze(tokens: &[&str]) -> (bool, bool) {
    tokens.iter().fold((false, false), |(p, f), t| {
        let (tp, tf) = is_wildcard_token(t);
        (p || tp, f || tf)
    })
}

// Like the server, only the first byte decides whether a token is a wildcard here.
fn tokens_can_match(a: &str, b: &str) -> bool {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) => matches!(x, b'*' | b'>') || matches!(y, b'*' | b'>') || a == b,
        _ => false,
    }
}

/// True when every subject matched by `subject` is also matched by `pattern`
/// (the server's `subjectIsSubsetMatch`): `orders.eu` and `orders.*` are subsets
/// of `orders.>`; `orders.>` is not a subset of `orders.*`.
pub fn is_subset(subject: &str, pattern: &str) -> bool {
    let t: Vec<&str> = subject.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    subset_tokens(&t, &p)
}

fn subset_tokens(tokens: &[&str], test: &[&str]) -> bool {
    for (i, t2) in test.iter().enumerate() {
        if i >= tokens.len() {
            return false;
        }
        if t2.is_empty() {
            return false;
        }
        if *t2 == ">" {
            return true;
        }
        let t1 = tokens[i];
        if t1.is_empty() || t1 == ">" {
            return false;
        }
        if t1 == "*" {
            if *t2 != "*" {
                return false;
            }
            continue;
        }
        if !t2.starts_with('*') && t1 != *t2 {
            return false;
        }
    }
    tokens.len() == test.len()
}

/// True when `subject` falls in one of the API namespaces a stream may only
/// capture with `no_ack` (the server exempts `$JS.EVENT.>` and `$SYS.ACCOUNT.>`).
pub fn needs_no_ack(subject: &str) -> Option<&'static str> {
    if subject == ">" {
        return Some(">");
    }
    for ns in ["$JS.>", "$JSC.>", "$NRG.>"] {
        if collide(subject, ns) && !is_subset(subject, "$JS.EVENT.>") {
            return Some(ns);
        }
    }
    if collide(subject, "$SYS.>") && !is_subset(subject, "$SYS.ACCOUNT.>") {
        return Some("$SYS.>");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        for ok in [
            "a",
            "a.b",
            "a.*",
            "a.>",
            ">",
            "*",
            "a.*.c",
            "foo.a*",
            "$JS.API.>",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a b", "a.\tb", ">.a"] {
            assert!(!is_valid(bad), "{bad}");
            assert!(subject_problem(bad).is_some());
        }
        assert!(is_literal("a.b"));
        assert!(is_literal("a.b*"));
        assert!(!is_literal("a.*"));
        assert!(!is_literal("a.>"));
    }

    /// (a, b, collide?) — includes the examples from the server facts.
    const CASES: &[(&str, &str, bool)] = &[
        ("a.*", "*.b", true),
        ("foo.*.baz", "foo.>", true),
        ("foo.*", "foo.*.*", false),
        ("foo", "foo.>", false),
        ("foo.bar", "foo.>", true),
        ("foo.bar", "foo.*", true),
        ("foo.bar", "foo.baz", false),
        ("foo.bar", "foo.bar", true),
        ("foo.>", "foo.>", true),
        ("foo.>", "bar.>", false),
        (">", "anything.at.all", true),
        (">", "foo.*", true),
        ("*", "foo", true),
        ("*", "foo.bar", false),
        ("*.*", "foo.>", true),
        ("foo.*", "foo.>", true),
        ("foo.*.bar", "foo.baz.*", true),
        ("foo.*.bar", "foo.*.baz", false),
        ("orders.eu", "orders.us", false),
        ("alerts", "alerts.*", false),
        ("root_cause_result", "root_cause_result", true),
        ("a.b.c", "a.*.>", true),
        ("a.b", "a.*.>", false),
        ("foo.a*", "foo.>", true),
        ("foo.a*", "foo.b*", false),
    ];

    #[test]
    fn overlap_table() {
        for &(a, b, want) in CASES {
            assert_eq!(collide(a, b), want, "{a} vs {b}");
            assert_eq!(collide(b, a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn subsets() {
        assert!(is_subset("orders.eu", "orders.>"));
        assert!(is_subset("orders.*", "orders.>"));
        assert!(!is_subset("orders.>", "orders.*"));
        assert!(is_subset("orders.eu", "orders.*"));
        assert!(!is_subset("orders", "orders.>"));
        assert!(is_subset("a.b", ">"));
    }

    #[test]
    fn api_namespaces() {
        assert_eq!(needs_no_ack(">"), Some(">"));
        assert_eq!(needs_no_ack("$JS.API.>"), Some("$JS.>"));
        assert_eq!(needs_no_ack("$JS.EVENT.advisory.>"), None);
        assert_eq!(needs_no_ack("$SYS.ACCOUNT.x"), None);
        assert_eq!(needs_no_ack("$SYS.REQ.x"), Some("$SYS.>"));
        assert_eq!(needs_no_ack("*.API.x"), Some("$JS.>"));
        assert_eq!(needs_no_ack("orders.>"), None);
    }
}

/// Many subjects, indexed so that those that may [`collide`] with one are
/// found without comparing it to every other: a trie on tokens, where a
/// token starting with `*` or `>` (the server's own test for a wildcard
/// token, by first byte) is kept apart because it may meet any token.
///
/// [`SubjectIndex::candidates`] returns a superset of the subjects that
/// collide with the one asked about (every pair that collides agrees, token
/// by token up to the shorter one's length, in equal tokens or a wildcard
/// on either side); confirm each with [`collide`].
pub struct SubjectIndex {
    nodes: Vec<Node>,
    /// The token that leads to each node (the root's is empty).
    tokens: Vec<String>,
}

impl Default for SubjectIndex {
    fn default() -> Self {
        SubjectIndex::new()
    }
}

#[derive(Default)]
struct Node {
    literal: std::collections::HashMap<String, usize>,
    wild: Vec<usize>,
    /// Ids of the subjects that end at this node.
    ending: Vec<usize>,
}

fn wildish(token: &str) -> bool {
    matches!(token.as_bytes().first(), Some(b'*' | b'>'))
}

impl SubjectIndex {
    pub fn new() -> SubjectIndex {
        SubjectIndex {
            nodes: vec![Node::default()],
            tokens: vec![String::new()],
        }
    }

    fn token_of(&self, node: usize) -> Option<&str> {
        self.tokens.get(node).map(String::as_str)
    }

    /// Add `subject` under `id`.
    pub fn insert(&mut self, subject: &str, id: usize) {
        let mut at = 0;
        for token in subject.split('.') {
            let next = if wildish(token) {
                self.nodes[at]
                    .wild
                    .iter()
                    .copied()
                    .find(|&n| self.token_of(n) == Some(token))
            } else {
                self.nodes[at].literal.get(token).copied()
            };
            at = match next {
                Some(n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.tokens.push(token.to_string());
                    if wildish(token) {
                        self.nodes[at].wild.push(n);
                    } else {
                        self.nodes[at].literal.insert(token.to_string(), n);
                    }
                    n
                }
            };
        }
        self.nodes[at].ending.push(id);
    }

    /// The ids of the subjects that may collide with `subject`.
    pub fn candidates(&self, subject: &str) -> Vec<usize> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut out = Vec::new();
        self.walk(0, &tokens, &mut out);
        out
    }

    fn walk(&self, at: usize, rest: &[&str], out: &mut Vec<usize>) {
        let node = &self.nodes[at];
        let Some((token, rest)) = rest.split_first() else {
            // The asked subject ends here: what is compared is done, so
            // every subject below may collide (the length rules decide).
            self.subtree(at, out);
            return;
        };
        // Subjects that end here are shorter: compared as far as they go.
        out.extend_from_slice(&node.ending);
        if wildish(token) {
            for &n in node.literal.values().chain(node.wild.iter()) {
                self.walk(n, rest, out);
            }
        } else {
            if let Some(&n) = node.literal.get(*token) {
                self.walk(n, rest, out);
            }
            for &n in &node.wild {
                self.walk(n, rest, out);
            }
        }
    }

    fn subtree(&self, at: usize, out: &mut Vec<usize>) {
        let node = &self.nodes[at];
        out.extend_from_slice(&node.ending);
        for &n in node.literal.values().chain(node.wild.iter()) {
            self.subtree(n, out);
        }
    }
}
