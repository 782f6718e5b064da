use std::time::{Duration, Instant};

use super::*;

fn example(i: u32) -> HardExample {
    HardExample {
        id: format!("req-{i}"),
        unix_ms: 1_700_000_000_000 + u64::from(i),
        reason: "LOW_CONFIDENCE".into(),
        edge_model: "edge-mlp@1".into(),
        cloud_model: "cloud-cnn@1".into(),
        input_shape: vec![1, 28, 28],
        input: (0..784)
            .map(|k| ((k + i as usize) % 256) as f32 / 255.0)
            .collect(),
        edge_probabilities: vec![0.1; 10],
        cloud_class: i % 10,
        cloud_label: (i % 10).to_string(),
        cloud_probabilities: vec![0.05; 10],
    }
}

/// Waits (bounded) until the writer has handled `n` records.
fn wait_handled(store: &HardExampleStore, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = store.stats();
        let handled = s.recorded.load(Ordering::Relaxed) + s.write_errors.load(Ordering::Relaxed);
        if handled >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the writer handled {handled} of {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded) until the segments hold `n` readable records.
fn wait_readable(dir: &Path, n: usize) -> ReadReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = read_dir(dir).unwrap();
        if r.records.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} records readable",
            r.records.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_record_round_trips_and_every_truncation_is_an_error() {
    let e = example(3);
    let bytes = e.encode();
    assert_eq!(HardExample::decode(&bytes).unwrap(), e);
    for cut in 0..bytes.len() {
        assert!(HardExample::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(HardExample::decode(&longer), Err(DecodeError::Trailing(1)));
    let mut other = bytes;
    other[0] = 9;
    assert_eq!(HardExample::decode(&other), Err(DecodeError::Version(9)));
}

#[test]
fn decoding_arbitrary_bytes_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let good = example(1).encode();
    for _ in 0..2000 {
        let mut b = good.clone();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
        }
        let _ = HardExample::decode(&b);
    }
}

#[test]
fn records_written_are_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = HardExampleStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    for i in 0..50 {
        store.offer(example(i));
    }
    wait_handled(&store, 50);
    let r = wait_readable(dir.path(), 50);
    assert_eq!(r.records, (0..50).map(example).collect::<Vec<_>>());
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(store.stats().recorded.load(Ordering::Relaxed), 50);
    assert_eq!(store.stats().dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_torn_tail_and_a_corrupt_record_are_skipped_and_said() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = HardExampleStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        for i in 0..10 {
            store.offer(example(i));
        }
        wait_handled(&store, 10);
        wait_readable(dir.path(), 10);
    }
    let (_, seg) = list_segments(dir.path()).unwrap().remove(0);
    let full = std::fs::read(&seg).unwrap();
    // A crash mid-write: the last record is cut short.
    std::fs::write(&seg, &full[..full.len() - 100]).unwrap();
    let r = read_dir(dir.path()).unwrap();
    assert_eq!(r.records.len(), 9);
    assert_eq!(r.skipped.len(), 1);
    assert!(r.skipped[0].why.contains("torn"), "{:?}", r.skipped);
    // A flipped byte inside the fifth record's payload.
    let mut bad = full.clone();
    let record = (full.len() - HEADER_LEN as usize) / 10;
    bad[HEADER_LEN as usize + 4 * record + 100] ^= 0xff;
    std::fs::write(&seg, &bad).unwrap();
    let r = read_dir(dir.path()).unwrap();
    assert_eq!(r.records.len(), 4);
    assert!(r.skipped[0].why.contains("checksum"), "{:?}", r.skipped);
    assert_eq!(r.skipped[0].offset, HEADER_LEN + 4 * record as u64);
    // A file that only has a segment's name.
    std::fs::write(dir.path().join(segment_name(7)), b"nonsense").unwrap();
    std::fs::write(dir.path().join(segment_name(8)), b"EI").unwrap();
    let r = read_dir(dir.path()).unwrap();
    assert_eq!(r.segments, 3);
    let whys: Vec<&str> = r.skipped.iter().map(|s| s.why.as_str()).collect();
    assert!(whys.iter().any(|w| w.contains("bad magic")), "{whys:?}");
    assert!(whys.iter().any(|w| w.contains("header")), "{whys:?}");

    // A restarted writer starts a new segment after the damaged ones and never appends to them.
    let store = HardExampleStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    store.offer(example(99));
    wait_handled(&store, 1);
    let r = wait_readable(dir.path(), 5);
    assert_eq!(r.records.last(), Some(&example(99)));
    assert_eq!(r.segments, 4);
}

