//! The TCP proxy: bytes through it come out whole and in order, as late as the link says
//! (in-memory pipes on the paused clock, so the times are exact), a lost chunk stalls the
//! stream for a retransmission timeout, a saturating sender gets a replayed trace's mean rate
//! in each direction, and real TCP (an echo, and a gRPC call through `lte`) works through it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use edgeinfer_linksim::live::{echo, spawn_echo};
use edgeinfer_linksim::proxy::{self, RTO, relay};
use edgeinfer_linksim::{
    DelayProfile, DirectionProfile, Link, LinkProfile, LinkTimer, LossProfile, Trace,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

fn both(up: DirectionProfile, down: DirectionProfile) -> LinkProfile {
    LinkProfile {
        name: "test".into(),
        description: String::new(),
        uplink: up,
        downlink: down,
        handover: None,
    }
}

fn delayed(ms: f64) -> DirectionProfile {
    DirectionProfile {
        delay: DelayProfile {
            base_ms: ms,
            ..DelayProfile::default()
        },
        ..DirectionProfile::unlimited()
    }
}

/// A client pipe and a server pipe joined by `relay` over `link`.
fn piped(link: &Link) -> (DuplexStream, DuplexStream) {
    let (client, proxy_client_side) = tokio::io::duplex(1 << 16);
    let (proxy_upstream_side, server) = tokio::io::duplex(1 << 16);
    let link = link.clone();
    tokio::spawn(async move { relay(proxy_client_side, proxy_upstream_side, &link).await });
    (client, server)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn each_direction_pays_its_delay() {
    let link = Link::new(both(delayed(10.0), delayed(30.0)), 1);
    let (mut client, mut server) = piped(&link);
    let start = Instant::now();
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    server.write_all(b"world").await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"world");
    assert_eq!(start.elapsed(), Duration::from_millis(40));
}

/// 1 MB each way at 8 Mbit/s: whole, in order, in 1 s of serialization each, concurrently;
/// the end of stream is passed on.
#[tokio::test(start_paused = true)]
async fn bulk_data_crosses_whole_at_the_bandwidth() {
    let rate = DirectionProfile::with_bandwidth(8.0);
    let link = Link::new(both(rate.clone(), rate), 1);
    let (client, server) = piped(&link);
    let (up, down) = (pattern(1_000_000, 1), pattern(1_000_000, 2));
    let start = Instant::now();
    let talk = |mut io: DuplexStream, out: Vec<u8>| async move {
        let (mut r, mut w) = tokio::io::split(&mut io);
        let send = async {
            w.write_all(&out).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let recv = async { r.read_to_end(&mut got).await.unwrap() };
        tokio::join!(send, recv);
        (got, start.elapsed())
    };
    let ((at_client, t_client), (at_server, t_server)) =
        tokio::join!(talk(client, up.clone()), talk(server, down.clone()));
    assert_eq!(at_server, up);
    assert_eq!(at_client, down);
    // Each direction serializes 1 MB at 8 Mbit/s: 1 s, whatever the chunking.
    for t in [t_client, t_server] {
        assert!(
            t >= Duration::from_secs(1) && t <= Duration::from_millis(1002),
            "{t:?}"
        );
    }
}

/// Every other chunk is lost once: the stream stalls an RTO for each, but nothing is missing.
#[tokio::test(start_paused = true)]
async fn lost_chunks_stall_then_arrive() {
    let mut up = delayed(5.0);
    up.loss = LossProfile {
        loss_good: 0.5,
        ..LossProfile::default()
    };
    let link = Link::new(both(up, delayed(5.0)), 4);
    let (mut client, mut server) = piped(&link);
    let data = pattern(proxy::CHUNK * 3, 3);
    let start = Instant::now();
    let mut got = vec![0u8; data.len()];
    for piece in data.chunks(proxy::CHUNK) {
        client.write_all(piece).await.unwrap();
    }
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, data);
    let stats = link.stats();
    assert!(stats.uplink.lost > 0, "seed 4 loses some: {stats:?}");
    assert!(start.elapsed() >= RTO * stats.uplink.lost as u32 / 3);
    assert!(start.elapsed() >= RTO + Duration::from_millis(5));
}

/// A saturating sender in each direction through the shipped synthetic LTE traces (Mahimahi
/// format) gets each trace's mean rate, over one whole period of 20 s.
#[tokio::test(start_paused = true)]
async fn saturating_senders_get_the_traces_mean_rates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces");
    let (up_path, down_path) = (dir.join("synthetic-lte.up"), dir.join("synthetic-lte.down"));
    let (up_trace, down_trace) = (
        Trace::load(&up_path).unwrap(),
        Trace::load(&down_path).unwrap(),
    );
    let traced = |path| DirectionProfile {
        trace: Some(path),
        ..DirectionProfile::default()
    };
    let link = Link::new(both(traced(up_path), traced(down_path)), 1);
    let (client, server) = piped(&link);
    // What each trace carries in one period: the sender keeps the link busy all of it.
    let bytes = |t: &Trace| t.len() * edgeinfer_linksim::trace::PACKET_BYTES;
    let (up, down) = (pattern(bytes(&up_trace), 4), pattern(bytes(&down_trace), 5));
    let start = Instant::now();
    let talk = |mut io: DuplexStream, out: Vec<u8>, expect: usize| async move {
        let (mut r, mut w) = tokio::io::split(&mut io);
        let send = async { w.write_all(&out).await.unwrap() };
        let mut got = vec![0u8; expect];
        let recv = async {
            r.read_exact(&mut got).await.unwrap();
            start.elapsed()
        };
        let ((), t) = tokio::join!(send, recv);
        t
    };
    let (t_down, t_up) = tokio::join!(
        talk(client, up.clone(), down.len()),
        talk(server, down.clone(), up.len())
    );
    for (name, t, n, trace) in [
        ("uplink", t_up, up.len(), &up_trace),
        ("downlink", t_down, down.len(), &down_trace),
    ] {
        let mbps = n as f64 * 8.0 / t.as_secs_f64() / 1e6;
        let mean = trace.mean_rate_mbps();
        assert!(
            (mbps - mean).abs() / mean <= 0.05,
            "{name}: {mbps:.2} Mbit/s against the trace's {mean:.2}"
        );
    }
}

