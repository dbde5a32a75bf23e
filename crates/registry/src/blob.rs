//! A blob download that survives broken connections: when the body breaks off, the stream
//! re-requests the rest with `Range: bytes=<delivered>-` (skipping the prefix itself when the
//! registry ignores `Range`), so the caller sees one uninterrupted sequence of bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use oci_spec::image::Digest;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

use crate::Error;
use crate::client::{Client, Endpoint, content_length};
use crate::reference::Reference;

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The bytes of one blob from the requested offset to its end; see [`Client::blob`].
pub struct BlobStream {
    /// The blob's total size (not the remaining length), when the registry said.
    pub size: Option<u64>,
    /// Where the stream started.
    pub offset: u64,
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("size", &self.size)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct State {
    client: Client,
    ep: Endpoint,
    r: Reference,
    digest: Digest,
    /// Absolute position of the next byte to hand out.
    delivered: u64,
    total: Option<u64>,
    body: Option<Body>,
    /// Bytes of the current body to drop (already delivered; the server ignored `Range`).
    skip: u64,
    /// Consecutive failures without progress.
    failures: u32,
    attempts: u32,
    done: bool,
}

/// What a blob response says about the bytes it carries.
struct Opened {
    total: Option<u64>,
    skip: u64,
    empty: bool,
}

/// `Content-Range: bytes <first>-<last>/<total>`: the range (`None` for `*`) and total.
type ContentRange = (Option<(u64, u64)>, Option<u64>);

fn parse_content_range(h: &HeaderMap) -> Option<ContentRange> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes")?.trim_start();
    let (range, total) = v.split_once('/')?;
    let total = if total.trim() == "*" {
        None
    } else {
        Some(total.trim().parse().ok()?)
    };
    let range = if range.trim() == "*" {
        None
    } else {
        let (a, b) = range.trim().split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    Some((range, total))
}

fn interpret(resp: &reqwest::Response, offset: u64, what: &str) -> Result<Opened, Error> {
    let protocol = |reason: String| Error::Protocol {
        what: what.to_string(),
        reason,
    };
    let h = resp.headers();
    match resp.status() {
        StatusCode::RANGE_NOT_SATISFIABLE => match parse_content_range(h) {
            Some((_, Some(total))) if total == offset => Ok(Opened {
                total: Some(total),
                skip: 0,
                empty: true,
            }),
            other => Err(protocol(format!(
                "the registry cannot serve from byte {offset} (blob size {}); remove the partial download and pull again",
                other
                    .and_then(|(_, t)| t)
                    .map_or_else(|| "unknown".to_string(), |t| t.to_string())
            ))),
        },
        StatusCode::PARTIAL_CONTENT => {
            let (range, total) = parse_content_range(h)
                .ok_or_else(|| protocol("206 response without a valid Content-Range".into()))?;
            let start = range.map_or(offset, |(s, _)| s);
            if start > offset {
                return Err(protocol(format!(
                    "asked for bytes from {offset}, got a range starting at {start}"
                )));
            }
            Ok(Opened {
                total,
                skip: offset - start,
                empty: false,
            })
        }
        _ => {
            // 200: the whole blob, whatever we asked for.
            let total = content_length(h);
            if let Some(t) = total {
                if offset > t {
                    return Err(protocol(format!(
                        "offset {offset} is beyond the blob's {t} bytes; remove the partial download and pull again"
                    )));
                }
            }
            if offset > 0 {
                tracing::debug!("{what}: registry ignored Range; skipping {offset} bytes");
            }
            Ok(Opened {
                total,
                skip: offset,
                empty: false,
            })
        }
    }
}

impl BlobStream {
    pub(crate) async fn open(
        client: Client,
        ep: Endpoint,
        r: Reference,
        digest: Digest,
        offset: u64,
    ) -> Result<BlobStream, Error> {
        let resp = client.blob_request(&ep, &r, &digest, offset).await?;
        let what = format!("blob {digest} in {}", r.name());
        let opened = interpret(&resp, offset, &what)?;
        let body: Option<Body> = if opened.empty {
            None
        } else {
            Some(Box::pin(resp.bytes_stream()))
        };
        let state = State {
            client,
            ep,
            r,
            digest,
            delivered: offset,
            total: opened.total,
            done: body.is_none(),
            body,
            skip: opened.skip,
            failures: 0,
            attempts: 1,
        };
        Ok(BlobStream {
            size: opened.total,
            offset,
            inner: Box::pin(futures_util::stream::unfold(state, step)),
        })
    }
}

fn incomplete(st: &State, reason: String) -> Error {
    Error::Incomplete {
        repository: st.r.name(),
        digest: st.digest.clone(),
        received: st.delivered,
        total: st.total,
        attempts: st.attempts,
        reason,
    }
}

async fn step(mut st: State) -> Option<(Result<Bytes, Error>, State)> {
    loop {
        if st.done {
            return None;
        }
        let failure = match st.body.as_mut() {
            None => {
                st.attempts += 1;
                let what = format!("blob {} in {}", st.digest, st.r.name());
                let res = st
                    .client
                    .blob_request(&st.ep, &st.r, &st.digest, st.delivered)
                    .await
                    .and_then(|resp| interpret(&resp, st.delivered, &what).map(|o| (resp, o)));
                match res {
                    Ok((resp, opened)) => {
                        if let (Some(was), Some(now)) = (st.total, opened.total) {
                            if was != now {
                                st.done = true;
                                let e = incomplete(
                                    &st,
                                    format!(
                                        "the blob's size changed from {was} to {now} bytes between requests"
                                    ),
                                );
                                return Some((Err(e), st));
                            }
                        }
                        st.total = st.total.or(opened.total);
                        if opened.empty {
                            st.done = true;
                            return None;
                        }
                        st.skip = opened.skip;
                        st.body = Some(Box::pin(resp.bytes_stream()));
                        continue;
                    }
                    // The request itself already went through its retries.
                    Err(e) => {
                        st.done = true;
                        let e = incomplete(&st, e.to_string());
                        return Some((Err(e), st));
                    }
                }
            }
            Some(body) => match body.next().await {
                Some(Ok(mut chunk)) => {
                    if st.skip > 0 {
                        let n = usize::try_from(st.skip)
                            .unwrap_or(usize::MAX)
                            .min(chunk.len());
                        chunk = chunk.slice(n..);
                        st.skip -= u64::try_from(n).unwrap_or(0);
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    st.delivered += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                    st.failures = 0;
                    if let Some(t) = st.total {
                        if st.delivered > t {
                            st.done = true;
                            let e = incomplete(
                                &st,
                                format!("the registry sent more than the declared {t} bytes"),
                            );
                            return Some((Err(e), st));
                        }
                    }
                    return Some((Ok(chunk), st));
                }
                Some(Err(e)) => format!("connection broke: {e}"),
                None => match st.total {
                    Some(t) if st.delivered < t => "connection closed early".to_string(),
                    _ => {
                        st.done = true;
                        return None;
                    }
                },
            },
        };
        st.body = None;
        st.failures += 1;
        if st.failures > st.client.max_retries() {
            st.done = true;
            let e = incomplete(&st, failure);
            return Some((Err(e), st));
        }
        let wait = st.client.backoff.delay(st.failures);
        tracing::debug!(
            "blob {} in {}: {failure} at byte {}; resuming in {wait:?}",
            st.digest,
            st.r.name(),
            st.delivered
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            "bytes 10-19/100".parse().expect("hv"),
        );
        assert_eq!(parse_content_range(&h), Some((Some((10, 19)), Some(100))));
        h.insert(header::CONTENT_RANGE, "bytes */100".parse().expect("hv"));
        assert_eq!(parse_content_range(&h), Some((None, Some(100))));
        h.insert(header::CONTENT_RANGE, "bytes 0-9/*".parse().expect("hv"));
        assert_eq!(parse_content_range(&h), Some((Some((0, 9)), None)));
        h.insert(header::CONTENT_RANGE, "junk".parse().expect("hv"));
        assert_eq!(parse_content_range(&h), None);
    }
}