#[test]
fn the_store_stays_within_its_size_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = HardExampleStore::open(dir.path(), MIN_MAX_BYTES).unwrap();
    let record = frame(&example(0).encode()).len() as u64;
    let n = 200u32;
    for i in 0..n {
        store.offer(example(i));
        // Paced so that none is dropped: this test is about the size bound.
        wait_handled(&store, u64::from(i) + 1);
    }
    let on_disk: u64 = list_segments(dir.path())
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    let segment = MIN_MAX_BYTES / 8;
    assert!(
        on_disk <= MIN_MAX_BYTES + segment + record,
        "{on_disk} bytes on disk for a {MIN_MAX_BYTES}-byte store"
    );
    assert!(on_disk >= MIN_MAX_BYTES / 2, "{on_disk}");
    assert_eq!(store.stats().bytes.load(Ordering::Relaxed), on_disk);
    let r = read_dir(dir.path()).unwrap();
    assert!(r.records.len() < n as usize);
    assert_eq!(r.records.last(), Some(&example(n - 1)));
    // The newest, contiguous: the oldest were forgotten, none in between.
    let first = n as usize - r.records.len();
    assert_eq!(r.records[0], example(first as u32));
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = HardExampleStore::open_with_queue(dir.path(), DEFAULT_MAX_BYTES, 1).unwrap();
    let started = Instant::now();
    for i in 0..2000 {
        store.offer(example(i));
    }
    // Offering never waits for the disk: 2,000 offers are far quicker than 2,000 writes.
    let offered_in = started.elapsed();
    let s = store.stats();
    let dropped = s.dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "a queue of one dropped nothing");
    wait_handled(&store, 2000 - dropped);
    assert_eq!(s.recorded.load(Ordering::Relaxed) + dropped, 2000);
    assert!(offered_in < Duration::from_secs(2), "{offered_in:?}");
}

#[test]
fn a_store_below_the_minimum_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = HardExampleStore::open(dir.path(), 1000).unwrap_err();
    assert!(e.to_string().contains("below the smallest"), "{e}");
}

#[test]
fn any_bytes_in_a_segment_read_as_records_or_a_skip_never_a_panic() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let good = frame(&example(1).encode());
    for round in 0..300 {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&good);
        let tail: usize = rng.random_range(0..64);
        if round % 2 == 0 {
            // A damaged copy of a good record.
            let mut bad = good.clone();
            let i = rng.random_range(0..bad.len());
            bad[i] = rng.random();
            bytes.extend_from_slice(&bad[..rng.random_range(0..bad.len())]);
        } else {
            bytes.extend((0..tail).map(|_| rng.random::<u8>()));
        }
        std::fs::write(dir.path().join(segment_name(0)), &bytes).unwrap();
        let r = read_dir(dir.path()).unwrap();
        assert!(
            !r.records.is_empty(),
            "the good record before the damage is read"
        );
        assert!(r.records.len() <= 2);
    }
    // A length field far past the limit is corruption, not an allocation.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(dir.path().join(segment_name(0)), &bytes).unwrap();
    let r = read_dir(dir.path()).unwrap();
    assert!(r.skipped[0].why.contains("over the"), "{:?}", r.skipped);
}
