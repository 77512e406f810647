//! The client half of the core: connecting, publishing, consuming, request/reply
//! and health, written against async-nats. Nothing here knows about Python; the
//! bindings convert objects at the edges and call these functions on the one
//! tokio runtime.

pub mod connect;
pub mod consume;
pub mod events;
pub mod heal;
pub mod health;
pub mod jsapi;
pub mod publish;
pub mod publish_conn;
pub mod read;
pub mod request;
pub mod roundtrip;
pub mod stored;
pub mod wire;

pub use connect::{connect, Auth, ConnectConfig, Connected, Reconnects, TlsConfig};
pub use consume::{AckKind, Acker, InboundMessage, Inbox};
pub use events::{ConnEvents, Violation};
pub use publish::{OutboundMessage, PubAck, PublishOptions, Publisher};
pub use read::pull::{PullConsumer, PullOptions};
pub use read::subscription::SubscriptionPump;
pub use read::Reader;
pub use roundtrip::round_trip;

/// Hide the password part of `scheme://user:password@host` so a URL can be
/// shown in errors, logs and reprs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return redact_userinfo(url);
    };
    let (scheme, rest) = url.split_at(scheme_end);
    format!("{scheme}{}", redact_userinfo(rest))
}

fn redact_userinfo(rest: &str) -> String {
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let host = &rest[at + 1..];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                // a bare token in the userinfo position is a secret too
                None => format!("***@{host}"),
            }
        }
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_and_tokens() {
        assert_eq!(redact_url("nats://a:b@h:4222"), "nats://a:***@h:4222");
        assert_eq!(redact_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact_url("a:b@h"), "a:***@h");
        assert_eq!(redact_url("tls://u:p@ss@h"), "tls://u:***@h");
    }
}
