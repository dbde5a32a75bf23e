//! The event bus: container and image lifecycle events, published by the services as they act
//! and streamed to `berth events` subscribers.
//!
//! A tokio broadcast channel carries live events; a ring of the most recent ones lets a
//! subscriber ask for events `since` a past time. Publishing and subscribing take the same lock
//! around "append to the ring, send" and "snapshot the ring, subscribe", so a subscriber sees
//! every event exactly once across the replayed part and the live part.
//!
//! Filters follow Docker's `--filter` semantics: values of one key are alternatives (OR),
//! different keys must all match (AND).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use berth_api::v1::Event;
use futures_util::Stream;
use tokio::sync::broadcast;

/// How many past events `since` can reach back over.
const RING: usize = 1024;
/// How many live events a slow subscriber may fall behind before it skips some.
const CHANNEL: usize = 1024;

/// The bus; cheap to clone (clones share the channel and the ring).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    ring: Mutex<VecDeque<Event>>,
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> EventBus {
        let (tx, _) = broadcast::channel(CHANNEL);
        EventBus {
            inner: Arc::new(Inner {
                ring: Mutex::new(VecDeque::with_capacity(RING)),
                tx,
            }),
        }
    }

    /// Publish `ev`; its time is set to now when it is 0.
    pub fn publish(&self, mut ev: Event) {
        if ev.time_unix_nanos == 0 {
            ev.time_unix_nanos = now_unix_nanos();
        }
        let mut ring = self
            .inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(ev.clone());
        // No receiver is not an error: nobody is listening.
        let _ = self.inner.tx.send(ev);
    }

    /// Events matching `filter`: those still in the ring from `since_unix_nanos` on (none when
    /// 0), then live ones. With `until_unix_nanos` (not 0) the stream ends at that time: at once
    /// when it is in the past, else when an event after it arrives or the clock passes it.
    pub fn subscribe(
        &self,
        filter: EventFilter,
        since_unix_nanos: i64,
        until_unix_nanos: i64,
    ) -> EventStream {
        let (replay, rx) = {
            let ring = self
                .inner
                .ring
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let replay: VecDeque<Event> = if since_unix_nanos > 0 {
                ring.iter()
                    .filter(|e| e.time_unix_nanos >= since_unix_nanos)
                    .filter(|e| until_unix_nanos <= 0 || e.time_unix_nanos <= until_unix_nanos)
                    .filter(|e| filter.matches(e))
                    .cloned()
                    .collect()
            } else {
                VecDeque::new()
            };
            (replay, self.inner.tx.subscribe())
        };
        let now = now_unix_nanos();
        let live = until_unix_nanos <= 0 || until_unix_nanos > now;
        let deadline = (until_unix_nanos > 0 && live).then(|| {
            let wait = u64::try_from(until_unix_nanos - now).unwrap_or(0);
            Box::pin(tokio::time::sleep(std::time::Duration::from_nanos(wait)))
        });
        let (tx, out) = tokio::sync::mpsc::channel(64);
        if live {
            tokio::spawn(forward(
                rx,
                tx,
                filter,
                (since_unix_nanos, until_unix_nanos),
                deadline,
            ));
        }
        EventStream { replay, out }
    }
}

