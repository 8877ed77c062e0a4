//! Fuzz targets for every decoder of untrusted input, and the small deterministic mutation
//! driver that runs them in the test suite.
//!
//! A target takes arbitrary bytes and must return: no panic, no hang, no allocation beyond a
//! fixed bound, whatever the bytes say. The same functions run in two places:
//! * `tests/fuzz.rs`: a few seconds each, fixed seed, stable Rust (part of the test command);
//! * `fuzz/` (cargo-fuzz, libFuzzer, nightly): long coverage-guided runs, see
//!   `docs/operations.md`.
//!
//! Not a stable API.

/// A deterministic mutator: xorshift64* seeded by the caller, so a failing input is reproduced
/// by its seed and iteration number.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    /// A mutator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Mutator {
        Mutator { state: seed | 1 }
    }

    /// The next pseudo-random word.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Mutates `buf` in place with 1..=4 of: bit flips, byte sets to boundary values, 8-byte
    /// little-endian boundary integers (lengths, offsets, counts), truncation, duplication of a
    /// span, insertion of random bytes. Lengths stay below `max_len`.
    pub fn mutate(&mut self, buf: &mut Vec<u8>, max_len: usize) {
        const WORDS: [u64; 8] = [
            0,
            1,
            0x7f,
            0xffff_ffff,
            0x8000_0000,
            u64::MAX,
            i64::MAX as u64,
            40 << 30,
        ];
        for _ in 0..1 + self.below(4) {
            let len = buf.len();
            match self.below(7) {
                0 if len > 0 => {
                    let i = self.below(len);
                    buf[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    buf[i] = [0u8, 0xff, 0x7f, 0x80, 1][self.below(5)];
                }
                2 if len >= 8 => {
                    let i = self.below(len - 7);
                    let w = WORDS[self.below(WORDS.len())];
                    let n = [1usize, 2, 4, 8][self.below(4)];
                    buf[i..i + n].copy_from_slice(&w.to_le_bytes()[..n]);
                }
                3 if len > 0 => buf.truncate(self.below(len)),
                4 if len > 1 && len < max_len => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(64)).min(len);
                    let at = self.below(len);
                    let span: Vec<u8> = buf[a..b].to_vec();
                    let room = max_len - len;
                    buf.splice(at..at, span.into_iter().take(room));
                }
                _ if len < max_len => {
                    let at = self.below(len + 1);
                    let n = (1 + self.below(16)).min(max_len - len);
                    let bytes: Vec<u8> = (0..n).map(|_| self.next_u64() as u8).collect();
                    buf.splice(at..at, bytes);
                }
                _ => {}
            }
        }
    }
}

/// Runs `target` on every seed input and then on mutations of them until `budget` has passed
/// or `max_iters` inputs were tried. Returns the number of inputs run. A panic in the target
/// propagates with the seed and iteration in the message of the panic hook's output (printed
/// before it), so it can be reproduced.
pub fn drive(
    name: &str,
    seeds: &[Vec<u8>],
    seed: u64,
    budget: std::time::Duration,
    max_iters: u64,
    max_len: usize,
    mut target: impl FnMut(&[u8]),
) -> u64 {
    let start = std::time::Instant::now();
    let mut m = Mutator::new(seed);
    for s in seeds {
        target(s);
    }
    let mut n = seeds.len() as u64;
    if seeds.is_empty() {
        return n;
    }
    let mut buf = Vec::new();
    while n < max_iters && start.elapsed() < budget {
        buf.clear();
        buf.extend_from_slice(&seeds[m.below(seeds.len())]);
        // Stack a few rounds so mutations compound.
        for _ in 0..1 + m.below(3) {
            m.mutate(&mut buf, max_len);
        }
        if std::env::var_os("CIDCACHE_FUZZ_TRACE").is_some() {
            eprintln!("{name}: seed {seed} input {n}: {} bytes", buf.len());
        }
        target(&buf);
        n += 1;
    }
    n
}

/// Native protocol: a frame (16-byte header, then body) decoded as a request and as a
/// response, as the coordinator and the client would.
pub fn native_frame(data: &[u8]) {
    use crate::proto::{Header, Request, Response, HEADER_LEN};
    if data.len() < HEADER_LEN {
        return;
    }
    let (h, body) = data.split_at(HEADER_LEN);
    let Ok(h) = Header::parse(h.try_into().expect("16 bytes")) else {
        return;
    };
    let _ = Request::decode(h.msg_type, body);
    let _ = Response::decode(h.msg_type, body);
}

/// Plasma protocol: a frame (24-byte header, then a FlatBuffers body) decoded as a request, a
/// reply and a notification.
pub fn plasma_message(data: &[u8]) {
    use crate::plasma::codec::{self, HEADER_LEN};
    if data.len() < HEADER_LEN {
        return;
    }
    let (h, body) = data.split_at(HEADER_LEN);
    // As the server reads it: the bound depends on the message type the header declares.
    let Ok(h) = codec::decode_request_header(h.try_into().expect("24 bytes"), 1 << 20) else {
        return;
    };
    let _ = codec::decode_request(h.msg_type, body);
    let _ = codec::decode_reply(h.msg_type, body);
    let _ = codec::decode_notification(body);
    let _ = codec::decode_create_reply_ipc_handle(body);
}