/// Real TCP: an echo server behind the proxy gets back what was sent.
#[tokio::test]
async fn tcp_echo_through_the_proxy() {
    let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo_listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = echo_listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    let link = Link::new(both(delayed(2.0), delayed(2.0)), 1).with_timer(LinkTimer::Precise);
    let (addr, _stop) = start_proxy(echo_addr.to_string(), link).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let data = pattern(300_000, 6);
    let (mut r, mut w) = conn.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = async { r.read_to_end(&mut got).await.unwrap() };
    tokio::join!(send, recv);
    assert_eq!(got, data);
}

/// A gRPC call (what grpcurl makes) through the proxy on `lte` pays lte's delay: its median is
/// at least the two base delays, which the loopback alone is far below.
#[tokio::test]
async fn grpc_through_the_proxy_shows_lte() {
    let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo_listener.local_addr().unwrap();
    let _echo = spawn_echo(echo_listener);
    let lte = LinkProfile::builtin("lte").unwrap();
    let base =
        Duration::from_secs_f64((lte.uplink.delay.base_ms + lte.downlink.delay.base_ms) / 1e3);
    let link = Link::new(lte, 1).with_timer(LinkTimer::Precise);
    let (addr, _stop) = start_proxy(echo_addr.to_string(), link.clone()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rtts = Vec::new();
    for _ in 0..15 {
        let start = std::time::Instant::now();
        if echo(channel.clone(), Bytes::from_static(&[7; 59]))
            .await
            .is_ok()
        {
            rtts.push(start.elapsed());
        }
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    eprintln!("gRPC echo through `link proxy --profile lte`: median {median:?} of {rtts:?}");
    assert!(
        median >= base,
        "median {median:?} below lte's base {base:?}"
    );
    assert!(link.stats().delivered >= 30, "{:?}", link.stats());
}

/// A proxy on 127.0.0.1 in front of `upstream`; dropping the sender stops it.
async fn start_proxy(
    upstream: String,
    link: Link,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy::serve(listener, upstream, link, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}