/// Move matching live events from the broadcast to one subscriber until it hangs up or `until`.
async fn forward(
    mut rx: broadcast::Receiver<Event>,
    tx: tokio::sync::mpsc::Sender<Event>,
    filter: EventFilter,
    (since, until): (i64, i64),
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
) {
    let mut deadline = deadline;
    loop {
        let ev = tokio::select! {
            r = rx.recv() => r,
            () = async {
                match deadline.as_mut() {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            } => return,
            () = tx.closed() => return,
        };
        match ev {
            Ok(ev) => {
                if until > 0 && ev.time_unix_nanos > until {
                    return;
                }
                if ev.time_unix_nanos < since || !filter.matches(&ev) {
                    continue;
                }
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("an events subscriber fell behind and missed {n} events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The events a subscription yields: the replayed ones, then the live ones.
pub struct EventStream {
    replay: VecDeque<Event>,
    out: tokio::sync::mpsc::Receiver<Event>,
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Some(ev) = self.replay.pop_front() {
            return Poll::Ready(Some(ev));
        }
        self.out.poll_recv(cx)
    }
}

/// A parsed set of Docker-style event filters, optionally scoped to one namespace.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    namespace: Option<String>,
    /// key -> accepted values.
    terms: BTreeMap<String, Vec<String>>,
}

/// The filter keys `berth events` understands.
const KEYS: &[&str] = &["type", "event", "container", "image", "label"];

impl EventFilter {
    /// Parse `KEY=VALUE` filters (`type`, `event`, `container`, `image`, `label`); events of
    /// other namespaces than `namespace` (when given) never match.
    pub fn parse(
        namespace: Option<&str>,
        filters: &[String],
    ) -> Result<EventFilter, tonic::Status> {
        let mut terms: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in filters {
            let Some((key, value)) = f.split_once('=') else {
                return Err(tonic::Status::invalid_argument(format!(
                    "bad format of filter {f:?} (expected name=value)"
                )));
            };
            let key = key.trim().to_ascii_lowercase();
            // Docker accepts "action" as "event"'s other name.
            let key = if key == "action" {
                "event".to_owned()
            } else {
                key
            };
            if !KEYS.contains(&key.as_str()) {
                return Err(tonic::Status::invalid_argument(format!(
                    "invalid filter {key:?}: events accept {}",
                    KEYS.join(", ")
                )));
            }
            terms.entry(key).or_default().push(value.to_owned());
        }
        Ok(EventFilter {
            namespace: namespace.map(str::to_owned),
            terms,
        })
    }

    /// Does `ev` pass every filter key?
    pub fn matches(&self, ev: &Event) -> bool {
        if self
            .namespace
            .as_deref()
            .is_some_and(|ns| ns != ev.namespace)
        {
            return false;
        }
        self.terms.iter().all(|(key, values)| {
            values.iter().any(|v| match key.as_str() {
                "type" => ev.r#type == *v,
                "event" => ev.action == *v,
                "container" => {
                    ev.r#type == "container"
                        && (id_matches(&ev.id, v) || ev.attributes.get("name") == Some(v))
                }
                "image" => match ev.r#type.as_str() {
                    "image" => {
                        id_matches(&ev.id, v)
                            || image_name_matches(&ev.id, v)
                            || ev
                                .attributes
                                .get("name")
                                .is_some_and(|n| image_name_matches(n, v))
                    }
                    "container" => ev
                        .attributes
                        .get("image")
                        .is_some_and(|n| image_name_matches(n, v) || id_matches(n, v)),
                    _ => false,
                },
                "label" => match v.split_once('=') {
                    Some((k, val)) => ev.attributes.get(k).is_some_and(|a| a == val),
                    None => ev.attributes.contains_key(v.as_str()),
                },
                _ => false,
            })
        })
    }
}

/// An id given in full or as a prefix (with or without `sha256:`) of at least one character.
fn id_matches(id: &str, want: &str) -> bool {
    let bare = |s: &str| s.strip_prefix("sha256:").unwrap_or(s).to_owned();
    let (id, want) = (bare(id), bare(want));
    !want.is_empty() && id.starts_with(&want)
}

/// `busybox` matches `busybox`, `busybox:latest` and `docker.io/library/busybox:latest`.
fn image_name_matches(name: &str, want: &str) -> bool {
    if name == want {
        return true;
    }
    let strip = |s: &str| -> String {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        s.strip_prefix("library/").unwrap_or(s).to_owned()
    };
    let (name, want) = (strip(name), strip(want));
    name == want || name.strip_suffix(":latest") == Some(want.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn ev(ns: &str, typ: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            time_unix_nanos: 0,
            r#type: typ.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            namespace: ns.into(),
        }
    }

    fn emit(bus: &EventBus, typ: &str, action: &str, id: &str, attrs: &[(&str, &str)]) {
        bus.publish(ev("default", typ, action, id, attrs));
    }

    fn filter(fs: &[&str]) -> EventFilter {
        let fs: Vec<String> = fs.iter().map(|s| (*s).to_owned()).collect();
        EventFilter::parse(Some("default"), &fs).unwrap()
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let start = ev(
            "default",
            "container",
            "start",
            "abcdef0123",
            &[("name", "web"), ("image", "busybox"), ("tier", "front")],
        );
        let pull = ev(
            "default",
            "image",
            "pull",
            "docker.io/library/busybox:latest",
            &[("name", "docker.io/library/busybox:latest")],
        );
        assert!(filter(&[]).matches(&start));
        assert!(filter(&["type=container"]).matches(&start));
        assert!(!filter(&["type=container"]).matches(&pull));
        assert!(filter(&["type=container", "type=image"]).matches(&pull));
        assert!(filter(&["event=start", "event=die"]).matches(&start));
        assert!(!filter(&["event=start", "type=image"]).matches(&start));
        assert!(filter(&["container=web"]).matches(&start));
        assert!(filter(&["container=abcd"]).matches(&start));
        assert!(!filter(&["container=we"]).matches(&start));
        assert!(!filter(&["container=web"]).matches(&pull));
        assert!(filter(&["image=busybox"]).matches(&start));
        assert!(filter(&["image=busybox"]).matches(&pull));
        assert!(filter(&["image=busybox:latest"]).matches(&pull));
        assert!(!filter(&["image=alpine"]).matches(&pull));
        assert!(filter(&["label=tier"]).matches(&start));
        assert!(filter(&["label=tier=front"]).matches(&start));
        assert!(!filter(&["label=tier=back"]).matches(&start));
        assert!(filter(&["action=start"]).matches(&start));
        // Other namespaces never match a scoped filter.
        assert!(!filter(&[]).matches(&ev("other", "container", "start", "x", &[])));
        assert!(EventFilter::parse(None, &[]).unwrap().matches(&ev(
            "other",
            "container",
            "start",
            "x",
            &[]
        )));
    }

    #[test]
    fn bad_filters_are_refused_with_the_key() {
        let e = EventFilter::parse(None, &["colour=red".into()]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("colour"), "{}", e.message());
        let e = EventFilter::parse(None, &["type".into()]).unwrap_err();
        assert!(e.message().contains("name=value"), "{}", e.message());
    }

    #[tokio::test]
    async fn since_replays_the_ring_then_streams_live_events_once_each() {
        let bus = EventBus::new();
        bus.publish(Event {
            time_unix_nanos: 1_000,
            ..ev("default", "image", "pull", "old", &[])
        });
        bus.publish(Event {
            time_unix_nanos: 2_000,
            ..ev("default", "image", "tag", "newer", &[])
        });
        let mut s = bus.subscribe(EventFilter::default(), 1_500, 0);
        emit(&bus, "container", "start", "live", &[]);
        let first = s.next().await.unwrap();
        assert_eq!(first.id, "newer");
        let second = s.next().await.unwrap();
        assert_eq!(second.id, "live");
        assert!(second.time_unix_nanos > 0);
    }

    #[tokio::test]
    async fn a_past_until_ends_after_the_replay() {
        let bus = EventBus::new();
        for (t, id) in [(10, "a"), (20, "b"), (30, "c")] {
            bus.publish(Event {
                time_unix_nanos: t,
                ..ev("default", "image", "pull", id, &[])
            });
        }
        let got: Vec<String> = bus
            .subscribe(EventFilter::default(), 15, 25)
            .map(|e| e.id)
            .collect()
            .await;
        assert_eq!(got, ["b"]);
    }

    #[tokio::test]
    async fn without_since_only_live_matching_events_arrive() {
        let bus = EventBus::new();
        emit(&bus, "image", "pull", "before", &[]);
        let mut s = bus.subscribe(filter(&["type=container"]), 0, 0);
        emit(&bus, "image", "pull", "skipped", &[]);
        emit(&bus, "container", "die", "c1", &[("exitCode", "3")]);
        let e = s.next().await.unwrap();
        assert_eq!((e.id.as_str(), e.action.as_str()), ("c1", "die"));
        assert_eq!(e.attributes["exitCode"], "3");
    }

    #[test]
    fn the_ring_keeps_only_the_newest() {
        let bus = EventBus::new();
        for i in 0..(RING + 5) {
            emit(&bus, "image", "pull", &i.to_string(), &[]);
        }
        let ring = bus.inner.ring.lock().unwrap();
        assert_eq!(ring.len(), RING);
        assert_eq!(ring.front().unwrap().id, "5");
    }
}
