//! A core NATS subscription as a reader: every message on a subject (or a
//! queue group's share of them) into an inbox. What `serve` answers from.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::Reader;
use crate::client::consume::{InboundMessage, Inbox};
use crate::error::{Error, Result};

/// A core subscription feeding an inbox (used by `serve`).
pub struct SubscriptionPump {
    pub inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl SubscriptionPump {
    pub async fn start(
        client: &async_nats::Client,
        subject: &str,
        queue: Option<&str>,
        capacity: usize,
    ) -> Result<SubscriptionPump> {
        let sub = match queue {
            Some(q) => {
                client
                    .queue_subscribe(subject.to_string(), q.to_string())
                    .await
            }
            None => client.subscribe(subject.to_string()).await,
        }
        .map_err(|e| Error::invalid(format!("cannot subscribe to {subject:?}: {e}")))?;
        let inbox = Inbox::new(capacity);
        let target = inbox.clone();
        let task = tokio::spawn(async move {
            let mut sub = sub;
            while let Some(m) = sub.next().await {
                if target.push(InboundMessage::from(m)).await.is_err() {
                    break;
                }
            }
            let _ = sub.unsubscribe().await;
            target.close(None);
        });
        Ok(SubscriptionPump { inbox, task })
    }

    pub fn stop(&self) {
        self.task.abort();
        self.inbox.close(None);
    }
}

impl Drop for SubscriptionPump {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Reader for SubscriptionPump {
    fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        SubscriptionPump::stop(self);
        Box::pin(std::future::ready(()))
    }
}
