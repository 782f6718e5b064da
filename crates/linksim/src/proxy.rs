//! A TCP proxy that puts any byte stream behind a [`Link`]: `edgeinfer link proxy`.
//!
//! Each connection accepted is relayed to the upstream address; what the client sends crosses
//! the link's uplink, what the upstream sends back its downlink. All connections share the one
//! link, as every flow of a device shares its radio. A stream has no messages, so what one read
//! returns (at most [`CHUNK`] bytes) is one message for the link: it is serialized at the
//! bandwidth or on the trace's opportunities, delayed, held up by handovers. Bytes come out in
//! order, as TCP delivers them: a chunk that arrives early waits for the one before it.
//!
//! Loss: TCP does not lose bytes, it stalls. A chunk the link gives up is sent again after
//! [`RTO`] (Linux's minimum retransmission timeout), as many times as it takes, and everything
//! behind it waits: the stall a retransmitting transport shows its application.
//!
//! Memory is bounded: a direction holds at most [`WINDOW`] chunks between reading and writing,
//! after which it stops reading, and TCP's flow control slows the sender down.
//!
//! [`relay`] works on any pair of byte streams (tests use in-memory pipes on the paused clock);
//! [`serve`] accepts TCP connections.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::link::{Link, Sent};
use crate::sim::Direction;
use crate::timer;

/// Largest chunk read at once: one message for the link.
pub const CHUNK: usize = 16 * 1024;

/// Chunks a direction holds between reading and writing (256 KiB).
pub const WINDOW: usize = 16;

/// Wait before a lost chunk is sent again: Linux's minimum TCP retransmission timeout.
pub const RTO: Duration = Duration::from_millis(200);

/// Bytes relayed by one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relayed {
    /// Client to upstream.
    pub uplink: u64,
    /// Upstream to client.
    pub downlink: u64,
}

/// Accepts connections on `listener` and relays each to `upstream` (`host:port`) through
/// `link`, until `shutdown` completes. A connection whose upstream cannot be reached is closed
/// with a warning; the proxy goes on.
pub async fn serve(
    listener: TcpListener,
    upstream: String,
    link: Link,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (client, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let (upstream, link) = (upstream.clone(), link.clone());
        tokio::spawn(async move {
            match connect(client, &upstream, &link).await {
                Ok(r) => tracing::debug!(%peer, up = r.uplink, down = r.downlink, "closed"),
                Err(e) => tracing::warn!(%peer, %upstream, error = %e, "proxied connection failed"),
            }
        });
    }
}

async fn connect(client: TcpStream, upstream: &str, link: &Link) -> std::io::Result<Relayed> {
    let upstream = TcpStream::connect(upstream).await?;
    // The link decides when bytes arrive; Nagle's algorithm would only add its own delay.
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    relay(client, upstream, link).await
}

/// Relays `client` and `upstream` through `link` in both directions until both have ended;
/// an end of stream is passed on (half-close) once the bytes before it are delivered.
pub async fn relay<C, U>(client: C, upstream: U, link: &Link) -> std::io::Result<Relayed>
where
    C: AsyncRead + AsyncWrite + Send,
    U: AsyncRead + AsyncWrite + Send,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (uplink, downlink) = tokio::try_join!(
        pump(client_read, upstream_write, link, Direction::Uplink),
        pump(upstream_read, client_write, link, Direction::Downlink),
    )?;
    Ok(Relayed { uplink, downlink })
}

/// One direction: reads chunks, hands each to the link at once, writes them in order as they
/// arrive; returns the bytes written.
async fn pump<R, W>(reader: R, writer: W, link: &Link, dir: Direction) -> std::io::Result<u64>
where
    R: AsyncRead + Send,
    W: AsyncWrite + Send,
{
    let (tx, mut rx) = mpsc::channel::<(Bytes, Sent)>(WINDOW);
    let read = async move {
        let mut reader = std::pin::pin!(reader);
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            if reader.read_buf(&mut buf).await? == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let sent = link.send(dir, buf.len());
            if tx.send((buf.freeze(), sent)).await.is_err() {
                // The writer failed; its error is the one reported.
                return Ok(());
            }
        }
    };
    let write = async move {
        let mut writer = std::pin::pin!(writer);
        let mut written = 0u64;
        while let Some((chunk, mut sent)) = rx.recv().await {
            while let Err(lost) = sent.arrival().await {
                tracing::trace!(%lost, "chunk lost: sent again after the RTO");
                timer::sleep_until(link.timer(), tokio::time::Instant::now() + RTO).await;
                sent = link.send(dir, chunk.len());
            }
            writer.write_all(&chunk).await?;
            written += chunk.len() as u64;
        }
        writer.shutdown().await?;
        Ok::<_, std::io::Error>(written)
    };
    let ((), written) = tokio::try_join!(read, write)?;
    Ok(written)
}
